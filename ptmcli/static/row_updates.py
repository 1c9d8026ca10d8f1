"""Adding a batch's summed steps to embedding rows, with a bound on how many steps a row takes at once.

SGD as word2vec runs it applies each step before computing the next; a batch
computes all its steps from the same weights and sums those that hit the
same row. For most rows that changes nothing measurable, but a row that a
batch hits hundreds of times (a common n-gram, the root of the Huffman tree,
any word of a tiny vocabulary) would take hundreds of steps that could not
see each other's effect, and overshoot. So a row hit more than ``cap``
times in one update takes its mean step times ``cap``.
"""

from __future__ import annotations

import threading

import torch


class RowUpdater:
    """``index_add_`` with the per-row cap; keeps one occurrence counter per thread."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._local = threading.local()

    def add(self, matrix: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor) -> None:
        """``matrix[rows[i]] += steps[i]`` for all i, scaled down for rows seen more than ``cap`` times."""
        matrix.index_add_(0, rows, steps)
        scale = self.scale(rows, matrix.shape[0])
        if scale is not None:
            # Few entries pass the cap: correct those rather than rescale every step.
            over = torch.nonzero(scale < 1).squeeze(1)
            correction = steps.index_select(0, over) * (scale.index_select(0, over) - 1).unsqueeze(1)
            matrix.index_add_(0, rows.index_select(0, over), correction)

    def add_to_slots(self, matrix: torch.Tensor, slots: torch.Tensor, steps: torch.Tensor) -> None:
        """``matrix[slots[j, i]] += steps[i]`` for every slot j (CBOW: each context of window i), with the cap."""
        for rows in slots:
            matrix.index_add_(0, rows, steps)
        flat = slots.reshape(-1)
        scale = self.scale(flat, matrix.shape[0])
        if scale is not None:
            over = torch.nonzero(scale < 1).squeeze(1)
            correction = steps.index_select(0, over % steps.shape[0]) * (scale.index_select(0, over) - 1).unsqueeze(1)
            matrix.index_add_(0, flat.index_select(0, over), correction)

    def scale(self, rows: torch.Tensor, size: int) -> torch.Tensor | None:
        """Per-entry factors for ``rows`` of a ``size``-row matrix, or None when no row passes the cap."""
        times = self._occurrences(rows, size)
        if int(times.max()) <= self.cap:
            return None
        return self.cap / times.clamp(min=self.cap).to(torch.float32)

    def _occurrences(self, rows: torch.Tensor, size: int) -> torch.Tensor:
        """How often each entry's row occurs in ``rows``; the counter is cleared again after use."""
        counters = getattr(self._local, "counters", None)
        if counters is None:
            counters = self._local.counters = {}
        key = (rows.device, size)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = torch.zeros(size, dtype=torch.int32, device=rows.device)
        counter.index_add_(0, rows, torch.ones_like(rows, dtype=torch.int32))
        times = counter.index_select(0, rows)
        counter.index_fill_(0, rows, 0)
        return times
