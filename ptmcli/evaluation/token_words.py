"""A checkpoint's input embeddings as word vectors: a word is the token its tokenizer makes of it, alone.

A word has a vector when the tokenizer encodes it, on its own, to one token
that is not a special token: ``paris`` in an uncased BERT vocabulary, ``Paris``
through its lowercasing normalizer too. A word split into several sub-tokens
(``tokyo`` -> ``to ##ky ##o``) is out of the vocabulary here; ``--contextual-from``
gives such words a vector. The candidate answers of an analogy are the tokens
that are such a word: a token whose text, decoded alone, encodes back to it
(``##s`` and GPT-2's ``Ġcat`` are not; ``cat`` is). Rows keep the tokenizer's
id order.

A checkpoint with a character n-gram table (fastText's, ``Family.subwords``)
gives a word outside the vocabulary the mean of its n-gram rows, as fastText
does; the word is looked up as the table matches words (lowercased when it
lowercases), the form its n-grams were trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ptmcli.static.subwords import subword_vector
from ptmcli.static.word_table import WordTable, has_uppercase

_ENCODE_BATCH = 8192


class TokenWordTable(WordTable):
    def __init__(self, tokenizer, embeddings: np.ndarray, lowercase: bool | None = None, subwords=None) -> None:
        self.tokenizer = tokenizer
        self.subwords = subwords
        self._ngrams = subwords.ngrams.detach().float().cpu().numpy() if subwords is not None else None
        specials = set(tokenizer.all_special_ids)
        ids = [i for i in range(tokenizer.vocab_size) if i not in specials]
        surfaces = [tokenizer.decode([i]).strip() for i in ids]
        encoded = _encode(tokenizer, surfaces)
        kept = [(i, s) for i, s, e in zip(ids, surfaces, encoded) if s and e == [i] and not any(c.isspace() for c in s)]
        self.token_ids = np.array([i for i, _ in kept], dtype=np.int64)
        self._row_of_id = {i: row for row, (i, _) in enumerate(kept)}
        words = [s for _, s in kept]
        super().__init__(words, embeddings[self.token_ids], lowercase if lowercase is not None else not has_uppercase(words))

    def rows(self, words: Sequence[str]) -> list[int | None]:
        encoded = _encode(self.tokenizer, [self.key(w) for w in words])
        return [self._row_of_id.get(ids[0]) if len(ids) == 1 else None for ids in encoded]

    def missing_vector(self, word: str) -> np.ndarray | None:
        if self.subwords is None:
            return None
        sub = self.subwords
        return subword_vector(self._ngrams, self.key(word), sub.min_n, sub.max_n, sub.buckets)

    @property
    def builds_missing(self) -> bool:
        return self.subwords is not None


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _ENCODE_BATCH):
        out.extend(tokenizer.encode_batch(texts[start:start + _ENCODE_BATCH]))
    return out
