"""Writing encoded rows into Arrow IPC stream shards: language-model documents or source/target pairs.

The writer receives already-encoded chunks as flat numpy buffers (tokens of
many rows back to back, plus per-row lengths) and turns them into Arrow list
arrays by offsets, with no Python list per row: that conversion is what would
otherwise dominate encoding time. Rows are grouped into record batches of
about ``batch_rows`` rows (fewer when rows are long, so one batch stays small
in memory), and a shard file is closed before it would grow past
``shard_size_bytes``.

``kind="lm"`` shards take ``EncodedChunk``s (documents with sentence ends and
word starts); ``kind="pairs"`` shards take ``PairChunk``s (a source and a
target sequence per row). Inside, both are a few ragged columns, each a flat
value buffer with a length per row, cut into batches the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ptmcli import __version__
from ptmcli.data.encode_workers import EncodedChunk
from ptmcli.errors import PtmError

FORMAT = "ptm-shards"
VERSION = 1
LM = "lm"
PAIRS = "pairs"
INPUT_IDS = "input_ids"
SENTENCE_ENDS = "sentence_ends"
WORD_STARTS = "word_starts"
TARGET_IDS = "target_ids"
TOKEN_COLUMNS = {INPUT_IDS: "tokens", TARGET_IDS: "target_tokens"}
"""Columns of token ids, and the manifest key (per shard and in total) that counts each one's tokens."""

_INT32_MAX = np.iinfo(np.int32).max


def lm_schema(word_starts: bool) -> pa.Schema:
    """Schema of ``kind: "lm"`` shards; ``word_starts`` is ptm's optional extension."""
    fields = [pa.field(INPUT_IDS, pa.list_(pa.int32())), pa.field(SENTENCE_ENDS, pa.list_(pa.int32()))]
    if word_starts:
        fields.append(pa.field(WORD_STARTS, pa.list_(pa.bool_())))
    return pa.schema(fields)


def pairs_schema() -> pa.Schema:
    """Schema of ``kind: "pairs"`` shards: the source sequence in ``input_ids``, the target in ``target_ids``."""
    return pa.schema([pa.field(INPUT_IDS, pa.list_(pa.int32())), pa.field(TARGET_IDS, pa.list_(pa.int32()))])


@dataclass
class PairChunk:
    """Encoded source/target pairs, flattened: what the writer takes for ``kind: "pairs"`` shards."""

    source_ids: np.ndarray  # int32: every pair's source tokens, back to back
    source_lengths: np.ndarray  # int64: source tokens per pair
    target_ids: np.ndarray  # int32: every pair's target tokens, back to back
    target_lengths: np.ndarray  # int64: target tokens per pair
    empty_pairs: int = 0  # pairs dropped because a side encoded to no tokens

    @property
    def rows(self) -> int:
        return len(self.source_lengths)


@dataclass
class _Ragged:
    """One list column of a run of rows: the values back to back and each row's length."""

    values: np.ndarray
    lengths: np.ndarray

    def offsets(self) -> np.ndarray:
        return _offsets(self.lengths)


def _lm_columns(chunk: EncodedChunk, word_starts: bool) -> dict[str, _Ragged]:
    if not isinstance(chunk, EncodedChunk):
        raise TypeError(f"kind 'lm' shards take EncodedChunk, not {type(chunk).__name__}")
    columns = {
        INPUT_IDS: _Ragged(chunk.token_ids.astype(np.int32, copy=False), chunk.doc_lengths),
        SENTENCE_ENDS: _Ragged(chunk.sentence_ends.astype(np.int32, copy=False), chunk.doc_sentences),
    }
    if word_starts:
        if chunk.word_starts is None:
            raise ValueError("word_starts were requested but a chunk has none")
        columns[WORD_STARTS] = _Ragged(chunk.word_starts, chunk.doc_lengths)
    return columns


def _pair_columns(chunk: PairChunk) -> dict[str, _Ragged]:
    if not isinstance(chunk, PairChunk):
        raise TypeError(f"kind 'pairs' shards take PairChunk, not {type(chunk).__name__}")
    return {
        INPUT_IDS: _Ragged(chunk.source_ids.astype(np.int32, copy=False), chunk.source_lengths),
        TARGET_IDS: _Ragged(chunk.target_ids.astype(np.int32, copy=False), chunk.target_lengths),
    }


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    if offsets[-1] > _INT32_MAX:
        raise PtmError("a single document has more than 2**31 tokens; split the input into smaller documents")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


