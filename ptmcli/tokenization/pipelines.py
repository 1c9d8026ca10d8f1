"""Assembling Hugging Face ``tokenizers`` pipelines for the wordpiece, bpe, bytelevel and word models.

Each model is the usual chain normalizer -> pre-tokenizer -> model -> decoder
(-> post-processor, used only when exported for other libraries: ptm itself
adds special tokens when it builds examples).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from ptmcli.errors import PtmError, where

WORD_PREFIX = "##"
END_OF_WORD = "</w>"
# The code points BERT treats as CJK ideographs (each becomes its own word).
CJK_RANGES = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def bert_normalizer(lowercase: bool, strip_accents: bool, split_cjk: bool) -> normalizers.Normalizer:
    """Removes control characters, maps whitespace to spaces, optionally lowercases,
    strips accents and puts spaces around CJK ideographs."""
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=split_cjk,
                                      strip_accents=strip_accents, lowercase=lowercase)


def new_tokenizer(kind: str, lowercase: bool, strip_accents: bool, split_cjk: bool,
                  unk_token: str | None, vocab: dict[str, int] | None = None) -> Tokenizer:
    """An untrained (or, with ``vocab``, ready wordpiece) tokenizer of ``kind``."""
    if kind == "wordpiece":
        model = models.WordPiece(vocab or {}, unk_token=unk_token or "[UNK]", continuing_subword_prefix=WORD_PREFIX)
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = bert_normalizer(lowercase, strip_accents, split_cjk)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix=WORD_PREFIX)
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk_token, end_of_word_suffix=END_OF_WORD))
        tokenizer.normalizer = bert_normalizer(lowercase, strip_accents, split_cjk)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.BPEDecoder(suffix=END_OF_WORD)
    elif kind == "bytelevel":
        # Byte-level BPE never meets an unknown symbol, so the model has no unk token.
        tokenizer = Tokenizer(models.BPE())
        steps: list[normalizers.Normalizer] = []
        if strip_accents:
            steps += [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]
        if lowercase:
            steps.append(normalizers.Lowercase())
        if steps:
            tokenizer.normalizer = normalizers.Sequence(steps)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if split_cjk:
            cjk = "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in CJK_RANGES)
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(f"[{cjk}]"), behavior="isolated"), byte_level])
        else:
            tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = decoders.ByteLevel()
    elif kind == "word":
        # One id per word; words outside the vocabulary become the unknown token. BERT's
        # pre-tokenizer splits punctuation off, so "Athens," counts as "Athens" and ",".
        tokenizer = Tokenizer(models.WordLevel(vocab or {}, unk_token=unk_token or "[UNK]"))
        tokenizer.normalizer = bert_normalizer(lowercase, strip_accents, split_cjk)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    else:
        raise ValueError(f"no tokenizers pipeline for {kind!r}")
    return tokenizer


def add_post_processor(tokenizer: Tokenizer, roles: dict[str, str], special: str | None) -> None:
    """How other libraries add special tokens: [CLS] A [SEP] B [SEP], or <s> A </s></s> B </s>."""
    cls, sep = roles.get("cls"), roles.get("sep")
    if not cls or not sep:
        return
    ids = [(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))]
    if any(i is None for _, i in ids):
        return
    from ptmcli.tokenization.specials import DOUBLE_SEPARATOR_PAIRS

    if special in DOUBLE_SEPARATOR_PAIRS:
        pair = f"{cls} $A {sep} {sep} $B:1 {sep}:1"
    else:
        pair = f"{cls} $A {sep} $B:1 {sep}:1"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair, special_tokens=list(dict(ids).items()))


def register_specials(tokenizer: Tokenizer, tokens: list[str]) -> None:
    """Special tokens are matched whole in raw text and skipped when decoding."""
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])


ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def register_added_tokens(tokenizer: Tokenizer, declared: list[tuple[int, dict]], where: str) -> None:
    """Add (id, {"content", flags...}) tokens in id order, each at exactly its declared id.

    A token already in the vocabulary keeps its id and only starts being matched
    whole; a new one takes the next free id, so the declared ids must follow on.
    """
    for token_id, entry in sorted(declared, key=lambda item: item[0]):
        flags = {k: bool(entry[k]) for k in ADDED_TOKEN_FLAGS if k in entry}
        special = flags.pop("special", False)
        added = AddedToken(entry["content"], special=special, **flags)
        if special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])
        got = tokenizer.token_to_id(entry["content"])
        if got != token_id:
            raise PtmError(f"{where}: added token {entry['content']!r} is declared with id {token_id}, "
                           f"but the vocabulary gives it id {got}")


# transformers tokenizer classes that rebuild the normalizer and pre-tokenizer from
# tokenizer_config.json, whatever tokenizer.json holds; the Bert ones all build BERT's.
BERT_CLASSES = frozenset({"BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "MobileBertTokenizer",
                          "SqueezeBertTokenizer", "ConvBertTokenizer", "LayoutLMTokenizer"})
BYTE_LEVEL_CLASSES = frozenset({"GPT2Tokenizer", "RobertaTokenizer"})


def class_pipeline(class_name: str | None, config: dict, unk_token: str | None) -> dict | None:
    """What transformers' ``class_name`` builds from ``config`` (tokenizer_config.json) on top of
    tokenizer.json's vocabulary: ``{"model": {"type", fields...}, "normalizer", "pre_tokenizer"}``
    as tokenizer.json entries; None for a class that takes tokenizer.json as it is."""
    probe = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
    if class_name in BERT_CLASSES:
        strip_accents = config.get("strip_accents")
        probe.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=None if strip_accents is None else bool(strip_accents),
            lowercase=bool(config.get("do_lower_case", True)))
        probe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        model = {"type": "WordPiece", "unk_token": unk_token or "[UNK]", "continuing_subword_prefix": WORD_PREFIX,
                 "max_input_chars_per_word": 100}
    elif class_name in BYTE_LEVEL_CLASSES:
        probe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)),
                                                       trim_offsets=True, use_regex=True)
        model = {"type": "BPE", "dropout": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": False, "byte_fallback": False}
    else:
        return None
    built = json.loads(probe.to_str())
    return {"model": model, "normalizer": built["normalizer"], "pre_tokenizer": built["pre_tokenizer"]}


def read_vocab_file(path: str) -> dict[str, int]:
    """A BERT vocab.txt: one token per line, the line number (from 0) is its id."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise PtmError(f"vocabulary file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise PtmError(f"vocabulary file {path} is not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise PtmError(f"cannot read vocabulary file {path}: {err.strerror}") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for number, token in enumerate(lines):
        if token in vocab:
            raise PtmError(f"{where(path, number + 1)}: token {token!r} already appears on line {vocab[token] + 1}")
        vocab[token] = number
    if not vocab:
        raise PtmError(f"vocabulary file {path} is empty")
    return vocab


def write_vocab_file(tokenizer: Tokenizer, path: Path) -> None:
    """vocab.txt ordered by id, the file BERT-style tools read."""
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        return  # ids with gaps cannot be written as one token per line
    path.write_text("".join(f"{token}\n" for token, _ in by_id), encoding="utf-8")


def describe_model(tokenizer_json: dict) -> tuple[str, bool]:
    """(ptm kind, lowercases?) of a tokenizer.json written by any tool."""
    model_type = tokenizer_json.get("model", {}).get("type")
    text = str(tokenizer_json.get("pre_tokenizer")) + str(tokenizer_json.get("decoder"))
    kind = {"WordPiece": "wordpiece", "Unigram": "unigram"}.get(model_type)
    if model_type == "BPE":
        kind = "bytelevel" if "ByteLevel" in text else "bpe"
    if kind is None:
        raise PtmError(f"tokenizer.json holds a {model_type} model; ptm reads WordPiece, BPE and Unigram")
    normalizer = str(tokenizer_json.get("normalizer"))
    lowercase = "Lowercase" in normalizer or "'lowercase': True" in normalizer
    return kind, lowercase
