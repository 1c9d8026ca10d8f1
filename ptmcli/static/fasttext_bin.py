"""fastText's ``.bin`` model, read: its words, their vectors and the character n-gram table.

The layout (fastText 0.9, file version 12; gensim's ``save_facebook_model``
writes the same): a magic number and the version (int32 each); the training
arguments (twelve int32: dim, ws, epoch, minCount, neg, wordNgrams, loss,
model, bucket, minn, maxn, lrUpdateRate; then a float64); the dictionary
(int32 size, nwords, nlabels; int64 ntokens, pruneidx_size; per entry the
word's UTF-8 bytes ending in a NUL, an int64 count and an int8 type, 0 for a
word and 1 for a label); a quantisation flag (one byte); the input matrix
(int64 rows, int64 columns, float32 rows x columns): the words' own rows,
then ``bucket`` n-gram rows. The output matrix follows, not read.

A word's vector is, as fastText's ``get_word_vector`` computes it, the mean
of its own row and the rows of its n-grams (``ptmcli.static.subwords``);
fastText's end-of-sentence word ``</s>`` has no n-grams. Quantised models
(``.ftz``) are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.static.subwords import ngram_buckets

MAGIC = 793712314
VERSION = 12
END_OF_SENTENCE = "</s>"
_ARGS = struct.Struct("<12id")
_DICT_HEAD = struct.Struct("<3i2q")
_ENTRY_TAIL = struct.Struct("<qb")
_MATRIX_HEAD = struct.Struct("<2q")


@dataclass
class FastTextModel:
    words: list[str]
    """Vocabulary words, in the file's order (most frequent first)."""
    vectors: np.ndarray
    """``[len(words), dim]`` float32: each word's vector, its row and its n-gram rows averaged."""
    ngrams: np.ndarray
    """``[buckets, dim]`` float32."""
    min_n: int
    max_n: int
    buckets: int


def is_fasttext_bin(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == MAGIC.to_bytes(4, "little")


def read_fasttext_bin(path: str | Path) -> FastTextModel:
    name = str(path)
    with open(path, "rb") as handle:
        magic, version = struct.unpack("<2i", _take(handle, 8, name, "header"))
        if magic != MAGIC:
            raise PtmError(f"{name}: not a fastText .bin model (no magic number)")
        if version != VERSION:
            raise PtmError(f"{name}: fastText model file version {version}; ptm reads version {VERSION} (fastText 0.9)")
        args = _ARGS.unpack(_take(handle, _ARGS.size, name, "arguments"))
        dim, buckets, min_n, max_n = args[0], args[8], args[9], args[10]
        size, nwords, _nlabels, _ntokens, pruned = _DICT_HEAD.unpack(_take(handle, _DICT_HEAD.size, name, "dictionary"))
        words = _dictionary_words(handle, size, name)
        if len(words) != nwords:
            raise PtmError(f"{name}: the dictionary lists {len(words)} words, its header {nwords}")
        if pruned > 0:
            raise PtmError(f"{name}: a quantised fastText model (pruned n-grams); ptm reads full-precision .bin models")
        handle.read(8 * max(pruned, 0))
        if _take(handle, 1, name, "quantisation flag") != b"\x00":
            raise PtmError(f"{name}: a quantised fastText model; ptm reads full-precision .bin models")
        rows, columns = _MATRIX_HEAD.unpack(_take(handle, _MATRIX_HEAD.size, name, "input matrix"))
        if columns != dim or rows != nwords + buckets:
            raise PtmError(f"{name}: input matrix {rows} x {columns}, but {nwords} words + {buckets} buckets of "
                           f"dim {dim} were declared")
        # Read straight into the array: published models hold gigabytes of rows.
        matrix = np.fromfile(handle, dtype="<f4", count=rows * columns)
        if matrix.size != rows * columns:
            raise PtmError(f"{name}: the file ends inside its input matrix (truncated fastText .bin model)")
        matrix = matrix.reshape(rows, columns).astype(np.float32, copy=False)
    return FastTextModel(words, word_vectors(words, matrix, min_n, max_n, buckets), matrix[nwords:], min_n, max_n, buckets)


def word_vectors(words: list[str], matrix: np.ndarray, min_n: int, max_n: int, buckets: int,
                 chunk: int = 65_536) -> np.ndarray:
    """Each word's row averaged with its n-gram rows (``matrix``: word rows, then bucket rows)."""
    import torch
    import torch.nn.functional as F

    nwords = len(words)
    table = torch.from_numpy(matrix)
    out = np.empty((nwords, matrix.shape[1]), dtype=np.float32)
    for first in range(0, nwords, chunk):  # bounded memory for the index arrays of millions of words
        part = words[first:first + chunk]
        has = np.array([bool(buckets) and w != END_OF_SENTENCE for w in part], dtype=bool)
        ids, offsets = ngram_buckets([w for w, h in zip(part, has) if h], min_n, max_n, max(buckets, 1))
        counts = np.ones(len(part), dtype=np.int64)
        counts[has] += np.diff(offsets)
        starts = np.cumsum(counts) - counts
        rows = np.empty(int(counts.sum()), dtype=np.int64)
        rows[starts] = np.arange(first, first + len(part))
        is_gram = np.ones(rows.size, dtype=bool)
        is_gram[starts] = False
        rows[is_gram] = nwords + ids
        out[first:first + len(part)] = F.embedding_bag(torch.from_numpy(rows), table, torch.from_numpy(starts),
                                                       mode="mean").numpy()
    return out


def _take(handle: BinaryIO, size: int, name: str, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise PtmError(f"{name}: the file ends inside its {what} (truncated fastText .bin model)")
    return data


def _dictionary_words(handle: BinaryIO, size: int, name: str) -> list[str]:
    """The words (type 0) of ``size`` entries, read in blocks; the handle is left just after them."""
    buffer, pos, base = b"", 0, handle.tell()
    words: list[str] = []
    for _ in range(size):
        while True:
            nul = buffer.find(b"\x00", pos)
            if nul != -1 and nul + 1 + _ENTRY_TAIL.size <= len(buffer):
                break
            more = handle.read(1 << 20)
            if not more:
                raise PtmError(f"{name}: the file ends inside its dictionary (truncated fastText .bin model)")
            base += pos
            buffer, pos = buffer[pos:] + more, 0
        _count, kind = _ENTRY_TAIL.unpack_from(buffer, nul + 1)
        if kind == 0:
            words.append(buffer[pos:nul].decode("utf-8", errors="replace"))
        pos = nul + 1 + _ENTRY_TAIL.size
    handle.seek(base + pos)
    return words