class HashingFile:
    """A binary file that hashes what is written through it and fsyncs on close."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        return self._file.write(view)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.closed = True


class ShardWriter:
    """Appends encoded chunks to ``<directory>/<prefix>NNNNN.arrow`` files, rolling over by size."""

    def __init__(
        self,
        directory: str,
        *,
        prefix: str = "part-",
        shard_size_bytes: int = 256 << 20,
        word_starts: bool = True,
        batch_rows: int = 2048,
        batch_tokens: int = 1 << 20,
        kind: str = LM,
    ) -> None:
        if kind not in (LM, PAIRS):
            raise ValueError(f"unknown shard kind {kind!r}; the writer makes {LM!r} and {PAIRS!r} shards")
        self.directory = directory
        self.prefix = prefix
        self.shard_size_bytes = shard_size_bytes
        self.kind = kind
        self.word_starts = word_starts and kind == LM
        self.batch_rows = batch_rows
        # At least ~8 batches per shard (a token takes a little over 4 bytes), so small
        # --shard-size values still roll over near their limit.
        self.batch_tokens = max(1024, min(batch_tokens, shard_size_bytes // 32))
        self.schema = lm_schema(self.word_starts) if kind == LM else pairs_schema()
        self.token_columns = [name for name in TOKEN_COLUMNS if name in self.schema.names]
        self.shards: list[dict] = []
        self.rows = 0
        # Tokens written, by manifest key: "tokens" (input_ids) and, for pairs, "target_tokens".
        self.totals = {TOKEN_COLUMNS[name]: 0 for name in self.token_columns}
        self._pending: list[dict[str, _Ragged]] = []
        self._pending_rows = 0
        self._pending_tokens = 0
        self._file: HashingFile | None = None
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._shard_rows = 0
        self._shard_totals = dict.fromkeys(self.totals, 0)

    @property
    def tokens(self) -> int:
        return self.totals["tokens"]

    def add(self, chunk: EncodedChunk | PairChunk) -> None:
        if chunk.rows == 0:
            return
        columns = _lm_columns(chunk, self.word_starts) if self.kind == LM else _pair_columns(chunk)
        self._pending.append(columns)
        self._pending_rows += chunk.rows
        self._pending_tokens += sum(len(columns[name].values) for name in self.token_columns)
        if self._pending_rows >= self.batch_rows or self._pending_tokens >= self.batch_tokens:
            self._write_pending(final=False)

    def close(self) -> list[dict]:
        """Write what is pending, close the last shard, and return the shard entries of the manifest."""
        self._write_pending(final=True)
        self._close_shard()
        return self.shards

    def manifest(self, tokenizer: dict, source: list[str], **extra) -> dict:
        """The ``manifest.json`` of what was written (call after ``close``); ``extra`` keys are appended."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "tokenizer": tokenizer,
            "shards": self.shards,
            "rows": self.rows,
            **self.totals,
            "source": list(source),
            "created_by": f"ptm {__version__}",
            **extra,
        }

    def abort(self) -> None:
        """Close any open file without writing more (the caller removes the directory)."""
        self._pending = []
        try:
            if self._stream is not None:
                self._stream.close()
        finally:
            if self._file is not None:
                self._file.close()
            self._stream = None
            self._file = None

    def _write_pending(self, final: bool) -> None:
        """Write full batches of what is pending; the rest too when ``final``."""
        if not self._pending:
            return
        parts, self._pending = self._pending, []
        self._pending_rows = self._pending_tokens = 0

        def joined(arrays: list[np.ndarray]) -> np.ndarray:
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

        columns = {name: _Ragged(joined([p[name].values for p in parts]), joined([p[name].lengths for p in parts]))
                   for name in self.schema.names}
        offsets = {name: column.offsets() for name, column in columns.items()}
        # Batches are bounded by the tokens of all token columns together.
        sizes = sum(offsets[name] for name in self.token_columns)
        rows = len(columns[INPUT_IDS].lengths)
        start = 0
        while start < rows:
            # Up to batch_rows rows and batch_tokens tokens (a longer row goes alone).
            by_tokens = int(np.searchsorted(sizes, sizes[start] + self.batch_tokens, side="right")) - 1
            end = min(max(start + 1, by_tokens), start + self.batch_rows, rows)
            if end == rows and not final and end - start < self.batch_rows and sizes[end] - sizes[start] < self.batch_tokens:
                self._keep_pending(columns, offsets, start)
                return
            arrays = []
            for name in self.schema.names:
                first, last = int(offsets[name][start]), int(offsets[name][end])
                arrays.append(_list_array(offsets[name][start : end + 1] - first, columns[name].values[first:last]))
            counts = {TOKEN_COLUMNS[name]: int(offsets[name][end] - offsets[name][start]) for name in self.token_columns}
            self._write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema), counts)
            start = end

    def _keep_pending(self, columns: dict[str, _Ragged], offsets: dict[str, np.ndarray], row: int) -> None:
        """Hold rows from ``row`` on for the next batch."""
        rest = {name: _Ragged(column.values[int(offsets[name][row]):], column.lengths[row:])
                for name, column in columns.items()}
        self._pending = [rest]
        self._pending_rows = len(rest[INPUT_IDS].lengths)
        self._pending_tokens = sum(len(rest[name].values) for name in self.token_columns)

    def _write_batch(self, batch: pa.RecordBatch, counts: dict[str, int]) -> None:
        # The exact size of the batch's message, plus the 8-byte end-of-stream marker.
        size = pa.ipc.get_record_batch_size(batch) + 8
        if self._stream is not None and self._file.size + size > self.shard_size_bytes:
            self._close_shard()
        if self._stream is None:
            self._open_shard()
        self._stream.write_batch(batch)
        self._shard_rows += batch.num_rows
        for key, count in counts.items():
            self._shard_totals[key] += count

    def _open_shard(self) -> None:
        name = f"{self.prefix}{len(self.shards):05d}.arrow"
        self._file = HashingFile(os.path.join(self.directory, name))
        self._stream = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), self.schema)
        self._shard_rows = 0
        self._shard_totals = dict.fromkeys(self.totals, 0)
        self.shards.append({"file": name})

    def _close_shard(self) -> None:
        if self._stream is None:
            return
        self._stream.close()
        self._file.close()
        self.shards[-1].update(
            rows=self._shard_rows,
            **self._shard_totals,
            bytes=self._file.size,
            sha256=self._file.sha256.hexdigest(),
        )
        self.rows += self._shard_rows
        for key, count in self._shard_totals.items():
            self.totals[key] += count
        self._stream = None
        self._file = None
