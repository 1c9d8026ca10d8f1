"""Where words begin, for whole-word masking: the shards' word starts, one row per ``--word-segmenter``.

- ``tokenizer`` (the default): the tokenizer's own words, from its pre-tokenizer
  (whitespace and punctuation; a BERT tokenizer makes every CJK character a word).
- ``jieba``: the words of jieba's segmentation (``jieba.tokenize``, its default
  accurate mode and dictionary), so that Chinese whole-word masking masks
  words, as Chinese BERT-wwm does, rather than single characters.

A segmenter maps each token to the word its first character falls in (from the
tokenizer's character offsets); a token starts a word when that word differs
from the previous token's. jieba is an optional dependency (``pip install
jieba``, or the ``chinese`` extra): ``check_available`` says how to install it
before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ptmcli.errors import PtmError

INSTALL = {"jieba": "pip install jieba (or pip install 'ptm[chinese]')"}


def _jieba_bounds() -> Callable[[str], list[int]]:
    import logging

    import jieba

    # jieba announces its dictionary loading on stderr at every start; ptm's stderr is its own summary.
    jieba.setLogLevel(logging.WARNING)

    def bounds(text: str) -> list[int]:
        return [start for _word, start, _end in jieba.tokenize(text)]

    return bounds


# Name -> a function returning the segmenter: text -> the character offsets where its words begin.
# None: the tokenizer's own word boundaries (``PtmTokenizer.encode_batch_words``).
SEGMENTERS: dict[str, Callable[[], Callable[[str], list[int]]] | None] = {
    "tokenizer": None,
    "jieba": _jieba_bounds,
}


def check_available(name: str) -> None:
    """A PtmError naming ``--word-segmenter`` if ``name`` is unknown or its package is not installed."""
    if name not in SEGMENTERS:
        raise PtmError(f"--word-segmenter {name!r}: choose one of {', '.join(SEGMENTERS)}")
    if name in INSTALL:
        import importlib.util

        if importlib.util.find_spec(name) is None:
            raise PtmError(f"--word-segmenter {name} needs the {name} package, which is not installed: {INSTALL[name]}")


_loaded: dict[str, Callable[[str], list[int]]] = {}


def encode_words(tokenizer, texts: list[str], name: str) -> list[tuple[list[int], list[bool]]]:
    """(ids, starts_word) per text, as ``tokenizer.encode_batch_words`` gives them, with the words of segmenter ``name``."""
    if SEGMENTERS[name] is None:
        return tokenizer.encode_batch_words(texts)
    if name not in _loaded:
        _loaded[name] = SEGMENTERS[name]()
    bounds = _loaded[name]
    out = []
    for text, (ids, offsets) in zip(texts, tokenizer.encode_batch_offsets(texts)):
        # word_of[c]: the word character c falls in.
        marks = np.zeros(len(text) + 1, dtype=np.int64)
        marks[[b for b in bounds(text) if 0 < b <= len(text)]] = 1
        word_of = np.cumsum(marks)
        starts, previous = [], None
        for begin, end in offsets:
            # A byte-level BPE token carries the space before its word; the word is where its text begins.
            while begin < end and text[begin].isspace():
                begin += 1
            word = int(word_of[min(begin, len(text))])
            starts.append(word != previous)
            previous = word
        out.append((list(ids), starts))
    return out
