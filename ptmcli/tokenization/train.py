"""Training tokenizers from a stream of texts.

wordpiece, bpe (character-level), bytelevel and word (whole words) are trained by Hugging Face
``tokenizers``; unigram and sp-bpe by ``sentencepiece``. Texts are streamed
into both libraries from an iterator, so the corpus is never held in a list.
``wordpiece_from_vocab`` builds a WordPiece tokenizer from an existing BERT
``vocab.txt`` with no training.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator

from ptmcli.errors import PtmError
from ptmcli.tokenization.specials import (
    DEFAULTS,
    MODELS,
    SENTENCEPIECE_MODELS,
    ordered_tokens,
    special_roles,
)
from ptmcli.tokenization.tokenizer import PtmTokenizer, TokenizerSettings

# Characters kept as the initial alphabet of wordpiece/bpe by default (rarer
# ones become unknown); the value BERT's English vocabularies were built with.
LIMIT_ALPHABET = 1000
# sentencepiece keeps its training sentences in memory: sample at most this many
# (uniformly, by reservoir sampling) so memory stays bounded on any corpus size.
SENTENCEPIECE_SAMPLE = 1_000_000
SENTENCEPIECE_MAX_SENTENCE_BYTES = 1 << 16
SENTENCEPIECE_COVERAGE = 0.9995
_BATCH = 1000


def resolve_settings(model: str, lowercase: bool | None = None, strip_accents: bool | None = None,
                     split_cjk: bool | None = None, special: str | None = None,
                     max_length: int = 512) -> TokenizerSettings:
    """Fill unset options with the model's defaults and reject combinations the model cannot do."""
    if model not in MODELS:
        raise PtmError(f"unknown tokenizer model {model!r}; choose one of {', '.join(MODELS)}")
    defaults = DEFAULTS[model]
    lowercase = defaults.lowercase if lowercase is None else lowercase
    special = defaults.special if special is None else special
    if model in SENTENCEPIECE_MODELS:
        if strip_accents:
            raise PtmError(f"--strip-accents is not available for {model} (sentencepiece) tokenizers")
        if split_cjk:
            raise PtmError(f"--split-cjk is not available for {model} (sentencepiece) tokenizers")
        strip_accents, split_cjk = False, False
    elif model == "bytelevel":
        strip_accents = bool(strip_accents)
        split_cjk = defaults.split_cjk if split_cjk is None else split_cjk
    else:
        # As in BERT: accents are stripped exactly when lowercasing, unless told otherwise.
        strip_accents = lowercase if strip_accents is None else strip_accents
        split_cjk = defaults.split_cjk if split_cjk is None else split_cjk
    if max_length < 1:
        raise PtmError(f"--max-length must be at least 1, got {max_length}")
    return TokenizerSettings(kind=model, lowercase=lowercase, strip_accents=strip_accents, split_cjk=split_cjk,
                             special_tokens=special_roles(special, model), model_max_length=max_length,
                             special_set=special)


def train_tokenizer(texts: Iterable[str], model: str, vocab_size: int, min_frequency: int = 2, limit_alphabet: int = LIMIT_ALPHABET,
                    lowercase: bool | None = None, strip_accents: bool | None = None,
                    split_cjk: bool | None = None, special: str | None = None, vocab_file: str | None = None,
                    max_length: int = 512, progress: bool = False) -> PtmTokenizer:
    """Train a ``model`` tokenizer of ``vocab_size`` tokens (special tokens included) on ``texts``.

    ``None`` options take the model's defaults (wordpiece: lowercase, accents
    stripped, CJK split, BERT special tokens; bytelevel: cased, GPT-2's
    <|endoftext|>; ...). ``vocab_file`` builds a wordpiece tokenizer from a BERT
    vocab.txt instead, and ``texts`` is not read. ``min_frequency`` is not used
    by the sentencepiece models. ``progress`` shows the library's own progress on stderr.
    """
    settings = resolve_settings(model, lowercase, strip_accents, split_cjk, special, max_length)
    if vocab_file is not None:
        if model != "wordpiece":
            raise PtmError(f"--vocab builds a wordpiece tokenizer; it cannot be used with --model {model}")
        return wordpiece_from_vocab(vocab_file, settings)
    specials = ordered_tokens(settings.special_tokens, settings.special_set)
    if vocab_size <= len(specials):
        raise PtmError(f"--vocab-size {vocab_size} leaves no room beside the {len(specials)} special tokens")
    if min_frequency < 1:
        raise PtmError(f"--min-frequency must be at least 1, got {min_frequency}")
    if limit_alphabet < 1:
        raise PtmError(f"--limit-alphabet must be at least 1, got {limit_alphabet}")
    guarded = _Guarded(texts)
    if model in SENTENCEPIECE_MODELS:
        tokenizer = _train_sentencepiece(guarded, settings, specials, vocab_size, progress)
    else:
        tokenizer = _train_hf(guarded, settings, specials, vocab_size, min_frequency, limit_alphabet, progress)
    if not guarded.count:
        raise PtmError("no text to train the tokenizer on")
    return tokenizer


