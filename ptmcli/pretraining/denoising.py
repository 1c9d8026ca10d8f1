"""BART's text corruption (Lewis et al., 2020) with draws keyed by example number.

An example is a block of whole sentences. Its source for the encoder is the
block corrupted in this order, the order of fairseq's denoising dataset:

1. sentence permutation: ``ceil(permute_sentences * n)`` of the block's ``n``
   sentences, chosen at random, are shuffled among their places;
2. text infilling: ``infill_ratio`` of the words are covered by spans whose
   lengths in words are drawn from Poisson(``poisson_lambda``) until they add
   up to the budget (the last one cut to fit). Each span becomes ONE mask
   token; a span of length 0 inserts a mask between two words. Spans are
   placed uniformly among the other words and never overlap, so exactly the
   budget is covered and every mask of the source is one span;
3. token masking and token deletion: of the words no span covers,
   ``mask_ratio`` (of all words) have every token replaced by the mask token
   and ``delete_ratio`` are dropped;
4. ``mask_random`` of the mask tokens (infilling's and masking's) become a
   random ordinary token instead, as fairseq's ``--mask-random``;
5. document rotation: with probability ``rotate_ratio`` the source starts at
   a random token, the tokens before it moved to the end.

Words are the shards' whole words when they record word starts, else single
tokens; a sentence always starts a word. The target is the block unchanged.

Every draw is addressed by (seed, purpose, example number, index) as in
``keyed_random.py``, so any process builds any example bit-identically and a
resumed run needs no generator state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.pretraining.keyed_random import keyed_uniform

# Purposes of their own, apart from the MLM maskers', so no corruption shares a stream with another.
PERMUTE_CHOOSE, PERMUTE_ORDER, SPAN_LENGTH, SPAN_PLACE, WORD_NOISE, RANDOM_WHICH, RANDOM_PICK, ROTATE = range(201, 209)


@dataclass(frozen=True)
class NoiseSettings:
    """The rates of the corruptions; the defaults are fairseq's bart.large recipe."""

    infill_ratio: float = 0.3
    poisson_lambda: float = 3.5
    mask_ratio: float = 0.0
    delete_ratio: float = 0.0
    permute_sentences: float = 1.0
    rotate_ratio: float = 0.0
    mask_random: float = 0.1

    def check(self) -> None:
        """A PtmError naming the first setting out of range."""
        for name in ("infill_ratio", "mask_ratio", "delete_ratio", "permute_sentences", "rotate_ratio", "mask_random"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise PtmError(f"--{name.replace('_', '-')} {value}: must be between 0 and 1")
        if not self.poisson_lambda > 0:
            raise PtmError(f"--poisson-lambda {self.poisson_lambda}: must be positive (the mean span length in words)")
        if self.infill_ratio + self.mask_ratio + self.delete_ratio > 1.0:
            raise PtmError(f"--infill-ratio {self.infill_ratio} + --mask-ratio {self.mask_ratio} + --delete-ratio "
                           f"{self.delete_ratio}: together they exceed every word (at most 1)")


@dataclass
class Corruption:
    """One example's source and what was done to it (tests and statistics read the latter)."""

    source: np.ndarray
    """The corrupted tokens, unframed."""
    order: np.ndarray
    """The sentences in their new order (indices into the original ones)."""
    span_words: np.ndarray
    """Infilling spans' lengths in words, in the order drawn (zeros included; the last one cut to fit)."""
    span_tokens: np.ndarray
    """Tokens each span covered, in the order the spans stand in the source."""
    masked: np.ndarray
    """Token positions (in the permuted text) that token masking replaced."""
    deleted: np.ndarray
    """Token positions (in the permuted text) that token deletion removed."""
    rotation: int
    """Where the rotated source starts in the unrotated one (0: not rotated)."""


def poisson_cdf(lam: float) -> np.ndarray:
    """P(X <= k) for k = 0 .. K, with K far enough in the tail that the rest is negligible."""
    top = int(math.ceil(lam + 12.0 * math.sqrt(lam) + 12.0))
    k = np.arange(top + 1)
    log_pmf = k * math.log(lam) - lam - np.array([math.lgamma(i + 1.0) for i in k])
    return np.cumsum(np.exp(log_pmf))


def word_starts_of(length: int, word_starts: np.ndarray | None, sentence_lengths: Sequence[int]) -> np.ndarray:
    """Where words start: the shards' word starts (each token when there are none), and every sentence start."""
    starts = np.ones(length, dtype=bool) if word_starts is None else np.asarray(word_starts, dtype=bool).copy()
    boundaries = np.cumsum([0, *sentence_lengths])[:-1]
    starts[boundaries[boundaries < length]] = True
    if length:
        starts[0] = True
    return starts


class Denoiser:
    """Corrupts one example's tokens; ``pool`` holds the ids random replacements are drawn from."""

    def __init__(self, settings: NoiseSettings, mask_id: int, pool: np.ndarray) -> None:
        settings.check()
        if not len(pool):
            raise PtmError("no ordinary token id is left to draw random replacements from")
        self.settings = settings
        self.mask_id = mask_id
        self.pool = np.asarray(pool, dtype=np.int64)
        self.cdf = poisson_cdf(settings.poisson_lambda)

    def __call__(self, tokens: np.ndarray, word_starts: np.ndarray | None, sentence_lengths: Sequence[int],
                 seed: int, number: int) -> Corruption:
        tokens = np.asarray(tokens, dtype=np.int64)
        if sum(sentence_lengths) != len(tokens):
            raise ValueError(f"sentence lengths add up to {sum(sentence_lengths)}, the example has {len(tokens)} tokens")
        starts = word_starts_of(len(tokens), word_starts, sentence_lengths)
        order = self._permutation(len(sentence_lengths), seed, number)
        if len(order) > 1:
            bounds = np.cumsum([0, *sentence_lengths])
            pieces = [np.arange(bounds[i], bounds[i + 1]) for i in order]
            moved = np.concatenate(pieces)
            tokens, starts = tokens[moved], starts[moved]
            starts[np.cumsum([0, *(len(p) for p in pieces)])[:-1]] = True
        source, spans, span_tokens, masked, deleted = self._word_noise(tokens, starts, seed, number)
        source = self._random_replacements(source, seed, number)
        source, rotation = self._rotate(source, seed, number)
        return Corruption(source, order, spans, span_tokens, masked, deleted, rotation)

    # -- the corruptions, in the order they apply ----------------------------------------------------------

    def _permutation(self, sentences: int, seed: int, number: int) -> np.ndarray:
        order = np.arange(sentences)
        chosen = int(math.ceil(sentences * self.settings.permute_sentences))
        if chosen < 2:
            return order
        # The ``chosen`` sentences with the lowest keys move, to one another's places in a keyed shuffle.
        picked = np.sort(np.argsort(keyed_uniform(seed, PERMUTE_CHOOSE, number, sentences)[0], kind="stable")[:chosen])
        shuffled = picked[np.argsort(keyed_uniform(seed, PERMUTE_ORDER, number, chosen)[0], kind="stable")]
        order[picked] = shuffled
        return order

    def _span_lengths(self, budget: int, seed: int, number: int) -> np.ndarray:
        """Poisson span lengths in words, drawn until they reach ``budget``, the last cut to land on it."""
        width = budget + 16
        while True:
            # Prefixes of a keyed draw are stable, so widening never changes the lengths already drawn.
            draws = np.minimum(np.searchsorted(self.cdf, keyed_uniform(seed, SPAN_LENGTH, number, width)[0], side="right"),
                               len(self.cdf) - 1)
            total = np.cumsum(draws)
            if total[-1] >= budget:
                last = int(np.searchsorted(total, budget))
                lengths = draws[: last + 1].copy()
                lengths[last] = budget - (total[last - 1] if last else 0)
                return lengths
            width *= 2

    def _word_noise(self, tokens: np.ndarray, starts: np.ndarray, seed: int, number: int):
        """Infilling, then masking and deletion of the words no span covers."""
        s = self.settings
        first = np.flatnonzero(starts)
        ends = np.append(first[1:], len(tokens))
        words = len(first)
        budget = int(round(words * s.infill_ratio))
        spans = self._span_lengths(budget, seed, number) if budget else np.zeros(0, dtype=np.int64)
        # The source is a sequence of items: the words no span covers, and the spans. Choosing which of its
        # places the spans take (uniformly, in the order drawn) places them without overlap.
        items = words - budget + len(spans)
        is_span = np.zeros(items, dtype=bool)
        is_span[np.argsort(keyed_uniform(seed, SPAN_PLACE, number, items)[0], kind="stable")[: len(spans)]] = True
        sizes = np.ones(items, dtype=np.int64)
        sizes[is_span] = spans
        item_word = np.cumsum(sizes) - sizes  # the first word of each item
        free = item_word[~is_span]
        masked_words, deleted_words = self._masked_and_deleted(free, words, seed, number)
        action = np.zeros(words, dtype=np.int8)  # 0 keep, 1 mask each token, 2 delete
        action[masked_words], action[deleted_words] = 1, 2
        out, span_tokens = [], []
        for item in range(items):
            w = int(item_word[item])
            if is_span[item]:
                size = int(sizes[item])
                span_tokens.append(int(ends[w + size - 1] - first[w]) if size else 0)
                out.append(np.array([self.mask_id], dtype=np.int64))
                continue
            piece = tokens[first[w]:ends[w]]
            if action[w] == 1:
                out.append(np.full(len(piece), self.mask_id, dtype=np.int64))
            elif action[w] == 0:
                out.append(piece)
        source = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        masked, deleted = (np.concatenate([np.arange(first[w], ends[w]) for w in chosen] or [np.zeros(0, np.int64)])
                           for chosen in (masked_words, deleted_words))
        return source, spans, np.array(span_tokens, dtype=np.int64), masked, deleted

    def _masked_and_deleted(self, free: np.ndarray, words: int, seed: int, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Words for token masking and for deletion: exact shares of all words, taken from the ``free`` ones."""
        s = self.settings
        to_mask = min(int(round(words * s.mask_ratio)), len(free))
        to_delete = min(int(round(words * s.delete_ratio)), len(free) - to_mask)
        if not to_mask + to_delete:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys = keyed_uniform(seed, WORD_NOISE, number, words)[0]
        ranked = free[np.argsort(keys[free], kind="stable")]
        return np.sort(ranked[:to_mask]), np.sort(ranked[to_mask:to_mask + to_delete])

    def _random_replacements(self, source: np.ndarray, seed: int, number: int) -> np.ndarray:
        if not self.settings.mask_random:
            return source
        masks = np.flatnonzero(source == self.mask_id)
        if not len(masks):
            return source
        # The j-th mask of the source takes the j-th draws.
        which = keyed_uniform(seed, RANDOM_WHICH, number, len(masks))[0] < self.settings.mask_random
        picks = self.pool[(keyed_uniform(seed, RANDOM_PICK, number, len(masks))[0] * len(self.pool)).astype(np.int64)]
        source = source.copy()
        source[masks[which]] = picks[which]
        return source

    def _rotate(self, source: np.ndarray, seed: int, number: int) -> tuple[np.ndarray, int]:
        if not self.settings.rotate_ratio or len(source) < 2:
            return source, 0
        draw = keyed_uniform(seed, ROTATE, number, 2)[0]
        if draw[0] >= self.settings.rotate_ratio:
            return source, 0
        start = 1 + int(draw[1] * (len(source) - 1))
        return np.concatenate([source[start:], source[:start]]), start
