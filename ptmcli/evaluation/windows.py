"""Sliding context windows over a token stream, so a fixed-length model scores text of any length.

The stream ``s[0..N-1]`` is scored as next-token predictions of ``s[1..N-1]``
(the first token has no context). Window ``k`` feeds ``s[a : b]`` with
``a = k * stride`` and ``b = min(a + context, N - 1)``, and predicts the
targets ``s[a+1 .. b]`` it has not predicted before: those after the previous
window's ``b``. So every target is scored exactly once, the first window's
with all the context before it, later ones with at least ``context - stride``
tokens of left context. ``stride == context`` gives disjoint windows (fast, less
context); a smaller stride costs ``context / stride`` times the work and gives
each token more context.

Only the tokens of the current window are held, so memory is bounded whatever
the length of the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass
class Window:
    input_ids: np.ndarray
    """``[L]`` int64 inputs, ``L <= context``."""
    labels: np.ndarray
    """``[L]`` next-token targets, ``IGNORE_INDEX`` where already scored by an earlier window."""
    scored: int
    """Targets this window scores (labels that are not ``IGNORE_INDEX``)."""


def sliding_windows(chunks: Iterable[np.ndarray], context: int, stride: int) -> Iterator[Window]:
    """Windows over the concatenation of ``chunks`` (see the module docstring)."""
    if context < 1:
        raise ValueError(f"context must be positive, got {context}")
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    source = iter(chunks)
    buffer = np.zeros(0, dtype=np.int64)
    offset = 0  # stream position of buffer[0]
    begin = 0  # stream position of the current window's first input
    scored_through = 0  # targets at positions <= this are done (position 0 is never a target)
    exhausted = False
    while True:
        needed = begin + context + 1 - offset  # the window's inputs and one target past them
        parts = [buffer]
        have = len(buffer)
        while not exhausted and have < needed:
            chunk = next(source, None)
            if chunk is None:
                exhausted = True
            else:
                parts.append(np.asarray(chunk, dtype=np.int64))
                have += len(parts[-1])
        if len(parts) > 1:
            buffer = np.concatenate(parts)
        last = offset + len(buffer) - 1  # stream position of the last token read
        end = min(begin + context, last)
        if end <= scored_through:
            return
        inputs = buffer[begin - offset : end - offset]
        labels = buffer[begin - offset + 1 : end - offset + 1].copy()
        labels[: scored_through - begin] = IGNORE_INDEX
        yield Window(inputs, labels, end - scored_through)
        scored_through = end
        if exhausted and end == last:
            return
        begin += stride
        buffer = buffer[begin - offset :]
        offset = begin