class _Guarded:
    """Wraps the text stream so an error while reading it (say, bad UTF-8 at some line)
    stops training at once and reaches the caller as itself: sentencepiece would
    turn it into a RuntimeError."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.failure: BaseException | None = None
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        try:
            for text in self._texts:
                if text:
                    self.count += 1
                    yield text
        except GeneratorExit:
            raise
        except BaseException as err:
            self.failure = err
            raise

    def batches(self, size: int = _BATCH) -> Iterator[list[str]]:
        batch: list[str] = []
        for text in self:
            batch.append(text)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


def _train_hf(texts: _Guarded, settings: TokenizerSettings, specials: list[str], vocab_size: int,
              min_frequency: int, limit_alphabet: int, progress: bool):
    from tokenizers import pre_tokenizers, trainers

    from ptmcli.tokenization.backends import HFBackend
    from ptmcli.tokenization.pipelines import (
        END_OF_WORD,
        WORD_PREFIX,
        add_post_processor,
        new_tokenizer,
        register_specials,
    )

    kind = settings.kind
    unk = None if kind == "bytelevel" else settings.special_tokens.get("unk")
    tokenizer = new_tokenizer(kind, settings.lowercase, settings.strip_accents, settings.split_cjk, unk)
    common = dict(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                  show_progress=progress)
    if kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(**common, limit_alphabet=limit_alphabet,
                                            continuing_subword_prefix=WORD_PREFIX)
    elif kind == "bpe":
        trainer = trainers.BpeTrainer(**common, limit_alphabet=limit_alphabet, end_of_word_suffix=END_OF_WORD)
    elif kind == "word":
        # Keeps the --vocab-size most frequent words seen at least --min-frequency times.
        trainer = trainers.WordLevelTrainer(**common)
    else:
        trainer = trainers.BpeTrainer(**common, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if kind in ("wordpiece", "bpe"):
        tokenizer = _train_reproducibly(tokenizer, texts, trainer, kind, specials, limit_alphabet)
    else:
        # Word-level and byte-level training have no hash-order ties (their alphabets are fixed or sorted).
        try:
            tokenizer.train_from_iterator(texts.batches(), trainer=trainer)
        except BaseException:
            texts.raise_failure()
            raise
    register_specials(tokenizer, specials)
    add_post_processor(tokenizer, settings.special_tokens, settings.special_set)
    return PtmTokenizer(HFBackend(tokenizer), settings)


def _train_reproducibly(tokenizer, texts: _Guarded, trainer, kind: str, specials: list[str], limit_alphabet: int):
    """Train with the alphabet and word-internal pieces fixed up front (reproducible_training.py)."""
    from ptmcli.tokenization.reproducible_training import drop_added_tokens, spilled_statistics

    try:
        with spilled_statistics(tokenizer, texts) as (statistics, spilled):
            alphabet = statistics.alphabet(limit_alphabet)
            pieces = statistics.word_internal_pieces(kind, alphabet)
            trainer.initial_alphabet = alphabet
            trainer.limit_alphabet = len(alphabet)
            trainer.special_tokens = [*specials, *pieces]
            tokenizer.train_from_iterator(spilled, trainer=trainer)
    except BaseException:
        texts.raise_failure()
        raise
    return drop_added_tokens(tokenizer, pieces)


def _train_sentencepiece(texts: _Guarded, settings: TokenizerSettings, specials: list[str], vocab_size: int,
                         progress: bool):
    import sentencepiece

    from ptmcli.tokenization.backends import SentencePieceBackend

    # sentencepiece needs its unknown piece in its own slot; every other special
    # token is a user-defined symbol, and ids follow the order of ``specials``.
    unk = settings.special_tokens["unk"]
    model_file = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model_file,
            model_type="unigram" if settings.kind == "unigram" else "bpe",
            vocab_size=vocab_size,
            character_coverage=SENTENCEPIECE_COVERAGE,
            normalization_rule_name="nmt_nfkc_cf" if settings.lowercase else "nmt_nfkc",
            unk_id=specials.index(unk), unk_piece=unk, bos_id=-1, eos_id=-1, pad_id=-1,
            user_defined_symbols=[t for t in specials if t != unk],
            input_sentence_size=SENTENCEPIECE_SAMPLE, shuffle_input_sentence=True,
            max_sentence_length=SENTENCEPIECE_MAX_SENTENCE_BYTES,
            num_threads=max(1, os.cpu_count() or 1),
            minloglevel=0 if progress else 2,
        )
    except BaseException as err:
        texts.raise_failure()
        if not isinstance(err, RuntimeError):
            raise
        if not texts.count:
            raise PtmError("no text to train the tokenizer on") from None
        message = str(err).strip().splitlines()[-1]
        raise PtmError(f"sentencepiece could not train a {vocab_size}-token vocabulary: {message}") from None
    return PtmTokenizer(SentencePieceBackend(model_file.getvalue()), settings)


def wordpiece_from_vocab(vocab_file: str, settings: TokenizerSettings) -> PtmTokenizer:
    """A wordpiece tokenizer from a BERT vocab.txt, tokenizing as BERT's own tokenizer does."""
    from ptmcli.tokenization.backends import HFBackend
    from ptmcli.tokenization.pipelines import (
        add_post_processor,
        new_tokenizer,
        read_vocab_file,
        register_specials,
    )

    vocab = read_vocab_file(vocab_file)
    roles = {role: token for role, token in settings.special_tokens.items() if token in vocab}
    if "unk" not in roles:
        raise PtmError(f"vocabulary file {vocab_file} has no {settings.special_tokens.get('unk', '[UNK]')} token")
    settings.special_tokens = roles
    tokenizer = new_tokenizer("wordpiece", settings.lowercase, settings.strip_accents, settings.split_cjk,
                              roles["unk"], vocab=vocab)
    register_specials(tokenizer, sorted(set(roles.values()), key=vocab.__getitem__))
    add_post_processor(tokenizer, roles, settings.special_set)
    return PtmTokenizer(HFBackend(tokenizer), settings)
