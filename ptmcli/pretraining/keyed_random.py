"""Random numbers addressed by (seed, example number, position), not drawn from a stream.

The draws for an example depend only on its number in the run's example
sequence, so any process can build any rows of a global batch and get the
very rows one process would have built, and a resumed run needs no generator
state to continue. Draw ``j`` of a key is output ``j + 1`` of splitmix64
started at the key, which is a hash of (seed, purpose, example number).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MULTIPLIER_1 = np.uint64(0xBF58476D1CE4E5B9)
_MULTIPLIER_2 = np.uint64(0x94D049BB133111EB)
_BELOW_2_64 = (1 << 64) - 1

# What a draw is for: separate streams, so masking more tokens never shifts another decision.
CHOOSE, ACTION, REPLACEMENT, TRIM = 1, 2, 3, 4


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function (uint64 arithmetic wraps, as it should)."""
    z = (z ^ (z >> np.uint64(30))) * _MULTIPLIER_1
    z = (z ^ (z >> np.uint64(27))) * _MULTIPLIER_2
    return z ^ (z >> np.uint64(31))


def _keys(seed: int, purpose: int, numbers: np.ndarray) -> np.ndarray:
    base = _mix(np.array([(seed & _BELOW_2_64)], dtype=np.uint64) + _GOLDEN)
    base = _mix(base ^ np.uint64(purpose))
    return _mix(base ^ np.asarray(numbers, dtype=np.int64).astype(np.uint64))


def keyed_uniform(seed: int, purpose: int, numbers, width: int) -> np.ndarray:
    """``[len(numbers), width]`` float64 uniforms in [0, 1): draws ``0..width-1`` of each example number."""
    keys = _keys(seed, purpose, np.atleast_1d(numbers))
    steps = (np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    return (_mix(keys[:, None] + steps) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
