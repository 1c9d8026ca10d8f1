"""Reading a ``ptm-shards`` directory: random access to language-model rows or source/target pairs.

Shard files are memory-mapped and their record batches kept as zero-copy
views, so opening a corpus costs a pass over batch headers, not its size in
RAM, and the OS page cache is shared by every process that reads it (data
loader workers included). A global row index maps to (batch, row in batch)
by a binary search over cumulative row counts.

Rows are numpy views into the mapped files and therefore read-only: copy a
row's arrays before changing them. A directory is opened for one kind:
``kind: "lm"`` gives :class:`LMRow` documents, ``kind: "pairs"`` gives
:class:`PairRow` source/target pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ptmcli.data.shard_writer import (
    FORMAT,
    INPUT_IDS,
    LM,
    PAIRS,
    SENTENCE_ENDS,
    TARGET_IDS,
    TOKEN_COLUMNS,
    VERSION,
    WORD_STARTS,
)
from ptmcli.errors import PtmError

MANIFEST = "manifest.json"


@dataclass
class LMRow:
    """One document: its tokens and where its sentences end."""

    input_ids: np.ndarray  # int32
    sentence_ends: np.ndarray  # int32, exclusive end offsets into input_ids
    word_starts: np.ndarray | None  # bool per token, None when the shards were written without them


class PairRow(NamedTuple):
    """One source/target pair (unpacks as ``source, target``); no special tokens added."""

    source_ids: np.ndarray  # int32
    target_ids: np.ndarray  # int32


_KIND_NAMES = {LM: "language-model shards", PAIRS: "source/target pair shards"}
_KIND_COLUMNS = {LM: (INPUT_IDS, SENTENCE_ENDS), PAIRS: (INPUT_IDS, TARGET_IDS)}


class _Batch:
    """Flat numpy views of one ``lm`` record batch's list columns."""

    __slots__ = ("ids", "id_offsets", "ends", "end_offsets", "word_bits", "word_bit_offset")

    def __init__(self, batch: pa.RecordBatch) -> None:
        ids = batch.column(INPUT_IDS)
        ends = batch.column(SENTENCE_ENDS)
        self.ids = ids.values.to_numpy()
        self.id_offsets = ids.offsets.to_numpy()
        self.ends = ends.values.to_numpy()
        self.end_offsets = ends.offsets.to_numpy()
        self.word_bits: np.ndarray | None = None
        self.word_bit_offset = 0
        if WORD_STARTS in batch.schema.names:
            words = batch.column(WORD_STARTS).values  # bit-packed booleans
            # The list offsets of word_starts equal those of input_ids (same lengths per row).
            self.word_bits = np.frombuffer(words.buffers()[1], dtype=np.uint8)
            self.word_bit_offset = words.offset

    def row(self, j: int) -> LMRow:
        start, end = int(self.id_offsets[j]), int(self.id_offsets[j + 1])
        word_starts = None
        if self.word_bits is not None:
            first, last = start + self.word_bit_offset, end + self.word_bit_offset
            packed = self.word_bits[first >> 3 : (last + 7) >> 3]
            shift = first & 7
            word_starts = np.unpackbits(packed, bitorder="little")[shift : shift + end - start].view(np.bool_)
        return LMRow(
            input_ids=self.ids[start:end],
            sentence_ends=self.ends[self.end_offsets[j] : self.end_offsets[j + 1]],
            word_starts=word_starts,
        )


class _PairBatch:
    """Flat numpy views of one ``pairs`` record batch's two token columns."""

    __slots__ = ("sources", "source_offsets", "targets", "target_offsets")
    word_bits = None

    def __init__(self, batch: pa.RecordBatch) -> None:
        sources, targets = batch.column(INPUT_IDS), batch.column(TARGET_IDS)
        self.sources = sources.values.to_numpy()
        self.source_offsets = sources.offsets.to_numpy()
        self.targets = targets.values.to_numpy()
        self.target_offsets = targets.offsets.to_numpy()

    def row(self, j: int) -> PairRow:
        return PairRow(self.sources[self.source_offsets[j] : self.source_offsets[j + 1]],
                       self.targets[self.target_offsets[j] : self.target_offsets[j + 1]])


def _fail(path: str, problem: str) -> PtmError:
    return PtmError(f"{path}: {problem}")


