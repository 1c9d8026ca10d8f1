"""What a static-vector trainer reports while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Progress:
    epoch: int  # 1-based
    epochs: int
    done: int  # units trained so far over all epochs (words; co-occurrence pairs for GloVe)
    total: int  # units in the whole run
    learning_rate: float
    loss: float  # mean loss per example since the previous report
    seconds: float  # since training started

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]
