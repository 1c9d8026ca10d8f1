"""Word vectors as the similarity and analogy probes see them: rows of vectors found by word.

Rows keep their source's order, which for vector files is by decreasing
frequency, so the first N rows are the N most frequent words (analogy's
``--restrict``). A word is found by exact match, or, when the table
lowercases, by its lowercase form matched against each row's lowercase form
(the first, most frequent, row wins). By default a table lowercases when its
vocabulary has no uppercase letter (special tokens aside): test sets write
``Athens`` and ``FBI``, a lowercased vocabulary has ``athens`` and ``fbi``.

``missing_vector`` is the hook for tables that can make a vector for a word
they have no row for (subword n-grams, contextual averages); the base table
makes none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def has_uppercase(words: Iterable[str]) -> bool:
    return any(word != word.lower() for word in words)


class WordTable:
    """Vectors ``[rows, dim]`` (float32) and the word of each row."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, lowercase: bool | None = None,
                 specials: Iterable[str] = ()) -> None:
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words for {len(vectors)} vectors")
        self.words = list(words)
        self.vectors = vectors
        special = set(specials)
        self.lowercase = (not has_uppercase(w for w in self.words if w not in special)) if lowercase is None else lowercase
        self._index: dict[str, int] | None = None

    def key(self, word: str) -> str:
        """What a word is matched by."""
        return word.lower() if self.lowercase else word

    def keys(self) -> list[str]:
        """The key of every row."""
        return [self.key(word) for word in self.words]

    def rows(self, words: Sequence[str]) -> list[int | None]:
        """The row of each word (None: the table has none)."""
        if self._index is None:
            index: dict[str, int] = {}
            for row, key in enumerate(self.keys()):
                index.setdefault(key, row)
            self._index = index
        return [self._index.get(self.key(word)) for word in words]

    def missing_vector(self, word: str) -> np.ndarray | None:
        """A vector for a word without a row, for tables that can build one."""
        return None

    @property
    def builds_missing(self) -> bool:
        """Whether ``missing_vector`` can give vectors at all (reported as such)."""
        return False
