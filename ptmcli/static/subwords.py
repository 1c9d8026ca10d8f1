"""Character n-grams of words and their hash buckets, as fastText defines them.

A word is wrapped in ``<`` and ``>`` and cut into every run of ``min_n`` to
``max_n`` characters (the whole wrapped word too, when it is short enough).
Each n-gram's UTF-8 bytes are hashed by 32-bit FNV-1a and taken modulo the
bucket count. fastText feeds each byte to the hash as a signed char, so bytes
of 0x80 and above enter sign-extended; doing the same keeps the bucket of
every n-gram equal to fastText's, so its models and ptm's agree row for row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FNV_OFFSET = 2166136261
FNV_PRIME = 16777619
BEGIN, END = "<", ">"


def char_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """The n-grams of ``<word>``, shortest first at each starting character."""
    wrapped = BEGIN + word + END
    grams = []
    for start in range(len(wrapped)):
        for size in range(min_n, max_n + 1):
            if start + size > len(wrapped):
                break
            grams.append(wrapped[start:start + size])
    return grams


def fnv1a(data: bytes) -> int:
    """fastText's 32-bit FNV-1a of ``data`` (bytes >= 0x80 sign-extended)."""
    return int(fnv1a_many([data])[0])


def fnv1a_many(items: Sequence[bytes]) -> np.ndarray:
    """fastText's FNV-1a of each byte string, vectorised over the strings (uint32)."""
    hashes = np.full(len(items), FNV_OFFSET, dtype=np.uint32)
    if not items:
        return hashes
    lengths = np.fromiter((len(b) for b in items), dtype=np.int64, count=len(items))
    flat = np.frombuffer(b"".join(items), dtype=np.int8).astype(np.int32).view(np.uint32)
    starts = np.cumsum(lengths) - lengths
    prime = np.uint32(FNV_PRIME)
    for position in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > position)
        mixed = hashes[active] ^ flat[starts[active] + position]
        hashes[active] = mixed * prime  # uint32 arithmetic wraps modulo 2**32, as the hash needs
    return hashes


def ngram_buckets(words: Sequence[str], min_n: int, max_n: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids of every word's n-grams: flat int64 ids and per-word offsets (``len(words) + 1``)."""
    grams_per_word = [char_ngrams(word, min_n, max_n) if max_n >= min_n > 0 else [] for word in words]
    lengths = np.fromiter((len(g) for g in grams_per_word), dtype=np.int64, count=len(words))
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    encoded = [gram.encode("utf-8") for grams in grams_per_word for gram in grams]
    ids = (fnv1a_many(encoded).astype(np.int64) % buckets) if buckets > 0 else np.zeros(0, dtype=np.int64)
    return ids, offsets


def subword_vector(ngrams, word: str, min_n: int, max_n: int, buckets: int) -> np.ndarray | None:
    """fastText's vector of a word outside the vocabulary: the mean of its n-gram rows (None: it has no n-gram)."""
    ids, _ = ngram_buckets([word], min_n, max_n, buckets)
    if ids.size == 0:
        return None
    return np.asarray(ngrams[ids]).mean(axis=0)
