"""Reading feature shards (``kind: "features"``, as :mod:`ptmcli.features.arrow_writer` writes them).

The shard files are memory-mapped and their record batches kept as zero-copy
numpy views, so opening a directory costs a pass over batch headers, not its
size in RAM: a row is read from the page cache when it is used, and the OS
drops pages it needs back. A global row index maps to (batch, row in batch)
by a binary search over cumulative row counts. Rows are read-only views: copy
them before changing them (collating a batch does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ptmcli.errors import PtmError
from ptmcli.features.arrow_writer import FORMAT, KIND, VERSION, features_schema

MANIFEST = "manifest.json"


class _Batch:
    """Numpy views of one record batch: its vectors and, per row, where they start."""

    __slots__ = ("vectors", "offsets", "batch")

    def __init__(self, batch: pa.RecordBatch, pooled: bool, width: int) -> None:
        self.batch = batch
        column = batch.column("features")
        if pooled:
            self.vectors = column.flatten().to_numpy(zero_copy_only=True).reshape(-1, width)
            self.offsets = None
        else:
            self.offsets = column.offsets.to_numpy()
            self.vectors = column.values.flatten().to_numpy(zero_copy_only=True).reshape(-1, width)


class FeatureShards:
    """Random access to the rows of a feature shard directory.

    ``name`` is how messages name the directory (for example ``--train-features runs/f``).
    """

    def __init__(self, directory: Path, manifest: dict, batches: list[pa.RecordBatch], name: str) -> None:
        self.directory = directory
        self.name = name
        self.manifest = manifest
        self.features: dict = manifest["features"]
        self.granularity: str = self.features["granularity"]
        self.num_layers: int = int(self.features["num_layers"])
        self.dim: int = int(self.features["dim"])
        self.pooled = self.granularity == "text"
        width = self.num_layers * self.dim
        self._batches = [_Batch(b, self.pooled, width) for b in batches]
        self._ends = np.cumsum([b.num_rows for b in batches], dtype=np.int64)
        self.num_rows = int(self._ends[-1]) if len(self._ends) else 0

    @classmethod
    def open(cls, path: str | os.PathLike, name: str | None = None) -> FeatureShards:
        directory = Path(path)
        name = name or str(directory)
        if not directory.exists():
            raise PtmError(f"{name}: no such directory")
        if not directory.is_dir():
            raise PtmError(f"{name}: is a file; feature shards are a directory (ptm extract-features ... -o DIR)")
        manifest_file = directory / MANIFEST
        if not manifest_file.is_file():
            raise PtmError(f"{name}: has no {MANIFEST}; is it a directory ptm extract-features wrote?")
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise PtmError(f"{manifest_file}: not valid JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise PtmError(f"{manifest_file}: not a {FORMAT} version {VERSION} manifest")
        if manifest.get("kind") != KIND:
            raise PtmError(f"{name}: holds {manifest.get('kind')!r} shards, not features (write them with ptm extract-features ... -o DIR)")
        features = manifest.get("features")
        if not isinstance(features, dict) or not {"granularity", "num_layers", "dim"} <= set(features):
            raise PtmError(f"{manifest_file}: the 'features' entry lacks granularity, num_layers or dim")
        pooled = features["granularity"] == "text"
        schema = features_schema(pooled, int(features["num_layers"]) * int(features["dim"]))
        batches: list[pa.RecordBatch] = []
        for entry in manifest.get("shards") or []:
            file = directory / str(entry.get("file"))
            if not file.is_file():
                raise PtmError(f"{file}: shard file listed in {MANIFEST} is missing")
            if "bytes" in entry and file.stat().st_size != entry["bytes"]:
                raise PtmError(f"{file}: has {file.stat().st_size} bytes, {MANIFEST} says {entry['bytes']} (truncated or replaced?)")
            try:
                reader = pa.ipc.open_stream(pa.memory_map(str(file), "r"))
                shard = list(reader)
            except (pa.ArrowInvalid, OSError) as err:
                raise PtmError(f"{file}: not a readable Arrow IPC stream: {err}") from None
            if not reader.schema.equals(schema):
                raise PtmError(f"{file}: the columns do not match the {MANIFEST} (granularity {features['granularity']}, "
                               f"{features['num_layers']} x {features['dim']} floats per vector)")
            batches.extend(shard)
        shards = cls(directory, manifest, batches, name)
        if shards.num_rows != manifest.get("rows"):
            raise PtmError(f"{manifest_file}: says {manifest.get('rows')} rows, the shards hold {shards.num_rows}")
        shards._check_order()
        return shards

    def _check_order(self) -> None:
        start = 0
        for batch in self._batches:
            index = batch.batch.column("index").to_numpy()
            if not np.array_equal(index, np.arange(start, start + len(index))):
                bad = start + int(np.argmax(index != np.arange(start, start + len(index))))
                raise PtmError(f"{self.name}: row {bad} holds input index {int(index[bad - start])}; rows must be in input order")
            start += len(index)

    def __len__(self) -> int:
        return self.num_rows

    def _locate(self, index: int) -> tuple[_Batch, int]:
        i = int(index)
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {index} is out of range for {self.num_rows} rows")
        b = int(np.searchsorted(self._ends, i, side="right"))
        return self._batches[b], i - (int(self._ends[b - 1]) if b else 0)

    def vectors(self, index: int) -> np.ndarray:
        """Row ``index``: float32 ``[K, D]`` (pooled) or ``[units, K, D]``, a read-only view."""
        batch, j = self._locate(index)
        if batch.offsets is None:
            return batch.vectors[j].reshape(self.num_layers, self.dim)
        rows = batch.vectors[batch.offsets[j] : batch.offsets[j + 1]]
        return rows.reshape(-1, self.num_layers, self.dim)

    def iter_texts(self):
        """(row, text, text_b) of every row, in order; reads only the text columns."""
        row = 0
        for batch in self._batches:
            for text, text_b in zip(batch.batch.column("text").to_pylist(), batch.batch.column("text_b").to_pylist()):
                yield row, text, text_b
                row += 1