def _read_manifest(directory: str, kind: str) -> dict:
    if not os.path.isdir(directory):
        raise PtmError(f"shard directory {directory} does not exist")
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise _fail(directory, f"not a ptm shard directory (no {MANIFEST}); create one with `ptm tokenize encode`")
    try:
        with open(path, encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError) as err:
        raise _fail(path, f"cannot read the shard manifest: {err}") from None
    if not isinstance(manifest, dict):
        raise _fail(path, "the shard manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise _fail(path, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise _fail(path, f"unsupported {FORMAT} version {manifest.get('version')!r}; this ptm reads version {VERSION}")
    if manifest.get("kind") != kind:
        raise _fail(path, f"kind is {manifest.get('kind')!r}; {_KIND_NAMES[kind]} (kind {kind!r}) are needed here")
    for key in ("shards", "rows", *(TOKEN_COLUMNS[c] for c in _KIND_COLUMNS[kind] if c in TOKEN_COLUMNS), "tokenizer"):
        if key not in manifest:
            raise _fail(path, f"the shard manifest has no {key!r}")
    return manifest


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _open_shard(directory: str, entry: dict, verify: bool, kind: str) -> list[pa.RecordBatch]:
    path = os.path.join(directory, entry["file"])
    if not os.path.isfile(path):
        raise _fail(path, "shard file listed in manifest.json is missing")
    if "bytes" in entry and os.path.getsize(path) != entry["bytes"]:
        raise _fail(path, f"shard file has {os.path.getsize(path)} bytes, manifest.json says {entry['bytes']} (truncated or replaced?)")
    if verify and file_sha256(path) != entry.get("sha256"):
        raise _fail(path, "shard file's sha256 does not match manifest.json (corrupted or modified)")
    try:
        reader = pa.ipc.open_stream(pa.memory_map(path, "r"))
        batches = list(reader)
    except (pa.ArrowInvalid, OSError) as err:
        raise _fail(path, f"not a readable Arrow IPC stream: {err}") from None
    names = reader.schema.names
    for column in _KIND_COLUMNS[kind]:
        if column not in names or reader.schema.field(column).type != pa.list_(pa.int32()):
            raise _fail(path, f"shard has no {column}: list<int32> column")
    if WORD_STARTS in names and reader.schema.field(WORD_STARTS).type != pa.list_(pa.bool_()):
        raise _fail(path, f"shard's {WORD_STARTS} column is not list<bool>")
    rows = sum(b.num_rows for b in batches)
    if rows != entry.get("rows"):
        raise _fail(path, f"shard holds {rows} rows, manifest.json says {entry.get('rows')}")
    return batches


class ShardDataset:
    """Random access to the rows of a ``ptm-shards`` directory (docs/formats.md, docs/shards.md)."""

    def __init__(self, path: str, manifest: dict, batches: list[pa.RecordBatch]) -> None:
        self.path = path
        self.manifest = manifest
        self.kind = str(manifest["kind"])
        self.num_rows = int(manifest["rows"])
        self.num_tokens = int(manifest["tokens"])  # of input_ids: for pairs, the sources
        self.num_target_tokens = int(manifest.get("target_tokens", 0))  # of target_ids (pairs; 0 for lm)
        self.vocab_size = int(manifest["tokenizer"].get("vocab_size", 0))
        self.tokenizer_sha256 = str(manifest["tokenizer"].get("sha256", ""))
        batch_class = _PairBatch if self.kind == PAIRS else _Batch
        self._batches = [batch_class(b) for b in batches]
        self._batch_ends = np.cumsum([b.num_rows for b in batches], dtype=np.int64)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False, kind: str = LM) -> ShardDataset:
        """Open a shard directory of ``kind`` (``lm`` or ``pairs``); ``verify`` also checks every file's sha256."""
        if kind not in _KIND_COLUMNS:
            raise ValueError(f"unknown shard kind {kind!r}; choose one of {', '.join(_KIND_COLUMNS)}")
        directory = os.fspath(path)
        manifest = _read_manifest(directory, kind)
        counted = [(column, TOKEN_COLUMNS[column]) for column in _KIND_COLUMNS[kind] if column in TOKEN_COLUMNS]
        batches: list[pa.RecordBatch] = []
        totals = dict.fromkeys((key for _, key in counted), 0)
        for entry in manifest["shards"]:
            shard_batches = _open_shard(directory, entry, verify, kind)
            batches.extend(shard_batches)
            for column, key in counted:
                held = sum(_token_count(b, column) for b in shard_batches)
                if key in entry and held != entry[key]:
                    raise _fail(os.path.join(directory, entry["file"]),
                                f"shard holds {held} {key.replace('_', ' ')}, manifest.json says {entry[key]}")
                totals[key] += held
        rows = sum(b.num_rows for b in batches)
        manifest_path = os.path.join(directory, MANIFEST)
        if rows != manifest["rows"] or any(totals[key] != manifest[key] for key in totals):
            said = " / ".join(f"{manifest[key]} {key.replace('_', ' ')}" for key in totals)
            held = " / ".join(str(totals[key]) for key in totals)
            raise _fail(manifest_path, f"totals say {manifest['rows']} rows / {said}, the shards hold {rows} / {held}")
        return cls(directory, manifest, batches)

    @property
    def fingerprint(self) -> str:
        """sha256 over the shard files' checksums in order: the same data wherever the directory lives."""
        listed = "\n".join(str(entry.get("sha256", "")) for entry in self.manifest["shards"])
        return hashlib.sha256(listed.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> LMRow | PairRow:
        i = int(index)
        if i < 0:
            i += self.num_rows
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {index} is out of range for {self.num_rows} rows")
        b = int(np.searchsorted(self._batch_ends, i, side="right"))
        first = int(self._batch_ends[b - 1]) if b else 0
        return self._batches[b].row(i - first)

    def __iter__(self):
        for i in range(self.num_rows):
            yield self[i]

    def __reduce__(self):
        # Data loader workers started with "spawn" get the dataset by value: reopen
        # the memory maps there rather than copy every record batch.
        return (ShardDataset.open, (self.path, False, self.kind))

    @property
    def has_word_starts(self) -> bool:
        return bool(self._batches) and self._batches[0].word_bits is not None

    def check_tokenizer(self, tokenizer) -> None:
        """PtmError if ``tokenizer`` is not the one these shards were encoded with."""
        if tokenizer.vocab_size != self.vocab_size:
            raise PtmError(f"{self.path} was encoded with a tokenizer of vocabulary size {self.vocab_size}, "
                           f"but the tokenizer given has {tokenizer.vocab_size}")
        if tokenizer.sha256 != self.tokenizer_sha256:
            raise PtmError(f"{self.path} was encoded with tokenizer sha256 {self.tokenizer_sha256[:12]}..., "
                           f"but the tokenizer given has {str(tokenizer.sha256)[:12]}...; re-encode the corpus "
                           "with this tokenizer")


def _token_count(batch: pa.RecordBatch, column: str) -> int:
    offsets = batch.column(column).offsets
    return int(offsets[-1].as_py() - offsets[0].as_py()) if len(offsets) else 0
