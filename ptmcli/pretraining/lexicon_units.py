"""ERNIE 1.0's knowledge masking (Sun et al., 2019): whole phrases and entities from a lexicon are masked
as units, mixed with word-level masking.

A lexicon is a text file with one phrase per line (words separated by spaces,
or for Chinese a string of characters). Each phrase is tokenized with the run's
tokenizer, so it matches the shards' tokens; a row's words (from the shards'
word starts) are covered greedily from the left by the longest phrase that
starts and ends on word boundaries, and every word no phrase covers is a unit
of its own. ``unit_ratio`` (``--lexicon-mask-ratio``) of a row's mask budget,
``round(mask_prob * tokens)``, goes to phrase units, the rest to word units (all
of it when the row has too few phrases). Units are taken in an order keyed by
(seed, example number, first token), as every draw of ``keyed_masking.py`` is,
so any process masks any row alike; 80/10/10 is decided per token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.objectives.mlm import IGNORE_INDEX
from ptmcli.pretraining.keyed_masking import KeyedMasker
from ptmcli.pretraining.keyed_random import ACTION, REPLACEMENT, keyed_uniform
from ptmcli.pretraining.span_masking import word_ranges

# A purpose of its own, far from keyed_random's, so the unit order shares no stream with token draws.
UNIT_ORDER = 111


def read_phrases(path: str) -> list[str]:
    """The non-blank lines of the lexicon file at ``path``, stripped; a PtmError naming the flag if there are none."""
    file = Path(path)
    if not file.is_file():
        raise PtmError(f"--mask-lexicon {path}: no such file (give a text file with one phrase or entity per line)")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as error:
        raise PtmError(f"--mask-lexicon {path}: not UTF-8 text (byte {error.start}); give a text file with one phrase per line") from None
    lines = [line for line in lines if line]
    if not lines:
        raise PtmError(f"--mask-lexicon {path}: the file has no phrases (one phrase or entity per line)")
    return lines


class Lexicon:
    """Phrases as token-id tuples, with a prefix set so matching stops as soon as no phrase can continue."""

    def __init__(self, phrases: Sequence[Sequence[int]], fingerprint: str | None = None, path: str | None = None) -> None:
        self.phrases = {tuple(p) for p in phrases if len(p)}
        self.prefixes = {p[:k] for p in self.phrases for k in range(1, len(p) + 1)}
        # sha256 of the lexicon's lines: a resumed run must mask with the same phrases.
        self.fingerprint = fingerprint
        self.path = path

    @classmethod
    def load(cls, path: str, tokenizer) -> Lexicon:
        """The lexicon at ``path``; a missing or empty file is a PtmError naming the flag."""
        lines = read_phrases(path)
        # A phrase inside a text follows a space, which byte-level BPE folds into its first token (Ġnew),
        # while one that opens a sentence does not: both spellings match. Other tokenizers give one.
        fingerprint = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
        return cls(tokenizer.encode_batch(lines + [" " + line for line in lines]), fingerprint, path)

    def units(self, ids: np.ndarray, first: np.ndarray, ends: np.ndarray) -> list[tuple[int, int, bool]]:
        """``(begin, end, from_lexicon)`` covering the words ``first[i]:ends[i]`` of one row, left to right."""
        out, i = [], 0
        while i < len(first):
            longest, j, tokens = None, i, ()
            # A phrase may span adjacent words only: a gap (a special token) ends the match.
            while j < len(first) and (j == i or first[j] == ends[j - 1]):
                tokens = tokens + tuple(int(t) for t in ids[first[j]:ends[j]])
                if tokens not in self.prefixes:
                    break
                if tokens in self.phrases:
                    longest = j
                j += 1
            last = longest if longest is not None else i
            out.append((int(first[i]), int(ends[last]), longest is not None))
            i = last + 1
        return out


class UnitMasker:
    """Masks collated rows by lexicon phrases and words; ``numbers`` name the examples the rows hold."""

    def __init__(self, lexicon: Lexicon, vocab_size: int, mask_id: int, special_ids: Sequence[int], mask_prob: float,
                 unit_ratio: float = 0.5, replace_prob: float = 0.8, random_prob: float = 0.1) -> None:
        if not 0.0 <= unit_ratio <= 1.0:
            raise PtmError(f"--lexicon-mask-ratio {unit_ratio}: must be between 0 and 1")
        self.tokens = KeyedMasker(vocab_size, mask_id, special_ids, mask_prob, replace_prob, random_prob)
        self.lexicon = lexicon
        self.mask_prob = mask_prob
        self.unit_ratio = unit_ratio

    def __call__(self, input_ids: torch.Tensor, special_mask: torch.Tensor, numbers: np.ndarray, seed: int,
                 word_starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked_input_ids, labels)``, as :class:`KeyedMasker` returns them; without ``word_starts``
        (shards encoded without them) every token is a word."""
        ids = input_ids.numpy()
        real = ~special_mask.numpy().astype(bool)
        rows, width = ids.shape
        starts = np.ones((rows, width), dtype=bool) if word_starts is None else word_starts.numpy().astype(bool)
        order = keyed_uniform(seed, UNIT_ORDER, numbers, width)
        chosen = np.zeros((rows, width), dtype=bool)
        for r in range(rows):
            first, ends, _runs = word_ranges(real[r], starts[r])
            units = self.lexicon.units(ids[r], first, ends)
            # Rounded, not floored, so the realised share is mask_prob on average rather than below it.
            budget = round(self.mask_prob * int(real[r].sum()))
            count = 0
            # Phrases first, up to their share of the budget; then words up to the whole budget.
            for lexical, limit in ((True, self.unit_ratio * budget), (False, budget)):
                for begin, end, from_lexicon in sorted(units, key=lambda u: order[r, u[0]]):
                    if from_lexicon == lexical and count + (end - begin) <= limit and not chosen[r, begin]:
                        chosen[r, begin:end] = True
                        count += end - begin
        t = self.tokens
        action = keyed_uniform(seed, ACTION, numbers, width)
        picks = t.pool[(keyed_uniform(seed, REPLACEMENT, numbers, width) * len(t.pool)).astype(np.int64)]
        to_mask = chosen & (action < t.replace_prob)
        to_random = chosen & (action >= t.replace_prob) & (action < t.replace_prob + t.random_prob)
        masked = np.where(to_random, picks, np.where(to_mask, t.mask_id, ids))
        return torch.from_numpy(masked), torch.from_numpy(np.where(chosen, ids, IGNORE_INDEX))


def lexicon_fingerprint(masker) -> str | None:
    """The sha256 of the lexicon ``masker`` masks by, or None for a masker without one."""
    return getattr(getattr(masker, "lexicon", None), "fingerprint", None)


def check_same_lexicon(masker, state: dict) -> None:
    """A resumed run masks as it did only with the same lexicon: a changed --mask-lexicon file is refused."""
    saved, now = state.get("mask_lexicon_sha256"), lexicon_fingerprint(masker)
    if saved is not None and now is not None and saved != now:
        raise PtmError(f"--mask-lexicon {masker.lexicon.path}: the file changed since the run began, so resuming would mask "
                       "other units than it did (restore the file, or start a new run)")
