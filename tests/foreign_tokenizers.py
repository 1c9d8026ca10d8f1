"""Tokenizer directories as published models ship them, built here with `tokenizers` and `sentencepiece`.

Each builder writes one directory under ``root`` and returns its path: the
files and keys transformers writes (``tokenizer.json`` with the fixed padding
and truncation a finetuning script leaves in it, ``tokenizer_config.json``,
``special_tokens_map.json``, ``vocab.txt``, ``vocab.json`` + ``merges.txt``,
``spiece.model``). The vocabularies are learned from the first paragraphs of
ptm's bundled Wikipedia sample, so ordinary English splits into real pieces.
Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import unicodedata
from functools import lru_cache
from pathlib import Path

from ptmcli.pretraining.sample import SAMPLE

PADDED_LENGTH = 128
VOCAB_SIZE = 1000
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
END_OF_TEXT = "<|endoftext|>"
NEW_SPECIAL = "[NEW]"  # a special token added by a finetuning script
NEW_WORD = "covid"  # a plain word added to the vocabulary, matched whole


@lru_cache(maxsize=1)
def sample_paragraphs(count: int = 400) -> tuple[str, ...]:
    """The first ``count`` text paragraphs of the bundled sample (no markup, no titles)."""
    paragraphs = []
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if len(line) > 80 and not line.startswith("<"):
                paragraphs.append(line)
                if len(paragraphs) == count:
                    break
    return tuple(paragraphs)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _added(content: str, special: bool = True, lstrip: bool = False) -> dict:
    """An added_tokens_decoder entry as transformers writes it."""
    return {"content": content, "lstrip": lstrip, "normalized": not special, "rstrip": False, "single_word": False,
            "special": special}


def _padding_keys() -> dict:
    """What transformers >= 4.34 leaves in tokenizer_config.json after `tokenizer(..., padding="max_length",
    truncation=True, max_length=128)` and `save_pretrained`."""
    return {"max_length": PADDED_LENGTH, "pad_to_multiple_of": None, "pad_token_type_id": 0, "padding_side": "right",
            "stride": 0, "truncation_side": "right", "truncation_strategy": "longest_first"}


# -- WordPiece (BERT) -----------------------------------------------------------------------------


def _train_wordpiece(lowercase: bool):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_trained_wordpiece(lowercase))


@lru_cache(maxsize=2)
def _trained_wordpiece(lowercase: bool) -> str:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                      lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=BERT_SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(sample_paragraphs(), trainer)
    return tokenizer.to_str()


def _model_vocab(tokenizer) -> list[str]:
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    return sorted(vocab, key=vocab.__getitem__)


def bert_padded(root: Path) -> Path:
    """An uncased BERT directory a finetuning script saved: tokenizer.json with fixed padding and
    truncation to 128, a special and a plain added token, [CLS] $A [SEP] post-processing, plus
    vocab.txt, tokenizer_config.json and special_tokens_map.json."""
    from tokenizers import AddedToken, processors

    directory = root / "bert-padded"
    directory.mkdir(parents=True)
    tokenizer = _train_wordpiece(lowercase=True)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BERT_SPECIALS])
    tokenizer.add_special_tokens([AddedToken(NEW_SPECIAL, special=True, normalized=False)])
    tokenizer.add_tokens([AddedToken(NEW_WORD, special=False, normalized=True)])
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]", length=PADDED_LENGTH)
    tokenizer.enable_truncation(max_length=PADDED_LENGTH)
    tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
    vocab = _model_vocab(tokenizer)
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    decoder = {str(i): _added(token) for i, token in enumerate(BERT_SPECIALS)}
    decoder[str(len(vocab))] = _added(NEW_SPECIAL)
    decoder[str(len(vocab) + 1)] = _added(NEW_WORD, special=False)
    _write_json(directory / "tokenizer_config.json", {
        "added_tokens_decoder": decoder, "additional_special_tokens": [NEW_SPECIAL],
        "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True,
        "mask_token": "[MASK]", "model_max_length": 512, "never_split": None, "pad_token": "[PAD]",
        "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]", **_padding_keys()})
    _write_json(directory / "special_tokens_map.json", {
        "additional_special_tokens": [NEW_SPECIAL], "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
        "sep_token": "[SEP]", "unk_token": "[UNK]"})
    return directory


def bert_vocab_only(root: Path) -> Path:
    """A cased BERT directory of the first releases: vocab.txt and tokenizer_config.json only."""
    directory = root / "bert-vocab"
    directory.mkdir(parents=True)
    vocab = _model_vocab(_train_wordpiece(lowercase=False))
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    _write_json(directory / "tokenizer_config.json", {"do_lower_case": False, "model_max_length": 512,
                                                      "tokenizer_class": "BertTokenizer"})
    return directory


# -- byte-level BPE (GPT-2, RoBERTa) ------------------------------------------------------------


def _train_byte_level(specials: list[str]):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(_trained_byte_level(tuple(specials)))


@lru_cache(maxsize=2)
def _trained_byte_level(specials: tuple[str, ...]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sample_paragraphs(), trainer)
    return tokenizer.to_str()


def _save_vocab_merges(tokenizer, directory: Path) -> None:
    tokenizer.model.save(str(directory))  # vocab.json + merges.txt


def gpt2_vocab_merges(root: Path) -> Path:
    """GPT-2 as first released: vocab.json + merges.txt, and the tokenizer_config.json transformers writes."""
    directory = root / "gpt2-files"
    directory.mkdir(parents=True)
    tokenizer = _train_byte_level([END_OF_TEXT])
    _save_vocab_merges(tokenizer, directory)
    _write_json(directory / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(tokenizer.token_to_id(END_OF_TEXT)): _added(END_OF_TEXT)},
        "bos_token": END_OF_TEXT, "clean_up_tokenization_spaces": False, "eos_token": END_OF_TEXT, "errors": "replace",
        "model_max_length": 1024, "pad_token": None, "tokenizer_class": "GPT2Tokenizer", "unk_token": END_OF_TEXT})
    return directory


def gpt2_padded(root: Path) -> Path:
    """A finetuned GPT-2's directory: the end-of-text token doubles as padding, and tokenizer.json
    keeps fixed padding and truncation to 128."""
    from tokenizers import AddedToken, processors

    directory = root / "gpt2-padded"
    directory.mkdir(parents=True)
    tokenizer = _train_byte_level([END_OF_TEXT])
    end = tokenizer.token_to_id(END_OF_TEXT)
    tokenizer.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=False)])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.enable_padding(pad_id=end, pad_token=END_OF_TEXT, length=PADDED_LENGTH)
    tokenizer.enable_truncation(max_length=PADDED_LENGTH)
    tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
    _save_vocab_merges(tokenizer, directory)
    _write_json(directory / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": {str(end): _added(END_OF_TEXT)},
        "bos_token": END_OF_TEXT, "clean_up_tokenization_spaces": False, "eos_token": END_OF_TEXT, "errors": "replace",
        "model_max_length": 1024, "pad_token": END_OF_TEXT, "tokenizer_class": "GPT2Tokenizer",
        "unk_token": END_OF_TEXT, **_padding_keys()})
    _write_json(directory / "special_tokens_map.json", {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT,
                                                        "pad_token": END_OF_TEXT, "unk_token": END_OF_TEXT})
    return directory


def roberta_padded(root: Path) -> Path:
    """A finetuned RoBERTa's directory: tokenizer.json with <s> $A </s> post-processing, a <mask> that
    takes the space before it, fixed padding and truncation to 128; vocab.json + merges.txt beside it."""
    from tokenizers import AddedToken, processors

    directory = root / "roberta-padded"
    directory.mkdir(parents=True)
    tokenizer = _train_byte_level(ROBERTA_SPECIALS)
    ids = {token: tokenizer.token_to_id(token) for token in ROBERTA_SPECIALS}
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", ids["</s>"]), ("<s>", ids["<s>"]),
                                                            trim_offsets=True, add_prefix_space=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>")
                                  for t in ROBERTA_SPECIALS])
    tokenizer.enable_padding(pad_id=ids["<pad>"], pad_token="<pad>", length=PADDED_LENGTH)
    tokenizer.enable_truncation(max_length=PADDED_LENGTH)
    tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
    _save_vocab_merges(tokenizer, directory)
    _write_json(directory / "tokenizer_config.json", {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): _added(t, lstrip=t == "<mask>") for t, i in ids.items()},
        "bos_token": "<s>", "clean_up_tokenization_spaces": True, "cls_token": "<s>", "eos_token": "</s>",
        "errors": "replace", "mask_token": "<mask>", "model_max_length": 512, "pad_token": "<pad>",
        "sep_token": "</s>", "tokenizer_class": "RobertaTokenizer", "trim_offsets": True, "unk_token": "<unk>",
        **_padding_keys()})
    _write_json(directory / "special_tokens_map.json", {
        "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "sep_token": "</s>",
        "unk_token": "<unk>", "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False,
                                             "single_word": False}})
    return directory


# -- sentencepiece (ALBERT) ---------------------------------------------------------------------


def albert_text(text: str) -> str:
    """What AlbertTokenizer does to text before its model: LaTeX quotes, accents, case."""
    text = text.replace("``", '"').replace("''", '"')
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")
    return text.lower()


def albert_spiece(root: Path) -> Path:
    """An ALBERT directory: a unigram spiece.model (learned from lowercased text, as ALBERT's was) with
    <pad> <unk> [CLS] [SEP] [MASK] first, and ALBERT's tokenizer_config.json (do_lower_case true)."""
    import sentencepiece

    directory = root / "albert"
    directory.mkdir(parents=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([albert_text(p) for p in sample_paragraphs()]), model_writer=model,
        model_type="unigram", vocab_size=VOCAB_SIZE, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
        control_symbols=["[CLS]", "[SEP]", "[MASK]"], num_threads=1, minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    _write_json(directory / "tokenizer_config.json", {
        "added_tokens_decoder": {str(i): _added(t, lstrip=t == "[MASK]") for i, t in enumerate(specials)},
        "bos_token": "[CLS]", "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_lower_case": True,
        "eos_token": "[SEP]", "keep_accents": False, "mask_token": "[MASK]", "model_max_length": 512,
        "pad_token": "<pad>", "remove_space": True, "sep_token": "[SEP]", "sp_model_kwargs": {},
        "tokenizer_class": "AlbertTokenizer", "unk_token": "<unk>"})
    _write_json(directory / "special_tokens_map.json", {
        "bos_token": "[CLS]", "cls_token": "[CLS]", "eos_token": "[SEP]", "pad_token": "<pad>", "sep_token": "[SEP]",
        "unk_token": "<unk>", "mask_token": {"content": "[MASK]", "lstrip": True, "normalized": False, "rstrip": False,
                                             "single_word": False}})
    return directory


BUILDERS = {
    "bert-padded": bert_padded,
    "bert-vocab": bert_vocab_only,
    "gpt2-files": gpt2_vocab_merges,
    "gpt2-padded": gpt2_padded,
    "roberta-padded": roberta_padded,
    "albert": albert_spiece,
}
