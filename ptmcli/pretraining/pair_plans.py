"""BERT's sentence pairs, planned on sentence lengths and built only for the rows a process trains on.

Planning follows ``objectives/nsp.py`` (BERT's recipe) draw for draw: a target
length per document, chunks of whole sentences, a random split into A and B,
and with probability ``nsp_prob`` a B taken from a random document while the
chunk's unused sentences are read again. A plan names token ranges only:
``[row, a_start, a_end, b_row, b_start, b_end, is_random]``, so it is cheap
to make for every example of a global batch and small to keep in a checkpoint.

Building a plan reads the tokens and trims the longer segment one token at a
time from a random end until the pair fits. Those draws are keyed by the
example's number (``keyed_random``), so any process builds any example alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.objectives.nsp import PairExample
from ptmcli.pretraining.keyed_random import TRIM, keyed_uniform

Spans = tuple[np.ndarray, np.ndarray]
RandomDocument = Callable[[random.Random], tuple[int, Spans]]

# How often to ask for another random document before giving up on a pair, as objectives/nsp.py.
_RANDOM_DOCUMENT_TRIES = 10


def sentence_spans(sentence_ends: np.ndarray) -> Spans:
    """``(starts, ends)`` token offsets of a document's non-empty sentences."""
    ends = np.asarray(sentence_ends, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    keep = ends > starts
    return starts[keep], ends[keep]


def plan_pairs(row: int, spans: Spans, max_num_tokens: int, rng: random.Random, random_document: RandomDocument,
               short_seq_prob: float = 0.1, nsp_prob: float = 0.5) -> list[list[int]]:
    """The pair plans of one document (``row``, its sentence ``spans``), at most ``max_num_tokens`` each once trimmed."""
    if max_num_tokens < 2:
        raise PtmError(f"sequence length too short for sentence pairs: {max_num_tokens} tokens left for A and B (need 2)")
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)

    starts, ends = (values.tolist() for values in spans)
    plans: list[list[int]] = []
    chunk: list[int] = []  # indices into the sentences
    chunk_length = 0
    i = 0
    while i < len(starts):
        chunk.append(i)
        chunk_length += ends[i] - starts[i]
        if i == len(starts) - 1 or chunk_length >= target_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            # Empty sentences were dropped, so consecutive sentences are adjacent: A and B are single ranges.
            a_start, a_stop = starts[chunk[0]], ends[chunk[a_end - 1]]
            if len(chunk) == 1 or rng.random() < nsp_prob:
                b = _random_segment(rng, random_document, target_length - (a_stop - a_start))
                # The sentences after A were not used: read them again for the next example.
                i -= len(chunk) - a_end
                is_random = 1
            else:
                b = (row, starts[chunk[a_end]], ends[chunk[-1]])
                is_random = 0
            if b is not None:
                plans.append([row, a_start, a_stop, *b, is_random])
            chunk, chunk_length = [], 0
        i += 1
    return plans


def _random_segment(rng: random.Random, random_document: RandomDocument, target_length: int) -> tuple[int, int, int] | None:
    """Consecutive sentences of a random document, from a random start, up to ``target_length`` tokens."""
    for _ in range(_RANDOM_DOCUMENT_TRIES):
        other_row, (starts, ends) = random_document(rng)
        if len(starts):
            break
    else:
        return None
    start = rng.randint(0, len(starts) - 1)
    # Sentences from `start` until they reach the target (at least one), as far as the document goes.
    reached = np.cumsum(ends[start:] - starts[start:])
    stop = start + min(int(np.searchsorted(reached, target_length)), len(reached) - 1)
    return other_row, int(starts[start]), int(ends[stop])


def pair_length(plan: list[int], max_num_tokens: int) -> int:
    """Tokens of A and B once trimmed (no special tokens)."""
    _row, a_start, a_stop, _b_row, b_start, b_stop, _ = plan
    return min(a_stop - a_start + b_stop - b_start, max_num_tokens)


def build_pairs(plans: list[list[int]], numbers: np.ndarray, read_row: Callable[[int], object], max_num_tokens: int, seed: int,
                with_word_starts: bool) -> list[PairExample]:
    """The examples of ``plans`` (numbered ``numbers``); ``read_row(row)`` gives a shard row (``input_ids``, ``word_starts``)."""
    # Tokens to trim from each pair; one call draws for all of them.
    excesses = [max(0, a_stop - a_start + b_stop - b_start - max_num_tokens) for _r, a_start, a_stop, _b, b_start, b_stop, _ in plans]
    draws = keyed_uniform(seed, TRIM, numbers, max(excesses, default=0)).tolist() if plans else []
    return [_build_pair(plan, read_row, row_draws[:excess], with_word_starts) for plan, excess, row_draws in zip(plans, excesses, draws)]


def _build_pair(plan: list[int], read_row: Callable[[int], object], trims: list[float], with_word_starts: bool) -> PairExample:
    row, a_start, a_stop, b_row, b_start, b_stop, is_random = plan
    bounds = [[a_start, a_stop], [b_start, b_stop]]
    for draw in trims:
        longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
        if draw < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1
    (a0, a1), (b0, b1) = bounds
    first, second = read_row(row), read_row(b_row)
    return PairExample(
        tokens_a=np.asarray(first.input_ids[a0:a1], dtype=np.int64),
        tokens_b=np.asarray(second.input_ids[b0:b1], dtype=np.int64),
        is_random_next=bool(is_random),
        word_starts_a=_part(first.word_starts, a0, a1) if with_word_starts else None,
        word_starts_b=_part(second.word_starts, b0, b1) if with_word_starts else None,
    )


def _part(values: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if values is None else values[start:stop]
