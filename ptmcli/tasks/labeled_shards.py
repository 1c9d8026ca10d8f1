"""Encoded labeled data in ``kind: "labeled"`` Arrow shards, cached by content hash.

``prepare_labeled`` reads a labeled file, encodes it for a task and input
style, and writes the rows to a shard directory under the ptm cache
(``$PTM_CACHE/labeled/<key>``), where the key is the sha256 of everything the
rows depend on: the file's bytes, the tokenizer's sha256, the task, the style,
``max_len``, the column choices and the label list. A second call with the same
inputs opens the cached shards without reading the file through the tokenizer.
The directory is written atomically, so a crash never leaves a half-written
entry, and processes that build the same entry at once end with the same bytes.

Columns of a shard (one row per example; see ``ptmcli.tasks.encode``):
``input_ids`` list<int32> (multiple choice: list<list<int32>>, one list per
choice), ``token_type_ids`` list<int8> (likewise), ``labels`` int64 / float32
/ list<int32> (token tags), ``word_index`` list<int32> (token classification),
``line`` int64.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ptmcli import __version__
from ptmcli.data.shard_writer import FORMAT, VERSION, HashingFile
from ptmcli.data.shards import MANIFEST, file_sha256
from ptmcli.errors import PtmError
from ptmcli.tasks import TASKS
from ptmcli.tasks.encode import EncodeReport, encode_examples, style_tokens
from ptmcli.tasks.labels import build_label_list, check_label_list, has_label_list
from ptmcli.tasks.lines import STDIN, content_sha256, read_bytes
from ptmcli.tasks.readers import read_labeled

KIND = "labeled"
# Bump when the rows written for the same inputs change, so old cache entries are not reused.
ENCODING_VERSION = 1
SHARD_SIZE_BYTES = 256 << 20
BATCH_ROWS = 2048
_NESTED = ("input_ids", "token_type_ids")


def cache_directory() -> Path:
    """Where prepared labeled data is cached: ``<ptm cache>/labeled``."""
    from ptmcli.runtime.cache import cache_root

    return cache_root() / "labeled"


def cache_key(file_sha256: str, tokenizer_sha256: str, task: str, style: str, max_len: int, options: dict) -> str:
    """sha256 of everything the encoded rows depend on."""
    described = json.dumps({"encoding": ENCODING_VERSION, "file": file_sha256,
                            "tokenizer": tokenizer_sha256, "task": task, "style": style, "max_len": max_len,
                            **options}, sort_keys=True)
    return hashlib.sha256(described.encode("utf-8")).hexdigest()


def prepare_labeled(path: str, tokenizer, task: str, style: str, max_len: int, labels: Sequence[str] | None = None,
                    text_columns: Sequence[str] | None = None, label_column: str | None = None,
                    choice_columns: Sequence[str] | None = None, fmt: str = "auto", conll_label_index: int = -1,
                    require_labels: bool = True, cache: bool = True,
                    cache_dir: str | os.PathLike | None = None) -> LabeledShards:
    """Encoded rows of the labeled file ``path``, from the cache when it holds them.

    ``labels`` is the label list to use (from the training file's shards, or
    from a checkpoint); ``None`` takes it from this file (training data). A
    label of this file outside a given list is a PtmError naming it and its line.
    ``cache=False`` encodes into memory and writes nothing.
    """
    if task not in TASKS:
        raise PtmError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if max_len < 1:
        raise PtmError(f"max length must be at least 1, got {max_len}")
    style_tokens(tokenizer, style)  # fail on a tokenizer without the style's tokens before reading anything
    given = None if labels is None else check_label_list(labels, task)
    # Only stdin is held in memory (it can be read once); a file is hashed in chunks and then streamed.
    data = read_bytes(path) if path == STDIN else None
    options = {"labels": given, "text_columns": None if text_columns is None else list(text_columns),
               "label_column": label_column, "choice_columns": None if choice_columns is None else list(choice_columns),
               "fmt": fmt, "conll_label_index": conll_label_index, "require_labels": require_labels}
    source_sha256 = content_sha256(path, data)
    key = cache_key(source_sha256, tokenizer.sha256, task, style, max_len, options)
    target = Path(cache_dir) / key if cache_dir is not None else cache_directory() / key
    if cache and (target / MANIFEST).is_file():
        try:
            shards = LabeledShards.open(target)
            shards.from_cache = True
            return shards
        except PtmError:
            pass  # a damaged entry is rebuilt below
    name = "<stdin>" if path == STDIN else str(path)
    found = read_labeled(path, task, text_columns=text_columns, label_column=label_column,
                         choice_columns=choice_columns, fmt=fmt, conll_label_index=conll_label_index,
                         require_labels=require_labels, data=data)
    if given is None:
        given = build_label_list(found.examples, task)
        if has_label_list(task) and not given:
            raise PtmError(f"{name}: the file has no labels to build the label list from; give the labels of "
                           "the training data")
    report = EncodeReport()
    rows = encode_examples(found.examples, tokenizer, task, style, max_len, given, source=name, report=report)
    tokens = style_tokens(tokenizer, style)
    manifest = {
        "format": FORMAT, "version": VERSION, "kind": KIND, "task": task, "labels": list(given),
        "input_style": style, "max_len": max_len,
        "special_ids": {"start": tokens.start, "delimiter": tokens.delimiter, "end": tokens.end, "pad": tokens.pad,
                        **({"delimiter_repeats": tokens.delimiter_repeats} if tokens.delimiter_repeats > 1 else {})},
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "source": [os.path.abspath(path) if path != STDIN else name], "source_format": found.format,
        "source_sha256": source_sha256, "columns": found.columns(),
        "has_labels": found.has_labels, "truncated": report.truncated, "empty_words": report.empty_words,
        "cache_key": key, "created_by": f"ptm {__version__}",
    }
    if cache:
        try:
            return write_labeled_shards(target, rows, manifest)
        except OSError as err:
            print(f"ptm: cannot write the labeled-data cache {target} ({err.strerror}); keeping the encoded rows "
                  "in memory (set PTM_CACHE to a writable directory)", file=sys.stderr)
    batches = [_record_batch(rows[i : i + BATCH_ROWS], task) for i in range(0, len(rows), BATCH_ROWS)]
    manifest.update(rows=len(rows), tokens=report.tokens, shards=[])
    return LabeledShards(None, manifest, batches)


# -- writing ----------------------------------------------------------------------------------


def _schema(task: str) -> pa.Schema:
    ids, types = pa.list_(pa.int32()), pa.list_(pa.int8())
    if task == "multiple-choice":
        ids, types = pa.list_(ids), pa.list_(types)
    label = {"regression": pa.float32(), "token-classification": pa.list_(pa.int32())}.get(task, pa.int64())
    fields = [pa.field("input_ids", ids), pa.field("token_type_ids", types), pa.field("labels", label)]
    if task == "token-classification":
        fields.append(pa.field("word_index", pa.list_(pa.int32())))
    fields.append(pa.field("line", pa.int64()))
    return pa.schema(fields)


def _list_array(parts: list[np.ndarray], dtype) -> pa.ListArray:
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise PtmError("a labeled record batch exceeds 2**31 values")
    values = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def _record_batch(rows: list[dict[str, np.ndarray]], task: str) -> pa.RecordBatch:
    schema = _schema(task)
    columns = []
    for name in schema.names:
        if task == "multiple-choice" and name in _NESTED:
            # Padded [C, L] rows go back to one unpadded list per choice.
            choices = [row[name][k, : row["lengths"][k]] for row in rows for k in range(len(row["lengths"]))]
            inner = _list_array(choices, np.int32 if name == "input_ids" else np.int8)
            counts = np.zeros(len(rows) + 1, dtype=np.int32)
            np.cumsum([len(row["lengths"]) for row in rows], out=counts[1:])
            columns.append(pa.ListArray.from_arrays(pa.array(counts), inner))
        elif pa.types.is_list(schema.field(name).type):
            value_type = schema.field(name).type.value_type.to_pandas_dtype()
            columns.append(_list_array([row[name] for row in rows], value_type))
        else:
            dtype = schema.field(name).type.to_pandas_dtype()
            columns.append(pa.array(np.array([row[name] for row in rows], dtype=dtype)))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def write_labeled_shards(target: str | os.PathLike, rows: list[dict[str, np.ndarray]], manifest: dict,
                         shard_size_bytes: int = SHARD_SIZE_BYTES) -> LabeledShards:
    """Write ``rows`` and ``manifest`` (without its row counts) to ``target`` atomically; open the result."""
    from ptmcli.textio.atomic import atomic_directory

    task = manifest["task"]
    schema = _schema(task)
    shards: list[dict] = []
    total_tokens = 0
    with atomic_directory(target, overwrite=True) as staging:
        stream = handle = None
        shard_rows = shard_tokens = 0

        def close() -> None:
            nonlocal stream, handle
            if stream is None:
                return
            stream.close()
            handle.close()
            shards[-1].update(rows=shard_rows, tokens=shard_tokens, bytes=handle.size,
                              sha256=handle.sha256.hexdigest())
            stream = handle = None

        for start in range(0, max(len(rows), 1), BATCH_ROWS):
            batch = _record_batch(rows[start : start + BATCH_ROWS], task)
            size = pa.ipc.get_record_batch_size(batch) + 8
            if stream is not None and handle.size + size > shard_size_bytes:
                close()
            if stream is None:
                name = f"part-{len(shards):05d}.arrow"
                handle = HashingFile(os.path.join(staging, name))
                stream = pa.ipc.new_stream(pa.PythonFile(handle, mode="w"), schema)
                shards.append({"file": name})
                shard_rows = shard_tokens = 0
            stream.write_batch(batch)
            tokens = _batch_tokens(batch)
            shard_rows += batch.num_rows
            shard_tokens += tokens
            total_tokens += tokens
        close()
        full = {**manifest, "shards": shards, "rows": len(rows), "tokens": total_tokens}
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as out:
            json.dump(full, out, indent=2, ensure_ascii=False)
            out.write("\n")
    return LabeledShards.open(target)


def _batch_tokens(batch: pa.RecordBatch) -> int:
    ids = batch.column("input_ids")
    if pa.types.is_list(ids.type.value_type):
        ids = ids.flatten()
    return len(ids.flatten())


# -- reading ----------------------------------------------------------------------------------


class _Columns:
    """Numpy views of one record batch."""

    def __init__(self, batch: pa.RecordBatch, pad: int) -> None:
        self.pad = pad
        self.lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.nested: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.scalars: dict[str, np.ndarray] = {}
        for name in batch.schema.names:
            column = batch.column(name)
            if pa.types.is_list(column.type) and pa.types.is_list(column.type.value_type):
                inner = column.values
                self.nested[name] = (column.offsets.to_numpy(), inner.offsets.to_numpy(),
                                     inner.values.to_numpy(zero_copy_only=False))
            elif pa.types.is_list(column.type):
                self.lists[name] = (column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False))
            else:
                self.scalars[name] = column.to_numpy(zero_copy_only=False)

    def row(self, j: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, (offsets, values) in self.lists.items():
            out[name] = values[offsets[j] : offsets[j + 1]]
        for name, (outer, inner, values) in self.nested.items():
            first, last = int(outer[j]), int(outer[j + 1])
            starts, ends = inner[first:last], inner[first + 1 : last + 1]
            lengths = (ends - starts).astype(np.int32)
            grid = np.full((last - first, int(lengths.max(initial=0))), self.pad if name == "input_ids" else 0,
                           dtype=values.dtype)
            for k in range(last - first):
                grid[k, : lengths[k]] = values[starts[k] : ends[k]]
            out[name] = grid
            out["lengths"] = lengths
        for name, values in self.scalars.items():
            out[name] = values[j : j + 1].reshape(())
        return out


class LabeledShards:
    """Random access to encoded labeled rows (a ``kind: "labeled"`` shard directory, or rows in memory)."""

    def __init__(self, path: str | None, manifest: dict, batches: list[pa.RecordBatch]) -> None:
        self.path = path
        self.manifest = manifest
        self.task: str = manifest["task"]
        self.labels: list[str] = list(manifest["labels"])
        self.input_style: str = manifest["input_style"]
        self.max_len: int = int(manifest["max_len"])
        self.pad_id: int = int(manifest["special_ids"]["pad"])
        self.from_cache = False
        self._columns = [_Columns(b, self.pad_id) for b in batches]
        self._ends = np.cumsum([b.num_rows for b in batches], dtype=np.int64)
        self.num_rows = int(self._ends[-1]) if len(self._ends) else 0

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> LabeledShards:
        """Open a labeled shard directory; ``verify`` also checks each shard file's sha256."""
        directory = os.fspath(path)
        manifest = _read_manifest(directory)
        batches: list[pa.RecordBatch] = []
        for entry in manifest["shards"]:
            file = os.path.join(directory, str(entry.get("file")))
            if not os.path.isfile(file):
                raise PtmError(f"{file}: shard file listed in manifest.json is missing")
            if "bytes" in entry and os.path.getsize(file) != entry["bytes"]:
                raise PtmError(f"{file}: shard file has {os.path.getsize(file)} bytes, manifest.json says "
                               f"{entry['bytes']}")
            if verify and file_sha256(file) != entry.get("sha256"):
                raise PtmError(f"{file}: shard file's sha256 does not match manifest.json")
            try:
                reader = pa.ipc.open_stream(pa.memory_map(file, "r"))
                shard = list(reader)
            except (pa.ArrowInvalid, OSError) as err:
                raise PtmError(f"{file}: not a readable Arrow IPC stream: {err}") from None
            if not reader.schema.equals(_schema(manifest["task"])):
                raise PtmError(f"{file}: the columns do not match a {manifest['task']} shard")
            batches.extend(shard)
        rows = sum(b.num_rows for b in batches)
        if rows != manifest["rows"]:
            raise PtmError(f"{os.path.join(directory, MANIFEST)}: says {manifest['rows']} rows, the shards hold {rows}")
        return cls(directory, manifest, batches)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        i = int(index)
        if i < 0:
            i += self.num_rows
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {index} is out of range for {self.num_rows} rows")
        b = int(np.searchsorted(self._ends, i, side="right"))
        return self._columns[b].row(i - (int(self._ends[b - 1]) if b else 0))

    def __iter__(self):
        for i in range(self.num_rows):
            yield self[i]

    def __reduce__(self):
        if self.path is None:
            raise TypeError("labeled rows held in memory cannot be sent to another process; prepare them with "
                            "cache=True")
        return (LabeledShards.open, (self.path,))

    def check_tokenizer(self, tokenizer) -> None:
        """PtmError if ``tokenizer`` is not the one the rows were encoded with."""
        if tokenizer.sha256 != self.manifest["tokenizer"]["sha256"]:
            raise PtmError(f"{self.path or 'labeled data'} was encoded with another tokenizer "
                           f"(sha256 {self.manifest['tokenizer']['sha256'][:12]}...)")


def _read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise PtmError(f"{directory}: not a ptm shard directory (no {MANIFEST})")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as err:
        raise PtmError(f"{path}: cannot read the shard manifest: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PtmError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise PtmError(f"{path}: unsupported {FORMAT} version {manifest.get('version')!r}; this ptm reads {VERSION}")
    if manifest.get("kind") != KIND:
        raise PtmError(f"{path}: kind is {manifest.get('kind')!r}; labeled data has kind {KIND!r}")
    for key in ("task", "labels", "shards", "rows", "input_style", "max_len", "special_ids"):
        if key not in manifest:
            raise PtmError(f"{path}: the shard manifest has no {key!r}")
    if manifest["task"] not in TASKS:
        raise PtmError(f"{path}: unknown task {manifest['task']!r}")
    return manifest
