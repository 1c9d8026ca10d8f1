"""Writing language-model rows into Arrow IPC stream shards.

The writer receives already-encoded chunks as flat numpy buffers (tokens of
many documents back to back, plus per-document lengths) and turns them into
Arrow list arrays by offsets, with no Python list per row: that conversion is
what would otherwise dominate encoding time. Rows are grouped into record
batches of about ``batch_rows`` rows (fewer when documents are long, so one
batch stays small in memory), and a shard file is closed before it would grow
past ``shard_size_bytes``.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa

from ptmcli import __version__
from ptmcli.data.encode_workers import EncodedChunk
from ptmcli.errors import PtmError

FORMAT = "ptm-shards"
VERSION = 1
INPUT_IDS = "input_ids"
SENTENCE_ENDS = "sentence_ends"
WORD_STARTS = "word_starts"

_INT32_MAX = np.iinfo(np.int32).max


def lm_schema(word_starts: bool) -> pa.Schema:
    """Schema of ``kind: "lm"`` shards; ``word_starts`` is ptm's optional extension."""
    fields = [pa.field(INPUT_IDS, pa.list_(pa.int32())), pa.field(SENTENCE_ENDS, pa.list_(pa.int32()))]
    if word_starts:
        fields.append(pa.field(WORD_STARTS, pa.list_(pa.bool_())))
    return pa.schema(fields)


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
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.shard_size_bytes = shard_size_bytes
        self.word_starts = word_starts
        self.batch_rows = batch_rows
        # At least ~8 batches per shard (a token takes a little over 4 bytes), so small
        # --shard-size values still roll over near their limit.
        self.batch_tokens = max(1024, min(batch_tokens, shard_size_bytes // 32))
        self.schema = lm_schema(word_starts)
        self.shards: list[dict] = []
        self.rows = 0
        self.tokens = 0
        self._pending: list[EncodedChunk] = []
        self._pending_rows = 0
        self._pending_tokens = 0
        self._file: HashingFile | None = None
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._shard_rows = 0
        self._shard_tokens = 0

    def add(self, chunk: EncodedChunk) -> None:
        if chunk.rows == 0:
            return
        self._pending.append(chunk)
        self._pending_rows += chunk.rows
        self._pending_tokens += len(chunk.token_ids)
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
            "kind": "lm",
            "tokenizer": tokenizer,
            "shards": self.shards,
            "rows": self.rows,
            "tokens": self.tokens,
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
        chunks, self._pending = self._pending, []
        self._pending_rows = self._pending_tokens = 0
        if self.word_starts and any(c.word_starts is None for c in chunks):
            raise ValueError("word_starts were requested but a chunk has none")

        def joined(name: str) -> np.ndarray:
            parts = [getattr(c, name) for c in chunks]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        pending = EncodedChunk(
            token_ids=joined("token_ids").astype(np.int32, copy=False),
            doc_lengths=joined("doc_lengths"),
            sentence_ends=joined("sentence_ends").astype(np.int32, copy=False),
            doc_sentences=joined("doc_sentences"),
            word_starts=joined("word_starts") if self.word_starts else None,
        )
        token_offsets = _offsets(pending.doc_lengths)
        sentence_offsets = _offsets(pending.doc_sentences)
        rows = pending.rows
        start = 0
        while start < rows:
            # Up to batch_rows rows and batch_tokens tokens (a longer document goes alone).
            by_tokens = int(np.searchsorted(token_offsets, token_offsets[start] + self.batch_tokens, side="right")) - 1
            end = min(max(start + 1, by_tokens), start + self.batch_rows, rows)
            first, last = int(token_offsets[start]), int(token_offsets[end])
            if end == rows and not final and end - start < self.batch_rows and last - first < self.batch_tokens:
                self._keep_pending(pending, start, first, int(sentence_offsets[start]))
                return
            columns = [
                _list_array(token_offsets[start : end + 1] - first, pending.token_ids[first:last]),
                _list_array(sentence_offsets[start : end + 1] - sentence_offsets[start],
                            pending.sentence_ends[sentence_offsets[start] : sentence_offsets[end]]),
            ]
            if pending.word_starts is not None:
                columns.append(_list_array(token_offsets[start : end + 1] - first, pending.word_starts[first:last]))
            self._write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema), last - first)
            start = end

    def _keep_pending(self, pending: EncodedChunk, row: int, token: int, sentence: int) -> None:
        """Hold rows from ``row`` on for the next batch."""
        rest = EncodedChunk(
            token_ids=pending.token_ids[token:],
            doc_lengths=pending.doc_lengths[row:],
            sentence_ends=pending.sentence_ends[sentence:],
            doc_sentences=pending.doc_sentences[row:],
            word_starts=None if pending.word_starts is None else pending.word_starts[token:],
        )
        self._pending = [rest]
        self._pending_rows = rest.rows
        self._pending_tokens = len(rest.token_ids)

    def _write_batch(self, batch: pa.RecordBatch, tokens: int) -> None:
        # The exact size of the batch's message, plus the 8-byte end-of-stream marker.
        size = pa.ipc.get_record_batch_size(batch) + 8
        if self._stream is not None and self._file.size + size > self.shard_size_bytes:
            self._close_shard()
        if self._stream is None:
            self._open_shard()
        self._stream.write_batch(batch)
        self._shard_rows += batch.num_rows
        self._shard_tokens += tokens

    def _open_shard(self) -> None:
        name = f"{self.prefix}{len(self.shards):05d}.arrow"
        self._file = HashingFile(os.path.join(self.directory, name))
        self._stream = pa.ipc.new_stream(pa.PythonFile(self._file, mode="w"), self.schema)
        self._shard_rows = self._shard_tokens = 0
        self.shards.append({"file": name})

    def _close_shard(self) -> None:
        if self._stream is None:
            return
        self._stream.close()
        self._file.close()
        self.shards[-1].update(
            rows=self._shard_rows,
            tokens=self._shard_tokens,
            bytes=self._file.size,
            sha256=self._file.sha256.hexdigest(),
        )
        self.rows += self._shard_rows
        self.tokens += self._shard_tokens
        self._stream = None
        self._file = None
