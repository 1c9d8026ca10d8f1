"""ERNIE-style knowledge masking: lexicon phrases matched over whole words, masked as units beside words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptmcli.errors import PtmError
from ptmcli.pretraining.lexicon_units import Lexicon, UnitMasker

VOCAB = {w: i + 10 for i, w in enumerate("the new york times harry potter in a of was big city".split())}


class WordTokenizer:
    """One token per word, as a WordPiece tokenizer does for words in its vocabulary."""

    def encode_batch(self, texts):
        return [[VOCAB[w] for w in text.split()] for text in texts]


def _row(text: str):
    ids = [1] + [VOCAB[w] for w in text.split()] + [2]
    special = [True] + [False] * (len(ids) - 2) + [True]
    return torch.tensor([ids]), torch.tensor([special]), torch.ones(1, len(ids), dtype=torch.bool)


def test_phrases_match_greedily_longest_over_whole_words():
    lexicon = Lexicon(WordTokenizer().encode_batch(["new york", "new york times", "harry potter"]))
    ids, special, starts = _row("the new york times of harry potter was new york")
    first = np.arange(1, ids.shape[1] - 1)
    units = lexicon.units(ids[0].numpy(), first, first + 1)
    assert units == [(1, 2, False), (2, 5, True), (5, 6, False), (6, 8, True), (8, 9, False), (9, 11, True)]


def test_phrase_share_and_masked_fraction():
    lexicon = Lexicon(WordTokenizer().encode_batch(["new york", "harry potter"]))
    text = " ".join(["the new york times of harry potter was a big city"] * 12)
    ids, special, starts = _row(text)
    ids, special, starts = ids.repeat(64, 1), special.repeat(64, 1), starts.repeat(64, 1)
    masker = UnitMasker(lexicon, 40, 3, (1, 2, 0), 0.15, unit_ratio=0.5)
    masked, labels = masker(ids, special, np.arange(64), 5, starts)
    chosen = labels.numpy() != -100
    real = (~special.numpy()).sum()
    assert abs(chosen.sum() / real - 0.15) < 0.01
    # Phrase tokens are chosen whole: "new" with "york", "harry" with "potter".
    row_ids = ids.numpy()
    for a in (VOCAB["new"], VOCAB["harry"]):
        at = row_ids == a
        assert (chosen[:, 1:][at[:, :-1]] == chosen[:, :-1][at[:, :-1]]).all()
    phrase_tokens = np.isin(row_ids, [VOCAB[w] for w in ("new", "york", "harry", "potter")])
    share = (chosen & phrase_tokens).sum() / chosen.sum()
    assert 0.4 < share < 0.6, share
    # Keyed by example number: a row masked alone is the row masked in the batch.
    alone = masker(ids[7:8], special[7:8], np.arange(7, 8), 5, starts[7:8])
    assert torch.equal(alone[0], masked[7:8]) and torch.equal(alone[1], labels[7:8])


@pytest.mark.parametrize("content,message", [(None, "no such file"), ("\n  \n", "has no phrases")])
def test_missing_or_empty_lexicon_is_refused(tmp_path, content, message):
    path = tmp_path / "lexicon.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PtmError, match=message):
        Lexicon.load(str(path), WordTokenizer())
