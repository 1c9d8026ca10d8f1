"""Tokenizer files across the conversion: a transformers directory <-> a ``PtmTokenizer``.

Reading takes, in order, ``tokenizer.json`` (used as is), ``vocab.txt`` (a BERT
WordPiece tokenizer rebuilt with the settings of ``tokenizer_config.json``),
``vocab.json`` + ``merges.txt`` (GPT-2's byte-level BPE), or
``tokenizer.model`` (sentencepiece). Writing produces ``tokenizer.json``,
``vocab.txt`` for WordPiece, and a ``tokenizer_config.json`` with only the keys
transformers reads, set from the tokenizer's own normalizer so that
transformers never rebuilds it differently.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.tokenization.specials import ROLES
from ptmcli.tokenization.tokenizer import PtmTokenizer, TokenizerSettings

_BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def _hf_tokenizer_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{path}: not valid JSON ({err})") from None
    return config if isinstance(config, dict) else {}


def _token(value) -> str | None:
    if isinstance(value, dict):  # transformers' AddedToken as JSON
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_hf_tokenizer(directory: str | Path) -> PtmTokenizer | None:
    """The tokenizer of a transformers model directory, or None when it has no tokenizer files."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file() or (directory / "tokenizer.model").is_file():
        return PtmTokenizer.load(directory)
    config = _hf_tokenizer_config(directory)
    if (directory / "vocab.txt").is_file():
        return _wordpiece(directory, config)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _byte_level_bpe(directory, config)
    return None


def _wordpiece(directory: Path, config: dict) -> PtmTokenizer:
    from ptmcli.tokenization.train import wordpiece_from_vocab

    if config.get("do_basic_tokenize") is False:
        raise PtmError(f"{directory / 'tokenizer_config.json'}: do_basic_tokenize false is not supported "
                       "(ptm's WordPiece always splits on whitespace and punctuation first)")
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    roles = dict(_BERT_SPECIALS)
    for role in ROLES:
        token = _token(config.get(f"{role}_token"))
        if token is not None:
            roles[role] = token
    max_length = config.get("model_max_length")
    settings = TokenizerSettings(
        kind="wordpiece",
        lowercase=lowercase,
        # BERT's tokenizers strip accents whenever they lowercase, unless told otherwise.
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        split_cjk=bool(config.get("tokenize_chinese_chars", True)),
        special_tokens=roles,
        model_max_length=max_length if isinstance(max_length, int) and max_length <= 1_000_000 else 512,
        special_set="bert",
    )
    return wordpiece_from_vocab(str(directory / "vocab.txt"), settings)


def _byte_level_bpe(directory: Path, config: dict) -> PtmTokenizer:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as err:  # tokenizers raises plain Exception for malformed files
        raise PtmError(f"{directory}: cannot read vocab.json/merges.txt ({str(err).splitlines()[0]})") from None
    tokenizer = Tokenizer(model)
    prefix_space = bool(config.get("add_prefix_space", False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = {_token(config.get(f"{role}_token")) for role in ROLES} | {"<|endoftext|>"}
    present = sorted(t for t in specials if t is not None and tokenizer.token_to_id(t) is not None)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in present])
    # Loaded through a directory so the settings are inferred exactly as for any foreign tokenizer.json.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
        if (directory / "tokenizer_config.json").is_file():
            shutil.copyfile(directory / "tokenizer_config.json", Path(tmp) / "tokenizer_config.json")
        return PtmTokenizer.load(tmp)


def read_ptm_tokenizer(checkpoint: Path) -> PtmTokenizer | None:
    """The tokenizer stored in a ptm checkpoint, or None when it has none."""
    if (checkpoint / "tokenizer.json").is_file() or (checkpoint / "tokenizer.model").is_file():
        return PtmTokenizer.load(checkpoint)
    return None


def write_hf_tokenizer(tokenizer: PtmTokenizer, directory: Path) -> None:
    """tokenizer.json (+ vocab.txt) and a transformers tokenizer_config.json into ``directory``."""
    from ptmcli.tokenization.specials import SENTENCEPIECE_MODELS

    config: dict = {"model_max_length": tokenizer.model_max_length}
    config.update({f"{role}_token": token for role, token in tokenizer.special_tokens.items()})
    if tokenizer.kind in SENTENCEPIECE_MODELS:
        # The model file as is: transformers reads it only through a sentencepiece-based class.
        (directory / "tokenizer.model").write_bytes(tokenizer.backend.serialized_model_proto())
        _write_json(directory / "tokenizer_config.json", config)
        return
    backend = _with_post_processor(tokenizer)
    description = json.loads(backend.to_str())
    backend.save(str(directory / "tokenizer.json"), pretty=True)
    normalizer = description.get("normalizer") or {}
    if description.get("model", {}).get("type") == "WordPiece" and normalizer.get("type") == "BertNormalizer":
        # The keys transformers' BERT tokenizer compares with the normalizer: equal, so it keeps it.
        config.update(tokenizer_class="BertTokenizer", do_lower_case=normalizer.get("lowercase"),
                      strip_accents=normalizer.get("strip_accents"),
                      tokenize_chinese_chars=normalizer.get("handle_chinese_chars"))
        _write_vocab(description, directory / "vocab.txt")
    else:
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(directory / "tokenizer_config.json", config)


def _with_post_processor(tokenizer: PtmTokenizer):
    """A copy of the tokenizers pipeline that adds [CLS]/[SEP] the way other libraries expect."""
    from tokenizers import Tokenizer

    from ptmcli.tokenization.pipelines import add_post_processor

    copy = Tokenizer.from_str(tokenizer.backend.to_str())
    if copy.post_processor is None:
        add_post_processor(copy, tokenizer.special_tokens, None)
    return copy


def _write_vocab(description: dict, path: Path) -> None:
    vocab = dict(description["model"]["vocab"])
    for added in description.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] == list(range(len(by_id))):
        path.write_text("".join(f"{token}\n" for token, _ in by_id), encoding="utf-8")


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
