"""Feature shards: a ``ptm-shards`` directory of ``kind: "features"`` (see docs/extract-features.md).

One row per input text, in input order, in Arrow IPC stream files of at most
about 256 MB, with the columns
- ``index`` (int64): the text's 0-based position in the input;
- ``text`` / ``text_b`` (string; ``text_b`` null unless a pair);
- ``tokens`` (``list<string>``): the sub-tokens or words the vectors belong to
  (absent for pooled rows);
- ``features``: per unit ``fixed_size_list<float32>[K * D]`` (layer-major), in a
  ``list`` over the units, so a row reshapes to ``(units, K, D)``; pooled rows
  are one ``fixed_size_list<float32>[K * D]``, reshaping to ``(K, D)``.
``manifest.json`` records K, D, the layer labels and how they were made.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa

from ptmcli import __version__
from ptmcli.data.shard_writer import HashingFile
from ptmcli.textio.atomic import atomic_directory

FORMAT = "ptm-shards"
VERSION = 1
KIND = "features"
SHARD_BYTES = 256 << 20
BATCH_BYTES = 32 << 20
BATCH_ROWS = 1024


def features_schema(pooled: bool, width: int) -> pa.Schema:
    vector = pa.list_(pa.float32(), width)
    fields = [pa.field("index", pa.int64()), pa.field("text", pa.string()), pa.field("text_b", pa.string())]
    if pooled:
        fields.append(pa.field("features", vector))
    else:
        fields += [pa.field("tokens", pa.list_(pa.string())), pa.field("features", pa.list_(vector))]
    return pa.schema(fields)


class ArrowWriter:
    def __init__(self, output: str, layout, *, overwrite: bool = False, source: str = "", **_options) -> None:
        self.layout = layout
        self.pooled = layout.granularity == "text"
        self.width = layout.num_layers * layout.dim
        self.schema = features_schema(self.pooled, self.width)
        self.source = source
        self._context = atomic_directory(output, overwrite=overwrite)
        self.directory = self._context.__enter__()
        self.shards: list[dict] = []
        self.rows = self.units = 0
        self._pending: list = []
        self._pending_bytes = 0
        self._file = None
        self._stream = None
        self._shard_rows = self._shard_units = 0
        self._closed = False

    def write(self, row) -> None:
        self._pending.append(row)
        self._pending_bytes += row.values.nbytes
        if len(self._pending) >= BATCH_ROWS or self._pending_bytes >= BATCH_BYTES:
            self._flush()

    def _record_batch(self, rows) -> tuple[pa.RecordBatch, int]:
        columns = [pa.array([r.index for r in rows], pa.int64()), pa.array([r.record.text_a for r in rows], pa.string()),
                   pa.array([r.record.text_b for r in rows], pa.string())]
        if self.pooled:
            flat = np.concatenate([r.values.reshape(-1) for r in rows]).astype(np.float32, copy=False)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), self.width))
            units = len(rows)
        else:
            counts = np.array([r.values.shape[1] for r in rows], dtype=np.int64)
            offsets = np.zeros(len(rows) + 1, dtype=np.int32)
            np.cumsum(counts, out=offsets[1:])
            # [K, n, D] -> [n, K, D]: each unit's layers side by side.
            flat = np.concatenate([r.values.transpose(1, 0, 2).reshape(-1) for r in rows] or [np.zeros(0, np.float32)])
            vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(np.float32, copy=False)), self.width)
            columns.append(pa.array([r.units for r in rows], pa.list_(pa.string())))
            columns.append(pa.ListArray.from_arrays(pa.array(offsets), vectors))
            units = int(counts.sum())
        return pa.RecordBatch.from_arrays(columns, schema=self.schema), units

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, units = self._record_batch(self._pending)
        self._pending, self._pending_bytes = [], 0
        size = pa.ipc.get_record_batch_size(batch) + 8
        if self._stream is not None and self._file.size + size > SHARD_BYTES:
            self._close_shard()
        if self._stream is None:
            name = f"part-{len(self.shards):05d}.arrow"
            self._file = HashingFile(os.path.join(self.directory, name))
            self._stream = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), self.schema)
            self.shards.append({"file": name})
        self._stream.write_batch(batch)
        self._shard_rows += batch.num_rows
        self._shard_units += units

    def _close_shard(self) -> None:
        self._stream.close()
        self._file.close()
        self.shards[-1].update(rows=self._shard_rows, tokens=self._shard_units, bytes=self._file.size,
                               sha256=self._file.sha256.hexdigest())
        self.rows += self._shard_rows
        self.units += self._shard_units
        self._stream = self._file = None
        self._shard_rows = self._shard_units = 0

    def manifest(self) -> dict:
        layout = self.layout
        shape = ["tokens", layout.num_layers, layout.dim] if not self.pooled else [layout.num_layers, layout.dim]
        return {"format": FORMAT, "version": VERSION, "kind": KIND, "shards": self.shards, "rows": self.rows,
                "tokens": self.units, "source": [self.source], "created_by": f"ptm {__version__}",
                "features": {**layout.describe(), "num_layers": layout.num_layers, "row_shape": shape,
                             "columns": [f.name for f in self.schema]}}

    def finish(self) -> None:
        self._flush()
        if self._stream is None and not self.shards:
            # No input rows: still one (empty) shard, so readers find the schema.
            self._file = HashingFile(os.path.join(self.directory, "part-00000.arrow"))
            self._stream = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), self.schema)
            self.shards.append({"file": "part-00000.arrow"})
        if self._stream is not None:
            self._close_shard()
        with open(os.path.join(self.directory, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump(self.manifest(), handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        self._closed = True
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._stream is not None:
                self._stream.close()
            if self._file is not None:
                self._file.close()
        finally:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
