"""Training planned over wall-clock time (``ptm pretrain --budget 30m``) instead of steps.

With a budget the learning rate is a function of the *elapsed fraction* of the
budget, not of the step: warmup over the first ``warmup_fraction``, then the
schedule's decay reaching its end exactly when the budget does. However fast
the machine turns out to be, the run sees a whole schedule, which a step-count
plan only gives when the steps per minute were guessed right (a guess too
high leaves the rate near its peak when the time runs out; too low, and the
run idles at the bottom of its decay).

The global batch may grow over the run (``batch_ramp``): the accumulation
count rises linearly from one micro-batch to ``--grad-accum`` over that
fraction of the budget, as small batches make faster progress early and large
ones later.

The run stops before a step that would end past the budget, judged from the
recent steps' times; the final evaluation and checkpoint follow. The elapsed
time is part of the saved loop state, so a resumed run continues its budget
rather than starting a new one.
"""

from __future__ import annotations

import math

from ptmcli.errors import PtmError


def budget_multiplier(fraction: float, warmup_fraction: float, schedule: str, min_ratio: float = 0.0) -> float:
    """Factor on the peak rate at ``fraction`` (0..1) of the budget: linear warmup, then ``schedule``'s fall
    to ``min_ratio`` at the end (``linear`` after warmup makes the one-cycle triangle)."""
    fraction = min(1.0, max(0.0, fraction))
    if warmup_fraction > 0 and fraction < warmup_fraction:
        # Never exactly zero: the first step must move the weights.
        return max(fraction / warmup_fraction, 1e-3)
    if schedule == "constant":
        return 1.0
    progress = (fraction - warmup_fraction) / max(1e-12, 1.0 - warmup_fraction)
    if schedule == "linear":
        return max(min_ratio, 1.0 - progress * (1.0 - min_ratio))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def ramp_accumulation(fraction: float, ramp_fraction: float, full: int) -> int:
    """Micro-batches per step at ``fraction`` of the budget: 1 rising linearly to ``full`` at ``ramp_fraction``."""
    if ramp_fraction <= 0 or fraction >= ramp_fraction or full <= 1:
        return full
    return max(1, min(full, 1 + int(fraction / ramp_fraction * (full - 1) + 0.5)))


class StepClock:
    """Predicts the next step's duration from the recent ones, to stop before overrunning the budget.

    The largest of the last few steps, not their mean: a step that runs over
    is worse than one left untaken, and steps with an evaluation or a larger
    accumulation are the long ones.
    """

    def __init__(self, remembered: int = 8) -> None:
        self.recent: list[float] = []
        self.remembered = remembered

    def add(self, seconds: float) -> None:
        self.recent = [*self.recent[-(self.remembered - 1):], seconds]

    def next_step_s(self) -> float:
        return max(self.recent) if self.recent else 0.0


class BudgetTooShort(PtmError):
    """The first step alone took longer than the whole budget."""


def check_fraction(value: float, flag: str, *, upper_open: bool = True) -> None:
    """A fraction of the budget: in [0, 1) (or [0, 1] with ``upper_open=False``)."""
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise PtmError(f"{flag} {value}: must be a fraction of the budget in [0, {'1)' if upper_open else '1]'}")
