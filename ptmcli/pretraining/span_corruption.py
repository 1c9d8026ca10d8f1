"""T5's span corruption (Raffel et al., 2020) with draws keyed by example number.

Of an example's ``n`` tokens, ``round(n * noise_density)`` are corrupted
(at least 1, at most ``n - 1``), in ``round(noise / mean_span_length)`` spans
(at least 1, and no more than either kind of token can fill). Placement is
that of T5's ``random_spans_noise_mask``: the noise tokens are cut into that
many non-empty spans at random, and so are the kept tokens, every way of
cutting equally likely; the text is then a kept run, a noise span, a kept
run, a noise span ... so it starts with kept tokens and ends with a noise
span.

The source is the text with noise span ``i`` replaced by the sentinel
``<extra_id_i>``; the target is each sentinel followed by its span, then one
more sentinel closing the last span, as the T5 paper describes its targets
(T5's released code, whose text always ends in noise, leaves that last
sentinel out). The task frames both sides (an end-of-sequence token after
each). :func:`restore` puts the spans back, so ``restore(source, target)`` is
the text itself.

Every draw is addressed by (seed, purpose, example number, index) as in
``keyed_random.py``, so any process builds any example bit-identically and a
resumed run needs no generator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.pretraining.keyed_random import keyed_uniform

# Purposes of their own, apart from the other objectives', so no draw shares a stream with another.
NOISE_CUTS, KEPT_CUTS = 301, 302
SENTINEL = "<extra_id_{}>"


@dataclass(frozen=True)
class SpanSettings:
    """The corruption rates; the defaults are T5's."""

    noise_density: float = 0.15
    mean_span_length: float = 3.0

    def check(self) -> None:
        """A PtmError naming the first setting out of range."""
        if not 0.0 < self.noise_density < 1.0:
            raise PtmError(f"--noise-density {self.noise_density}: must be between 0 and 1 (the share of tokens "
                           "corrupted, neither none nor all)")
        if not self.mean_span_length >= 1.0:
            raise PtmError(f"--mean-span-length {self.mean_span_length}: must be at least 1 (a span has a token or more)")

    def counts(self, length: int) -> tuple[int, int]:
        """(noise tokens, noise spans) of an example of ``length`` tokens; (0, 0) below two tokens."""
        if length < 2:
            return 0, 0
        noise = min(max(int(round(length * self.noise_density)), 1), length - 1)
        spans = max(1, int(round(noise / self.mean_span_length)))
        # Each span needs a noise token, and a kept run before it.
        return noise, min(spans, noise, length - noise)

    def source_length(self, length: int) -> int:
        """Tokens of the unframed source of a ``length``-token example."""
        noise, spans = self.counts(length)
        return length - noise + spans

    def target_length(self, length: int) -> int:
        """Tokens of the unframed target: each span behind its sentinel, and the closing sentinel."""
        noise, spans = self.counts(length)
        return noise + spans + 1


@dataclass
class SpanCorruption:
    """One example's corruption."""

    source: np.ndarray
    """The text, each noise span replaced by its sentinel."""
    target: np.ndarray
    """Sentinel 0, span 0, sentinel 1, span 1 ..., then the closing sentinel."""
    noise: np.ndarray
    """``[n]`` bool: the tokens corrupted."""
    span_lengths: np.ndarray
    """Tokens of each noise span, in text order."""


def random_segmentation(items: int, segments: int, seed: int, purpose: int, number: int) -> np.ndarray:
    """Lengths of ``segments`` non-empty runs that add up to ``items``, every cutting equally likely.

    The cuts are a uniformly chosen ``segments - 1`` of the ``items - 1`` places between two items: the
    places with the lowest keyed draws.
    """
    if segments < 1 or segments > items:
        raise ValueError(f"cannot cut {items} items into {segments} non-empty runs")
    if segments == 1:
        return np.array([items], dtype=np.int64)
    keys = keyed_uniform(seed, purpose, number, items - 1)[0]
    cuts = np.sort(np.argsort(keys, kind="stable")[: segments - 1]) + 1
    return np.diff(np.concatenate([[0], cuts, [items]])).astype(np.int64)


def noise_mask(length: int, settings: SpanSettings, seed: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(``[length]`` bool noise mask, the noise spans' lengths): kept run, noise span, kept run ... noise span."""
    noise, spans = settings.counts(length)
    mask = np.zeros(length, dtype=bool)
    if not spans:
        return mask, np.zeros(0, dtype=np.int64)
    noise_lengths = random_segmentation(noise, spans, seed, NOISE_CUTS, number)
    kept_lengths = random_segmentation(length - noise, spans, seed, KEPT_CUTS, number)
    starts = np.cumsum(kept_lengths) + np.concatenate([[0], np.cumsum(noise_lengths)[:-1]])
    for start, size in zip(starts, noise_lengths):
        mask[start:start + size] = True
    return mask, noise_lengths


def corrupt(tokens: Sequence[int] | np.ndarray, sentinel_ids: Sequence[int], settings: SpanSettings, seed: int,
            number: int) -> SpanCorruption:
    """Example ``number``'s source and target; ``sentinel_ids[i]`` is ``<extra_id_i>``'s id."""
    tokens = np.asarray(tokens, dtype=np.int64)
    mask, lengths = noise_mask(len(tokens), settings, seed, number)
    if len(lengths) + 1 > len(sentinel_ids):
        raise ValueError(f"{len(lengths)} spans need {len(lengths) + 1} sentinels; {len(sentinel_ids)} given")
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    # A noise token opens a span where the token before it is kept (or where the text starts).
    opens = mask & ~np.concatenate([[False], mask[:-1]])
    span_of = np.cumsum(opens) - 1  # the span number of each noise token
    source = np.where(opens, sentinels[np.maximum(span_of, 0)], tokens)[~mask | opens]
    target_parts = []
    for i, start in enumerate(np.flatnonzero(opens)):
        target_parts += [sentinels[i:i + 1], tokens[start:start + lengths[i]]]
    target = np.concatenate([*target_parts, sentinels[len(lengths):len(lengths) + 1]])
    return SpanCorruption(source.astype(np.int64), target.astype(np.int64), mask, lengths)


def restore(source: Sequence[int], target: Sequence[int], sentinel_ids: Sequence[int]) -> np.ndarray:
    """The text again: each sentinel of ``source`` replaced by what follows it in ``target``."""
    source, target = np.asarray(source, dtype=np.int64), np.asarray(target, dtype=np.int64)
    index = {int(s): i for i, s in enumerate(sentinel_ids)}
    marks = [k for k, t in enumerate(target.tolist()) if t in index]
    spans = {index[int(target[a])]: target[a + 1:b] for a, b in zip(marks, marks[1:])}
    pieces = [spans[index[t]] if t in index else np.array([t], dtype=np.int64) for t in source.tolist()]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def tokenizer_sentinels(tokenizer) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>`` ... for as long as the tokenizer has them."""
    found: list[int] = []
    while (token := tokenizer.token_to_id(SENTINEL.format(len(found)))) is not None:
        found.append(int(token))
    return found
