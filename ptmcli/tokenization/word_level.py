"""Word-level tokenizers cut down to the words a table of vectors has.

Static word vectors keep only the words seen ``--min-count`` times, renumbered
most frequent first (``ptmcli.static.vocab``). Their checkpoint's tokenizer
must give word i the id i, so it is rebuilt: the same normaliser and word
splitting as the tokenizer the corpus was encoded with, a ``WordLevel`` model
over the kept words, and the unknown token last for every other word.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptmcli.errors import PtmError
from ptmcli.tokenization.tokenizer import PtmTokenizer, TokenizerSettings

DEFAULT_UNKNOWN = "[UNK]"


def restricted_word_tokenizer(source: PtmTokenizer, words: Sequence[str]) -> PtmTokenizer:
    """A tokenizer whose id i is ``words[i]`` and whose last id is ``source``'s unknown token."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from ptmcli.tokenization.backends import HFBackend
    from ptmcli.tokenization.pipelines import register_specials

    if not source.word_level:
        raise PtmError(f"a {source.kind} tokenizer splits words into pieces; static vectors need a word-level one")
    unknown = source.special_tokens.get("unk", DEFAULT_UNKNOWN)
    if unknown in words:
        raise PtmError(f"the unknown token {unknown!r} cannot also be a trained word")
    vocab = {word: i for i, word in enumerate(words)}
    vocab[unknown] = len(vocab)
    original = source.backend
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=unknown))
    if original.normalizer is not None:
        tokenizer.normalizer = original.normalizer
    if original.pre_tokenizer is not None:
        tokenizer.pre_tokenizer = original.pre_tokenizer
    register_specials(tokenizer, [unknown])
    settings = TokenizerSettings(kind=source.kind, lowercase=source.lowercase, strip_accents=source.strip_accents,
                                 split_cjk=source.split_cjk, special_tokens={"unk": unknown},
                                 model_max_length=source.model_max_length)
    return PtmTokenizer(HFBackend(tokenizer), settings)
