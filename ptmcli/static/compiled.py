"""The compiled per-window loops' common ground: numba when installed, and when a trainer takes such a loop.

word2vec's CBOW and fastText's skip-gram do little arithmetic per window, so
the batched torch path spends its time gathering and scattering rows; a loop
compiled with numba does the original's sequential SGD at about gensim's
speed (docs/results.md, "Static word vectors"). numba is a dependency, but
the torch path still serves where it is missing, on CUDA, and for the
settings the loops do not cover.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ptmcli.errors import PtmError

try:
    import numba
except ImportError:
    numba = None

KERNELS = ("auto", "batched", "fused")
# A score this far from 0 takes no update, as in gensim (whose sigmoid table ends there): the
# probability is already within 0.25% of 0 or 1.
SATURATED = np.float32(6.0)
LIMIT = np.float32(30.0)  # scores are clipped here before exp, which would overflow far beyond


def available() -> bool:
    return numba is not None


def compiled(function: Callable | None = None, *, inline: bool = False) -> Callable:
    """``function`` compiled to machine code (cached on disk), or left as Python without numba.

    ``inline=True`` (``@compiled(inline=True)``): a helper copied into each compiled caller, so the
    per-draw step inside the loops costs no call.
    """
    def wrap(function: Callable) -> Callable:
        if numba is None:
            return function
        return numba.njit(fastmath=True, nogil=True, cache=True, inline="always" if inline else "never")(function)

    return wrap if function is None else wrap(function)


def use_compiled_loop(kernel: str, possible: bool, what: str) -> bool:
    """Whether a trainer takes its compiled loop: ``kernel`` is the setting, ``possible`` whether the loop
    covers this run, ``what`` names the loop for the message when ``fused`` is asked for and cannot be."""
    if kernel == "fused":
        if not possible:
            raise PtmError(f"the fused kernel is {what} only")
        if numba is None:
            raise PtmError(f"the fused kernel ({what}) needs numba: pip install numba")
        return True
    return kernel == "auto" and possible and numba is not None


def rates_along(rate: Callable[[float], float], positions: int) -> np.ndarray:
    """float32 learning rate at each of a chunk's ``positions``, falling as ``rate`` does across the chunk."""
    marks = np.linspace(0.0, 1.0, 17)
    return np.interp(np.arange(positions) / max(1, positions), marks, [rate(mark) for mark in marks]).astype(np.float32)


@compiled(inline=True)
def negative_sampling_step(hidden, error, outputs, target, noise, slot, alpha):  # pragma: no cover - compiled
    """One input's SGD step against its target (label 1) and the noise words ``noise[slot]`` (label 0), as
    word2vec.c does.

    Each output row is updated at once; the input's step accumulates in ``error`` (``[d]``, added to the
    input rows by the caller). A noise word that is the target is skipped, as in the original. Returns
    the summed loss ``-log sigmoid(+-score)``.
    """
    dim = hidden.shape[0]
    loss = 0.0
    for draw in range(noise.shape[1] + 1):
        if draw == 0:
            row, label = target, np.float32(1.0)
        else:
            row, label = noise[slot, draw - 1], np.float32(0.0)
            if row == target:
                continue
        score = np.float32(0.0)
        for k in range(dim):
            score += hidden[k] * outputs[row, k]
        clipped = min(max(score, -LIMIT), LIMIT)
        # sigmoid(x) = 1 / (1 + e^-x): -log of it is log(1 + e^-x), -log of 1 - it that plus x. (log, not
        # log1p: log1p costs a quarter of the whole loop, and a lost 1e-8 of loss is nothing.)
        odds = np.exp(-clipped)
        probability = np.float32(1.0) / (np.float32(1.0) + odds)
        loss += np.log(np.float32(1.0) + odds) + (clipped if draw > 0 else np.float32(0.0))
        if score <= -SATURATED or score >= SATURATED:  # counted in the loss, but no update
            continue
        gradient = (label - probability) * alpha
        for k in range(dim):
            error[k] += gradient * outputs[row, k]
            outputs[row, k] += gradient * hidden[k]
    return loss
