"""SpanBERT's span masking (Joshi et al., 2020) with draws keyed by example number.

Spans are runs of whole words: a length in words is drawn from a geometric
distribution (p = 0.2) clipped at 10 words (mean 3.8), a start word is drawn
uniformly, and spans are placed until ``mask_prob`` of the row's tokens are
chosen. A span stays inside one run of ordinary tokens (never across [CLS],
[SEP] or a document separator) and keeps at least one unchosen token on each
side, so its two boundary tokens are real inputs for the span boundary
objective and spans can be read back from the labels. 80/10/10 ([MASK],
random token, unchanged) is decided once per span.

Keeping the length distribution honest: a start that overlaps or touches an
earlier span is redrawn with the same length (rejecting the span would favour
short ones), and every span drawn is kept whole. Whether to draw another span
depends only on the tokens chosen so far: another one is drawn while the
budget has more than E[X^2] / 2E[X] tokens left, which puts the expected
share of chosen tokens at ``mask_prob`` (the mean overshoot of a renewal
process, E[X^2] / 2E[X] for span sizes X, is what the last span adds past the
point where drawing stops) while the kept spans stay a plain sample of the
clipped geometric (a rule that looked at the next span's length
before keeping it would favour short spans).

Every draw is addressed by (seed, purpose, example number, index) as in
``keyed_masking.py``, so any process builds any row bit-identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ptmcli.objectives.mlm import IGNORE_INDEX
from ptmcli.pretraining.keyed_masking import KeyedMasker
from ptmcli.pretraining.keyed_random import REPLACEMENT, keyed_uniform

# Purposes of their own, far from keyed_random's, so span draws share no stream with token masking.
SPAN_LENGTH, SPAN_START, SPAN_ACTION = 101, 102, 103
GEOMETRIC_P = 0.2
MAX_SPAN_WORDS = 10
# Starts tried for one span before its length is given up; with 15% masked, a fit is nearly always found.
STARTS_PER_SPAN = 16


def span_length_distribution(p: float = GEOMETRIC_P, max_words: int = MAX_SPAN_WORDS) -> np.ndarray:
    """P(length = 1 .. max_words): the geometric distribution renormalised after clipping."""
    weights = p * (1.0 - p) ** np.arange(max_words)
    return weights / weights.sum()


@dataclass
class SpanMasks:
    """What the masker makes of a batch: the inputs, the labels and each chosen token's span boundaries."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    """-100 where nothing is predicted."""
    left: torch.Tensor
    """Column of the token just before the chosen token's span (0 elsewhere)."""
    right: torch.Tensor
    """Column of the token just after it (0 elsewhere)."""
    offset: torch.Tensor
    """The chosen token's offset from its span's first token (0 elsewhere)."""


def word_ranges(real: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first token, end token, run number) of each word of a row; a run is a stretch of ordinary tokens."""
    width = len(real)
    begins = real & (starts | ~np.concatenate([[False], real[:-1]]))
    first = np.flatnonzero(begins)
    # A word ends at the next word's start or at the next special token, whichever is first.
    next_special = np.minimum.accumulate(np.where(real, width, np.arange(width))[::-1])[::-1]
    following = np.append(first[1:], width)
    ends = np.minimum(following, next_special[first])
    runs = np.cumsum(~real)[first]
    return first, ends, runs


class SpanMasker:
    """Masks collated rows in spans of whole words; ``numbers`` name the examples the rows hold."""

    def __init__(self, vocab_size: int, mask_id: int, special_ids: Sequence[int], mask_prob: float,
                 replace_prob: float = 0.8, random_prob: float = 0.1) -> None:
        self.tokens = KeyedMasker(vocab_size, mask_id, special_ids, mask_prob, replace_prob, random_prob)
        self.mask_prob = mask_prob
        distribution = span_length_distribution()
        self.cumulative = np.cumsum(distribution)
        lengths = np.arange(1, len(distribution) + 1)
        self.overshoot_words = float(distribution @ lengths**2) / (2.0 * float(distribution @ lengths))

    def __call__(self, input_ids: torch.Tensor, special_mask: torch.Tensor, word_starts: torch.Tensor,
                 numbers: np.ndarray, seed: int) -> SpanMasks:
        ids = input_ids.numpy()
        real = ~special_mask.numpy().astype(bool)
        starts = word_starts.numpy().astype(bool)
        rows, width = ids.shape
        chosen = np.zeros((rows, width), dtype=bool)
        left = np.zeros((rows, width), dtype=np.int64)
        right = np.zeros((rows, width), dtype=np.int64)
        offset = np.zeros((rows, width), dtype=np.int64)
        action = np.zeros((rows, width))
        for r in range(rows):
            self._mask_row(real[r], starts[r], int(numbers[r]), seed, chosen[r], left[r], right[r], offset[r], action[r])
        t = self.tokens
        picks = t.pool[(keyed_uniform(seed, REPLACEMENT, numbers, width) * len(t.pool)).astype(np.int64)]
        to_mask = chosen & (action < t.replace_prob)
        to_random = chosen & (action >= t.replace_prob) & (action < t.replace_prob + t.random_prob)
        masked = np.where(to_random, picks, np.where(to_mask, t.mask_id, ids))
        labels = np.where(chosen, ids, IGNORE_INDEX)
        return SpanMasks(*(torch.from_numpy(a) for a in (masked, labels, left, right, offset)))

    def _mask_row(self, real, starts, number, seed, chosen, left, right, offset, action) -> None:
        first, ends, runs = word_ranges(real, starts)
        if not len(first):
            return
        budget = self.mask_prob * int(real.sum())
        # Each placed span takes a token or more, so this leaves room for as many that find no place.
        attempts = 2 * int(budget) + 4
        lengths = np.minimum(np.searchsorted(self.cumulative, keyed_uniform(seed, SPAN_LENGTH, number, attempts)[0], side="right") + 1,
                             len(self.cumulative))
        start_draws = keyed_uniform(seed, SPAN_START, number, attempts * STARTS_PER_SPAN)[0]
        actions = keyed_uniform(seed, SPAN_ACTION, number, attempts)[0]
        # The expected overshoot E[X^2] / 2E[X] of span sizes in tokens, at this row's tokens per word.
        overshoot = self.overshoot_words * int(real.sum()) / len(first)
        count = 0
        for attempt in range(attempts):
            if budget - count <= overshoot:
                return
            words = int(lengths[attempt])
            for draw in start_draws[attempt * STARTS_PER_SPAN:(attempt + 1) * STARTS_PER_SPAN]:
                head = int(draw * len(first))
                tail = head + words - 1
                if tail >= len(first) or runs[tail] != runs[head]:
                    continue
                begin, end = int(first[head]), int(ends[tail])
                # Untouched on both sides: the boundary tokens stay real inputs.
                if chosen[max(begin - 1, 0):end + 1].any():
                    continue
                self._choose(begin, end, actions[attempt], chosen, left, right, offset, action)
                count += end - begin
                break

    @staticmethod
    def _choose(begin, end, draw, chosen, left, right, offset, action) -> None:
        chosen[begin:end] = True
        left[begin:end] = begin - 1
        right[begin:end] = end
        offset[begin:end] = np.arange(end - begin)
        action[begin:end] = draw
