"""What the masked-LM objectives mask as one unit, one row each: what ``--mask-unit`` can name.

- ``token``: each token alone, as BERT.
- ``word``: whole words, every sub-token of a chosen word together (BERT's
  whole-word masking, which ``--whole-word-mask`` also selects). Words are the
  shards' word starts: the tokenizer's words, or jieba's with
  ``ptm tokenize encode --word-segmenter jieba`` (Chinese BERT-wwm).
- ``phrase`` / ``entity``: ERNIE 1.0's knowledge masking (``lexicon_units``):
  phrases or entities of ``--mask-lexicon`` matched over whole words are masked
  as units, mixed with whole words at ``--lexicon-mask-ratio``. The two behave
  alike; the name says what the lexicon holds, and the run records it.

An objective accepts ``--mask-unit`` and the lexicon flags when its row in
``objective_table`` lists them among its ``settings``. Kept free of torch
imports: ``config.py`` reads the choices while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptmcli.errors import PtmError


@dataclass(frozen=True)
class MaskUnit:
    summary: str
    """What it masks, for the docs and messages."""
    word_starts: bool
    """Whether it needs the shards' word starts."""
    lexicon: bool
    """Whether its units come from ``--mask-lexicon``."""


MASK_UNITS: dict[str, MaskUnit] = {
    "token": MaskUnit("single tokens", word_starts=False, lexicon=False),
    "word": MaskUnit("whole words", word_starts=True, lexicon=False),
    "phrase": MaskUnit("lexicon phrases and whole words", word_starts=True, lexicon=True),
    "entity": MaskUnit("lexicon entities and whole words", word_starts=True, lexicon=True),
}

LEXICON_UNITS = tuple(name for name, unit in MASK_UNITS.items() if unit.lexicon)


def unit_name(cfg: Any) -> str:
    """The run's mask unit: ``--mask-unit``, else ``word`` under ``--whole-word-mask``, else ``token``.

    A config made by hand for a task alone (tests, tools) may lack the newer fields.
    """
    given = getattr(cfg, "mask_unit", None)
    return given or ("word" if getattr(cfg, "whole_word_mask", False) else "token")


def needs_word_starts(cfg: Any) -> bool:
    return MASK_UNITS[unit_name(cfg)].word_starts


def check_flags(cfg: Any) -> None:
    """Refuse mask-unit flags that do not fit together, before anything is read or written.

    Whether they fit the objective is the objective table's ``check_settings``.
    """
    given = getattr(cfg, "mask_unit", None)
    lexicon = getattr(cfg, "mask_lexicon", None)
    if given is not None and given not in MASK_UNITS:
        raise PtmError(f"--mask-unit {given!r}: choose one of {', '.join(MASK_UNITS)}")
    if given == "token" and getattr(cfg, "whole_word_mask", False):
        raise PtmError("--whole-word-mask conflicts with --mask-unit token (--whole-word-mask is --mask-unit word)")
    unit = unit_name(cfg)
    if MASK_UNITS[unit].lexicon and lexicon is None:
        raise PtmError(f"--mask-unit {unit} needs --mask-lexicon FILE (one {unit} per line)")
    if lexicon is not None and not MASK_UNITS[unit].lexicon:
        raise PtmError(f"--mask-lexicon is used only with --mask-unit {' or '.join(LEXICON_UNITS)} (this run masks by {unit})")
    ratio = getattr(cfg, "lexicon_mask_ratio", 0.5)
    if not 0.0 <= ratio <= 1.0:
        raise PtmError(f"--lexicon-mask-ratio {ratio}: must be between 0 and 1")
    if MASK_UNITS[unit].lexicon:
        if getattr(cfg, "ngram_mask", 1) > 1:
            raise PtmError(f"--ngram-mask {cfg.ngram_mask} conflicts with --mask-unit {unit}: lexicon units are not n-grams "
                           "(use one or the other)")
        from ptmcli.pretraining.lexicon_units import read_phrases

        read_phrases(lexicon)  # a missing or empty file is refused now, not after the data is read


def build_masker(cfg: Any, tokenizer, dataset, specials: tuple[int, ...], ngram: int = 1,
                 replace_prob: float = 0.8, random_prob: float = 0.1):
    """The masker of the run's mask unit, called as ``masker(ids, special, numbers, seed, word_starts)``.

    ``specials`` are the ids never drawn as random replacements; ``dataset`` is the training shards, which
    must carry word starts for a unit made of words.
    """
    from ptmcli.pretraining.keyed_masking import KeyedMasker

    name = unit_name(cfg)
    unit = MASK_UNITS[name]
    if unit.word_starts and not dataset.has_word_starts:
        raise PtmError(f"--mask-unit {name}: {dataset.path} was encoded without word boundaries (re-encode with --word-starts)")
    if not unit.lexicon:
        return KeyedMasker(tokenizer.vocab_size, tokenizer.mask_id, specials, cfg.mask_prob,
                           replace_prob=replace_prob, random_prob=random_prob, ngram=ngram)
    from ptmcli.pretraining.lexicon_units import Lexicon, UnitMasker

    return UnitMasker(Lexicon.load(cfg.mask_lexicon, tokenizer), tokenizer.vocab_size, tokenizer.mask_id, specials,
                      cfg.mask_prob, unit_ratio=getattr(cfg, "lexicon_mask_ratio", 0.5),
                      replace_prob=replace_prob, random_prob=random_prob)
