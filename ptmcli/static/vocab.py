"""The training vocabulary: word counts, pruning, negative sampling and subsampling.

Input word ids are whatever the tokenizer assigned; a ``Vocabulary`` keeps the
words that pass ``min_count``/``max_vocab`` and renumbers them by descending
count (index 0 is the most frequent word), the order Huffman coding, the
analogy benchmark's "most frequent N" cut and exported files all expect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ptmcli.errors import PtmError


def count_words(sentences: Iterable[np.ndarray], size: int = 0) -> np.ndarray:
    """Occurrences of each word id in ``sentences`` (int64, at least ``size`` long)."""
    counts = np.zeros(size, dtype=np.int64)
    for sentence in sentences:
        ids = np.asarray(sentence)
        if ids.size == 0:
            continue
        if ids.min() < 0:
            raise PtmError("word ids must not be negative")
        found = np.bincount(ids.astype(np.int64, copy=False))
        if found.size > counts.size:
            counts = np.concatenate([counts, np.zeros(found.size - counts.size, dtype=np.int64)])
        counts[: found.size] += found
    return counts


def kept_word_ids(counts: np.ndarray, min_count: int = 5, max_vocab: int | None = None) -> np.ndarray:
    """Ids of the words to keep, most frequent first (ties by id).

    ``min_count`` drops rarer words; ``max_vocab`` then keeps only that many of
    the most frequent.
    """
    counts = np.asarray(counts, dtype=np.int64)
    candidates = np.flatnonzero(counts >= max(min_count, 1))
    order = np.argsort(-counts[candidates], kind="stable")
    kept = candidates[order]
    if max_vocab is not None:
        if max_vocab < 1:
            raise PtmError(f"--max-vocab must be at least 1, got {max_vocab}")
        kept = kept[:max_vocab]
    return kept


@dataclass
class Vocabulary:
    """Kept words, most frequent first, with their corpus counts."""

    counts: np.ndarray  # int64, per kept word, non-increasing
    source_ids: np.ndarray  # int64, each kept word's id in the input sentences
    words: list[str] | None = None  # each kept word's text, when known (fastText needs it)
    _lookup: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int = 5, max_vocab: int | None = None,
                    words: list[str] | None = None) -> Vocabulary:
        """Prune ``counts`` (indexed by word id); ``words`` names each id, if given."""
        kept = kept_word_ids(counts, min_count, max_vocab)
        if kept.size == 0:
            raise PtmError(f"no word occurs at least {min_count} times; lower --min-count or give more text")
        names = [words[i] for i in kept] if words is not None else None
        return cls(counts=np.asarray(counts, dtype=np.int64)[kept], source_ids=kept.astype(np.int64), words=names)

    @classmethod
    def from_sentences(cls, sentences: Iterable[np.ndarray], min_count: int = 5, max_vocab: int | None = None,
                       words: list[str] | None = None) -> Vocabulary:
        return cls.from_counts(count_words(sentences, len(words) if words else 0), min_count, max_vocab, words)

    def __len__(self) -> int:
        return int(self.counts.size)

    @property
    def total(self) -> int:
        """Occurrences of kept words in the corpus: the words one epoch trains on."""
        return int(self.counts.sum())

    def lookup(self) -> np.ndarray:
        """Source id -> vocabulary index, -1 for pruned words."""
        if self._lookup is None:
            table = np.full(int(self.source_ids.max()) + 1, -1, dtype=np.int64)
            table[self.source_ids] = np.arange(self.source_ids.size)
            self._lookup = table
        return self._lookup

    def encode(self, sentence: np.ndarray) -> np.ndarray:
        """A sentence's kept words as vocabulary indices; pruned words are dropped, as word2vec does."""
        table = self.lookup()
        ids = np.asarray(sentence, dtype=np.int64)
        ids = ids[ids < table.size]
        indices = table[ids]
        return indices[indices >= 0]

    def index(self) -> dict[str, int]:
        """Word text -> vocabulary index."""
        if self.words is None:
            raise PtmError("this vocabulary has no word texts")
        return {word: i for i, word in enumerate(self.words)}


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Chance that each occurrence of a word survives frequent-word subsampling.

    word2vec's rule: with ``t = sample * total``, a word seen ``c`` times is kept
    with probability ``(sqrt(c / t) + 1) * t / c``, capped at 1. Words rarer
    than about ``t`` are always kept; very frequent ones shrink to about
    ``sqrt(t * c)`` occurrences. ``sample <= 0`` keeps everything.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore"):
        keep = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(keep, 1.0)


class NegativeSampler:
    """Draws words with probability proportional to ``count ** power`` (Walker's alias method).

    The originals look words up in a large precomputed table; the alias method
    is exact for rare words as well and takes two random numbers per draw.
    """

    def __init__(self, counts: np.ndarray, power: float = 0.75) -> None:
        weights = np.asarray(counts, dtype=np.float64) ** power
        if weights.size == 0 or weights.sum() <= 0:
            raise PtmError("negative sampling needs at least one word with a positive count")
        self.probabilities = weights / weights.sum()
        self.accept, self.alias = _alias_table(self.probabilities)

    def sample(self, rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
        """Word indices (int64) of the given shape."""
        slot = rng.integers(0, self.accept.size, size=shape)
        return np.where(rng.random(size=shape) < self.accept[slot], slot, self.alias[slot])


def _alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's construction: slot i returns i with chance accept[i], else alias[i]."""
    n = probabilities.size
    scaled = probabilities * n
    accept = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = [int(i) for i in np.flatnonzero(scaled < 1.0)]
    large = [int(i) for i in np.flatnonzero(scaled >= 1.0)]
    remaining = scaled.tolist()
    while small and large:
        low, high = small.pop(), large[-1]
        accept[low] = remaining[low]
        alias[low] = high
        remaining[high] -= 1.0 - remaining[low]
        if remaining[high] < 1.0:
            small.append(large.pop())
    # What is left holds probability ~1 up to rounding: always accept it.
    return accept, alias
