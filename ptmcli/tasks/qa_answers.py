"""Start/end logits of a question's windows -> its answer text, taken from the context through offsets.

Per window the ``N_BEST`` highest start and end logits among the passage tokens are paired; a pair
counts when it ends at or after its start and spans at most ``max_answer_len`` tokens, and scores the
sum of its two logits. The question's answer is the best pair over all its windows, cut from the
original context (so accents, case and spacing are the passage's own, not the tokenizer's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BEST = 20
DEFAULT_MAX_ANSWER_LEN = 30


@dataclass(frozen=True)
class Span:
    score: float
    start: int
    end: int
    """Token positions in the window, both inclusive."""


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, passage: np.ndarray, n_best: int = N_BEST,
               max_answer_len: int = DEFAULT_MAX_ANSWER_LEN) -> list[Span]:
    """The ``n_best`` allowed spans of one window, best first; ``passage`` marks the tokens an answer may use."""
    candidates = np.flatnonzero(passage)
    if candidates.size == 0:
        return []
    starts = candidates[np.argsort(-start_logits[candidates], kind="stable")[:n_best]]
    ends = candidates[np.argsort(-end_logits[candidates], kind="stable")[:n_best]]
    spans = [Span(float(start_logits[s] + end_logits[e]), int(s), int(e))
             for s in starts for e in ends if s <= e and e - s + 1 <= max_answer_len]
    spans.sort(key=lambda span: (-span.score, span.start, span.end))
    return spans[:n_best]


def answer_texts(contexts: Sequence[str], logits: Sequence[np.ndarray], rows, max_answer_len: int = DEFAULT_MAX_ANSWER_LEN,
                 n_best: int = N_BEST) -> list[str]:
    """The answer to each question: ``logits[i]`` ([L, 2]) belongs to window ``rows[i]`` (with its
    ``offsets`` and ``example``); a question whose windows allow no span answers ""."""
    best: list[tuple[float, str] | None] = [None] * len(contexts)
    for window_logits, row in zip(logits, rows):
        offsets = row["offsets"][: len(window_logits)]
        spans = best_spans(window_logits[:, 0], window_logits[:, 1], offsets[:, 0] >= 0, n_best, max_answer_len)
        if not spans:
            continue
        index, top = int(row["example"]), spans[0]
        if best[index] is None or top.score > best[index][0]:
            text = contexts[index][int(offsets[top.start, 0]) : int(offsets[top.end, 1])]
            best[index] = (top.score, text)
    return [found[1] if found is not None else "" for found in best]
