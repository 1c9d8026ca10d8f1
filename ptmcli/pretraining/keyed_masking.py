"""BERT's 80/10/10 masking with draws keyed by example number, so a process can mask any rows alone.

The rule is the one of ``objectives/mlm.py``: each non-special token (or
whole word) is chosen with probability ``mask_prob``; a chosen token becomes
[MASK] with probability 0.8, a random token with probability 0.1, and stays
otherwise. Here the draw for column ``j`` of an example depends only on the
seed, the example's number in the run and ``j``: not on the other rows of the
batch, nor on which process builds it. Random replacements come from a fixed
pool (every id but [MASK] and the special ids given), so they do not depend
on the batch either. With ``ngram`` above 1 the chosen units are ALBERT's
spans of whole words (``ngram_masking``), each span masked, replaced or kept
as one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ptmcli.objectives.mlm import IGNORE_INDEX
from ptmcli.pretraining.keyed_random import ACTION, CHOOSE, REPLACEMENT, keyed_uniform
from ptmcli.pretraining.ngram_masking import choose_ngrams


class KeyedMasker:
    """Masks collated rows; ``numbers`` name the examples the rows hold."""

    def __init__(self, vocab_size: int, mask_id: int, special_ids: Sequence[int], mask_prob: float,
                 replace_prob: float = 0.8, random_prob: float = 0.1, ngram: int = 1) -> None:
        if not 0.0 <= mask_prob <= 1.0 or replace_prob < 0 or random_prob < 0 or replace_prob + random_prob > 1.0:
            raise ValueError(f"bad masking probabilities: mask {mask_prob}, replace {replace_prob}, random {random_prob}")
        excluded = {mask_id, *special_ids}
        self.pool = np.array([i for i in range(vocab_size) if i not in excluded], dtype=np.int64)
        if not len(self.pool):
            raise ValueError("no token id is left to draw random replacements from")
        self.mask_id = mask_id
        self.mask_prob = mask_prob
        self.replace_prob = replace_prob
        self.random_prob = random_prob
        self.ngram = ngram

    def __call__(self, input_ids: torch.Tensor, special_mask: torch.Tensor, numbers: np.ndarray, seed: int,
                 word_starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked_input_ids, labels)`` of CPU rows; labels are -100 where nothing is predicted."""
        ids = input_ids.numpy()
        special = special_mask.numpy().astype(bool)
        width = ids.shape[1]
        if self.ngram > 1:
            starts = None if word_starts is None else word_starts.numpy().astype(bool)
            chosen, action = choose_ngrams(special, starts, numbers, seed, self.mask_prob, self.ngram)
        else:
            chosen, action = self._choose_tokens(special, numbers, seed, word_starts)
        to_mask = chosen & (action < self.replace_prob)
        to_random = chosen & (action >= self.replace_prob) & (action < self.replace_prob + self.random_prob)
        picks = self.pool[(keyed_uniform(seed, REPLACEMENT, numbers, width) * len(self.pool)).astype(np.int64)]
        labels = np.where(chosen, ids, IGNORE_INDEX)
        masked = np.where(to_random, picks, np.where(to_mask, self.mask_id, ids))
        return torch.from_numpy(masked), torch.from_numpy(labels)

    def _choose_tokens(self, special: np.ndarray, numbers: np.ndarray, seed: int,
                       word_starts: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """BERT's choice: each token (or whole word) alone, and each token's own 80/10/10 draw."""
        width = special.shape[1]
        choose = keyed_uniform(seed, CHOOSE, numbers, width)
        if word_starts is not None:
            # Every token of a word takes the draw of the word's first token.
            starts = word_starts.numpy().astype(bool) | special
            starts[:, 1:] |= special[:, :-1]  # the token after [CLS]/[SEP] begins a word
            starts[:, 0] = True
            first = np.maximum.accumulate(np.where(starts, np.arange(width), 0), axis=1)
            choose = np.take_along_axis(choose, first, axis=1)
        return (choose < self.mask_prob) & ~special, keyed_uniform(seed, ACTION, numbers, width)
