"""MASS's masked sequence-to-sequence example (Song et al., 2019) with draws keyed by example number.

Of an example's ``n`` tokens, one contiguous fragment of ``k = round(n *
mass_ratio)`` tokens (at least 1; at most ``n - 1`` once ``n >= 2``, so the
encoder keeps a token) starting at a uniformly drawn place is masked: every
one of its tokens becomes the mask token in the encoder's source. The decoder
predicts exactly that fragment.

Positions: the decoder row is as long as the source and aligned with it, as
in MASS, where a fragment token keeps its position in the sentence. Decoder
position ``p`` predicts the original token at source position ``p``; labels
are -100 everywhere but the fragment. The decoder reads the fragment shifted
right one place, and the mask token at every other position, the fragment's
first position included (the token before the fragment is no part of it).
So at fragment position ``p`` the decoder sees the fragment up to ``p - 1``
and nothing else of the text, and must take the rest from the encoder.

Every draw is addressed by (seed, purpose, example number, index) as in
``keyed_random.py``, so any process builds any example bit-identically and a
resumed run needs no generator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ptmcli.data.seq2seq import IGNORE_INDEX
from ptmcli.errors import PtmError
from ptmcli.pretraining.keyed_random import keyed_uniform

FRAGMENT_START = 401  # a purpose of its own, apart from the other objectives'


def check_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise PtmError(f"--mass-ratio {ratio}: must be between 0 and 1 (the share of each example masked as one fragment)")


def fragment_length(length: int, ratio: float) -> int:
    """Tokens of the fragment of a ``length``-token example."""
    if length < 1:
        return 0
    size = max(1, int(round(length * ratio)))
    return min(size, length - 1) if length >= 2 else size


def fragment(length: int, ratio: float, seed: int, number: int) -> tuple[int, int]:
    """(start, size) of example ``number``'s fragment, the start uniform over the places it fits."""
    size = fragment_length(length, ratio)
    places = length - size + 1
    start = min(int(keyed_uniform(seed, FRAGMENT_START, number, 1)[0, 0] * places), places - 1) if size else 0
    return start, size


@dataclass
class MassExample:
    """One example: three aligned rows of the same length (prefix, text, suffix)."""

    source: np.ndarray
    """The framed text, the fragment's tokens replaced by the mask token."""
    decoder_input: np.ndarray
    """The mask token, but at fragment position ``p > start`` the original token at ``p - 1``."""
    labels: np.ndarray
    """The original tokens at the fragment's positions, -100 elsewhere."""
    start: int
    """Where the fragment starts, in the framed rows."""
    size: int


def mass_example(tokens: Sequence[int] | np.ndarray, mask_id: int, ratio: float, seed: int, number: int,
                 prefix: Sequence[int] = (), suffix: Sequence[int] = ()) -> MassExample:
    text = np.concatenate([np.asarray(prefix, dtype=np.int64), np.asarray(tokens, dtype=np.int64),
                           np.asarray(suffix, dtype=np.int64)])
    start, size = fragment(len(tokens), ratio, seed, number)
    start += len(prefix)
    stop = start + size
    source = text.copy()
    source[start:stop] = mask_id
    labels = np.full(len(text), IGNORE_INDEX, dtype=np.int64)
    labels[start:stop] = text[start:stop]
    decoder_input = np.full(len(text), mask_id, dtype=np.int64)
    decoder_input[start + 1:stop] = text[start:stop - 1]
    return MassExample(source, decoder_input, labels, start, size)
