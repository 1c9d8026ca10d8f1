"""Dynamic context windows, as word2vec samples them, computed for a whole chunk at once.

Each centre word draws its own window ``b`` uniformly from 1..window, so near
neighbours are seen more often than far ones (on average weight
``(window - d + 1) / window`` at distance ``d``). Windows stop at sentence
ends. A centre's contexts are then ``left`` words before it and ``count - left``
after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class Windows:
    left: np.ndarray  # int64 per position: contexts before the centre
    count: np.ndarray  # int64 per position: contexts in all


def sample_windows(bounds: np.ndarray, size: int, words: int, rng: np.random.Generator) -> Windows:
    """Windows for every position of a chunk of ``words`` words with sentence ``bounds``."""
    return windows_of_reach(bounds, rng.integers(1, size + 1, size=words))


def windows_of_reach(bounds: np.ndarray, reach: np.ndarray) -> Windows:
    """The windows of positions whose draws were ``reach`` (1..window each), cut at the sentence ``bounds``."""
    position = np.arange(reach.size)
    sentence_of = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    start, end = bounds[sentence_of], bounds[sentence_of + 1]
    left = np.minimum(reach, position - start)
    right = np.minimum(reach, end - 1 - position)
    return Windows(left=left, count=left + right)


def context_positions(centres: np.ndarray, left: np.ndarray, width: int) -> np.ndarray:
    """``[len(centres), width]`` positions of the contexts of centres that all have ``width`` of them."""
    slot = np.arange(width)
    return centres[:, None] - left[:, None] + slot + (slot >= left[:, None])


def groups_by_count(centres: np.ndarray, count: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Split centres, already sorted by context count, into runs of equal count (count > 0)."""
    counts = count[centres]
    edges = np.flatnonzero(np.diff(counts)) + 1
    for run in np.split(centres, edges):
        width = int(count[run[0]])
        if width > 0:
            yield width, run


def batches_by_count(windows: Windows, batch: int) -> Iterator[np.ndarray]:
    """Centres with contexts, sorted by context count so batches split into few equal-width groups."""
    order = np.argsort(windows.count, kind="stable")
    order = order[windows.count[order] > 0]
    for start in range(0, order.size, batch):
        yield order[start:start + batch]
