"""Next-sentence prediction: sentence-pair examples cut from one document, as BERT builds them.

For each document, sentences are gathered into a chunk until it reaches a
target length (the full budget, or with probability ``short_seq_prob`` a random
shorter one, so the model also sees short inputs). The chunk is split at a
random sentence boundary into segment A and its true continuation B; with
probability ``nsp_prob`` B is replaced by a run of sentences from a random
other document, and the unused sentences of the chunk go back to be read again.
Finally the longer segment is trimmed, one token at a time from a random end,
until the pair fits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ptmcli.errors import PtmError

Sentences = Sequence[np.ndarray]
RandomDocument = Callable[[random.Random], "Sentences | tuple[Sentences, Sentences | None]"]

# How often to ask for another random document before giving up on a pair
# (only an empty corpus, or one of empty documents, runs out).
_RANDOM_DOCUMENT_TRIES = 10


@dataclass
class PairExample:
    """One NSP example: segments A and B (no special tokens) and whether B is random."""

    tokens_a: np.ndarray
    tokens_b: np.ndarray
    is_random_next: bool
    word_starts_a: np.ndarray | None = None
    word_starts_b: np.ndarray | None = None


def nsp_examples(
    doc_sentences: Sentences,
    max_num_tokens: int,
    rng: random.Random,
    random_document: RandomDocument,
    short_seq_prob: float = 0.1,
    nsp_prob: float = 0.5,
    word_starts: Sentences | None = None,
) -> list[PairExample]:
    """Cut one document into NSP pair examples with at most ``max_num_tokens`` tokens each.

    ``max_num_tokens`` is the sequence length minus 3 ([CLS] and two [SEP]).
    ``random_document(rng)`` returns the sentences of a random other document
    (or ``(sentences, word_starts)`` when ``word_starts`` is given); it is asked
    only when a random next segment is needed. ``word_starts`` runs parallel to
    ``doc_sentences`` (one bool array per sentence) and is carried into the
    examples.
    """
    if max_num_tokens < 2:
        raise PtmError(f"sequence length too short for sentence pairs: {max_num_tokens} tokens left for A and B (need 2)")
    with_starts = word_starts is not None
    sentences, starts = _drop_empty(doc_sentences, word_starts)

    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = rng.randint(2, max_num_tokens)

    examples: list[PairExample] = []
    chunk: list[int] = []  # indices into `sentences`
    chunk_length = 0
    i = 0
    while i < len(sentences):
        chunk.append(i)
        chunk_length += len(sentences[i])
        if i == len(sentences) - 1 or chunk_length >= target_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a_tokens, a_starts = _concat(sentences, starts, chunk[:a_end])
            if len(chunk) == 1 or rng.random() < nsp_prob:
                is_random = True
                b_tokens, b_starts = _random_segment(rng, random_document, with_starts, target_length - len(a_tokens))
                # The sentences after A were not used: read them again for the next example.
                i -= len(chunk) - a_end
            else:
                is_random = False
                b_tokens, b_starts = _concat(sentences, starts, chunk[a_end:])
            if len(b_tokens):
                examples.append(_truncated_pair(a_tokens, a_starts, b_tokens, b_starts, is_random, max_num_tokens, rng))
            chunk, chunk_length = [], 0
        i += 1
    return examples


def _drop_empty(
    sentences: Sentences, starts: Sentences | None
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    if starts is not None and len(starts) != len(sentences):
        raise ValueError(f"word_starts has {len(starts)} entries for {len(sentences)} sentences")
    keep = [k for k, sentence in enumerate(sentences) if len(sentence)]
    kept_starts = None if starts is None else [np.asarray(starts[k], dtype=bool) for k in keep]
    return [np.asarray(sentences[k]) for k in keep], kept_starts


def _concat(
    sentences: list[np.ndarray], starts: list[np.ndarray] | None, indices: list[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    tokens = np.concatenate([sentences[k] for k in indices])
    if starts is None:
        return tokens, None
    return tokens, np.concatenate([starts[k] for k in indices])


def _random_segment(
    rng: random.Random, random_document: RandomDocument, with_starts: bool, target_length: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Consecutive sentences of a random document, from a random start, up to ``target_length`` tokens."""
    for _ in range(_RANDOM_DOCUMENT_TRIES):
        found = random_document(rng)
        other, other_starts = found if isinstance(found, tuple) else (found, None)
        if with_starts and other_starts is None:
            raise ValueError("random_document must return (sentences, word_starts) when word_starts is given")
        other, other_starts = _drop_empty(other, other_starts if with_starts else None)
        if other:
            break
    else:
        return np.zeros(0, dtype=np.int64), None
    start = rng.randint(0, len(other) - 1)
    taken: list[int] = []
    length = 0
    for k in range(start, len(other)):
        taken.append(k)
        length += len(other[k])
        if length >= target_length:
            break
    return _concat(other, other_starts, taken)


def _truncated_pair(
    a: np.ndarray,
    a_starts: np.ndarray | None,
    b: np.ndarray,
    b_starts: np.ndarray | None,
    is_random: bool,
    max_num_tokens: int,
    rng: random.Random,
) -> PairExample:
    """Trim the longer segment one token at a time, from the front or the back at random."""
    bounds = [[0, len(a)], [0, len(b)]]  # [start, end) kept of A and of B
    while (bounds[0][1] - bounds[0][0]) + (bounds[1][1] - bounds[1][0]) > max_num_tokens:
        longer = bounds[0] if bounds[0][1] - bounds[0][0] > bounds[1][1] - bounds[1][0] else bounds[1]
        if rng.random() < 0.5:
            longer[0] += 1
        else:
            longer[1] -= 1
    (a0, a1), (b0, b1) = bounds
    return PairExample(
        tokens_a=a[a0:a1],
        tokens_b=b[b0:b1],
        is_random_next=is_random,
        word_starts_a=None if a_starts is None else a_starts[a0:a1],
        word_starts_b=None if b_starts is None else b_starts[b0:b1],
    )
