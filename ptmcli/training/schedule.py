"""Learning-rate schedules as pure functions of the step, so resuming needs only the step."""

from __future__ import annotations

import math

# ULMFiT's slanted triangular schedule: the lowest rate is the peak / STLR_RATIO.
STLR_RATIO = 32.0


def lr_multiplier(step: int, *, warmup_steps: int, max_steps: int, schedule: str = "linear", min_ratio: float = 0.0) -> float:
    """Factor applied to the peak learning rate at ``step`` (0-based, before the update).

    ``stlr`` is ULMFiT's slanted triangular rate (Howard and Ruder, 2018): a short
    linear rise over ``warmup_steps`` (their cut_frac of the run) from peak/32 to
    the peak, then a long linear fall back to peak/32.
    """
    if schedule == "stlr":
        cut = max(1, warmup_steps)
        if step < cut:
            p = step / cut
        else:
            p = 1.0 - (step - cut) / max(1, max_steps - cut)
        return (1.0 + max(0.0, p) * (STLR_RATIO - 1.0)) / STLR_RATIO
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "linear":
        return max(min_ratio, 1.0 - progress * (1.0 - min_ratio))
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")
