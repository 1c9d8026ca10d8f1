"""ALBERT's n-gram masking: the masked units are spans of 1..N whole words, keyed by example number.

For each row, span lengths n are drawn one after another with probability
proportional to 1/n, and words are visited in a random order: a span of the
pending length starts at the first word visited where it fits (within the
word's segment, so a span never crosses [CLS], [SEP] or padding, and over no
word already chosen), shortened only where it would take more than the row's
share, until ``round(mask_prob * tokens)`` tokens are chosen. Every draw (the
visiting order, the lengths, the 80/10/10 action of each span) is addressed
by the example's number and a place in its row, so a row is masked alike by
whichever process builds it, whatever batch it is in.
"""

from __future__ import annotations

import numpy as np

from ptmcli.pretraining.keyed_random import ACTION, keyed_uniform

# Draw purposes of their own (``keyed_random``'s numbering), so n-gram masking shifts no other draw.
VISIT_ORDER, SPAN_LENGTH = 21, 22


def span_length_weights(max_ngram: int) -> np.ndarray:
    """P(n) for n = 1..max_ngram, proportional to 1/n."""
    weights = 1.0 / np.arange(1, max_ngram + 1)
    return weights / weights.sum()


def choose_ngrams(special: np.ndarray, word_starts: np.ndarray | None, numbers: np.ndarray, seed: int,
                  mask_prob: float, max_ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """``(chosen, action)`` for ``[rows, width]`` bool ``special`` (never chosen) and ``word_starts``.

    ``chosen`` marks the tokens to predict; ``action`` is one uniform draw per span, repeated over
    its tokens, that the caller turns into [MASK] / random / kept. ``word_starts`` None: every
    token is a word.
    """
    rows, width = special.shape
    starts = np.ones_like(special) if word_starts is None else word_starts | special
    starts[:, 1:] |= special[:, :-1]  # the token after [CLS]/[SEP] begins a word
    word_counts = (starts & ~special).sum(axis=1)
    draws = int(word_counts.max(initial=0))
    order = keyed_uniform(seed, VISIT_ORDER, numbers, draws)
    lengths = keyed_uniform(seed, SPAN_LENGTH, numbers, draws)
    actions = keyed_uniform(seed, ACTION, numbers, draws)
    cumulative = np.cumsum(span_length_weights(max_ngram))
    chosen = np.zeros((rows, width), dtype=bool)
    action = np.zeros((rows, width), dtype=np.float64)
    for r in range(rows):
        count = int(word_counts[r])
        if not count:
            continue
        boundaries = np.flatnonzero(starts[r])
        begins = boundaries[~special[r, boundaries]]
        # A word ends where the next word or special token begins (or at the row's end).
        ends = np.append(boundaries, width)[np.searchsorted(boundaries, begins, side="right")]
        segment = np.cumsum(special[r])[begins]
        # Words left in the word's segment from it onwards, itself included.
        left_in_segment = np.searchsorted(segment, segment, side="right") - np.arange(count)
        target = max(1, round(mask_prob * int((~special[r]).sum())))
        taken, covered, placed = 0, np.zeros(count, dtype=bool), 0
        n = _length(lengths[r, 0], cumulative, max_ngram)
        for word in np.argsort(order[r, :count], kind="stable"):
            if taken >= target:
                break
            # A start that cannot take the drawn length (overlap, end of segment) passes it on to the next
            # start, rather than drawing again: skipping long spans more often would favour short ones.
            if n > left_in_segment[word] or covered[word:word + n].any():
                continue
            # Shorter until it fits the row's share, as ALBERT backs off; a word alone too long is skipped.
            fits = n
            while fits > 1 and taken + ends[word + fits - 1] - begins[word] > target:
                fits -= 1
            size = int(ends[word + fits - 1] - begins[word])
            if taken + size > target:
                continue
            covered[word:word + fits] = True
            chosen[r, begins[word]:ends[word + fits - 1]] = True
            action[r, begins[word]:ends[word + fits - 1]] = actions[r, placed]
            taken += size
            placed += 1
            n = _length(lengths[r, placed % draws], cumulative, max_ngram)
    return chosen, action


def _length(draw: float, cumulative: np.ndarray, max_ngram: int) -> int:
    """The span length (1..max_ngram) a uniform draw picks, given P(n)'s running sum."""
    return min(int(np.searchsorted(cumulative, draw, side="right")) + 1, max_ngram)
