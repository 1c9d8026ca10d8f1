"""ALBERT's sentence-order pairs, planned on sentence lengths as BERT's pairs are (``pair_plans``).

A document is cut into chunks of whole sentences up to a target length (a
shorter one with probability ``short_seq_prob``), each chunk split at a random
sentence boundary into A and B, and with probability ``swap_prob`` the pair is
given as B A. B is always the text right after A in the same document, never
another document's, so the only signal left is the order (Lan et al., 2020).

A plan has the layout of a pair plan, the segments in the order they are
shown: ``[row, first_start, first_end, row, second_start, second_end,
swapped]``, so ``pair_plans.build_pairs`` builds it (keyed trimming included)
and the example's ``is_random_next`` is the sentence-order label (1 = swapped,
as transformers' ``sentence_order_label``).
"""

from __future__ import annotations

import random

from ptmcli.errors import PtmError
from ptmcli.pretraining.pair_plans import Spans


def plan_sentence_order(row: int, spans: Spans, max_num_tokens: int, rng: random.Random,
                        short_seq_prob: float = 0.1, swap_prob: float = 0.5) -> list[list[int]]:
    """The sentence-order plans of one document (``row``, its sentence ``spans``)."""
    if max_num_tokens < 2:
        raise PtmError(f"sequence length too short for sentence pairs: {max_num_tokens} tokens left for A and B (need 2)")
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)

    starts, ends = (values.tolist() for values in spans)
    plans: list[list[int]] = []
    first = 0  # first sentence of the chunk being gathered
    for last in range(len(starts)):
        if last < len(starts) - 1 and ends[last] - starts[first] < target_length:
            continue
        # Empty sentences were dropped, so the chunk's sentences are adjacent: one token range.
        chunk_start, chunk_end = starts[first], ends[last]
        if last > first:
            split = ends[first + rng.randint(1, last - first) - 1]
        elif chunk_end - chunk_start >= 2:
            # One sentence: split it at a random token boundary, so that A and B are still consecutive
            # text (ALBERT would have fetched B from another document, which SOP never does).
            split = rng.randint(chunk_start + 1, chunk_end - 1)
        else:
            first = last + 1
            continue  # a one-token sentence has no order to predict
        a, b = (chunk_start, split), (split, chunk_end)
        swapped = rng.random() < swap_prob
        shown_first, shown_second = (b, a) if swapped else (a, b)
        plans.append([row, *shown_first, row, *shown_second, int(swapped)])
        first = last + 1
    return plans
