"""The order rows are visited in: seeded shuffles, split across ranks, resumable.

Epoch ``e`` visits the permutation drawn from ``np.random.default_rng([seed, e])``.
All ranks walk that one permutation in lockstep: at global position ``p`` the
ranks take ``perm[p + rank]`` and then move on to ``p + world_size``. So the
cursor is a single number, the same on every rank, and a run resumed with a
different number of ranks continues from it without repeating or skipping a
row. Each pass stops at the last multiple of ``world_size`` rows it can fill,
so every rank yields the same number of rows per epoch (fewer than
``world_size`` rows at the end of an epoch are left out of that epoch only).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ptmcli.errors import PtmError


class ShuffledOrder:
    """Row indices for one rank, epoch after epoch, with a cursor a checkpoint can store."""

    def __init__(self, num_rows: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in range for world size {world_size}")
        if num_rows < world_size:
            raise PtmError(f"the data has {num_rows} rows, fewer than the {world_size} data-parallel ranks; "
                           "use more data or fewer ranks")
        self.num_rows = num_rows
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # global position of the next unread row in this epoch's permutation
        self._cached_epoch: int | None = None
        self._permutation: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (the same on every rank)."""
        if self._cached_epoch != epoch:
            if self.shuffle:
                self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            else:
                self._permutation = np.arange(self.num_rows)
            self._cached_epoch = epoch
        return self._permutation

    def epoch_end(self, position: int) -> int:
        """Where a pass that starts at ``position`` stops, so all ranks yield equally many rows."""
        return position + (self.num_rows - position) // self.world_size * self.world_size

    def __iter__(self) -> Iterator[int]:
        """Yields forever from the current cursor; ``state_dict()`` always names the next unread row."""
        while True:
            order = self.permutation(self.epoch)
            end = self.epoch_end(self.position)
            while self.position < end:
                position = self.position
                self.position = position + self.world_size
                yield int(order[position + self.rank])
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict:
        """Where the next unread row is: the same on every rank, JSON-serialisable."""
        epoch, position = self.epoch, self.position
        if self.epoch_end(position) == position:  # this epoch is used up
            epoch, position = epoch + 1, 0
        return {"epoch": epoch, "position": position, "num_rows": self.num_rows, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` stopped; the number of ranks may differ from when it was saved."""
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError):
            raise PtmError(f"data cursor {state!r} is not a saved row order (needs integer 'epoch' and 'position')") from None
        if state.get("num_rows", self.num_rows) != self.num_rows:
            raise PtmError(f"the data cursor was saved for {state['num_rows']} rows but the data has "
                           f"{self.num_rows}; resume with the same shards")
        if state.get("seed", self.seed) != self.seed:
            raise PtmError(f"the data cursor was saved with seed {state['seed']} but this run uses seed "
                           f"{self.seed}; resume with the same seed")
        if epoch < 0 or not 0 <= position <= self.num_rows:
            raise PtmError(f"data cursor epoch {epoch}, position {position} is out of range for {self.num_rows} rows")
        self.epoch = epoch
        self.position = position
