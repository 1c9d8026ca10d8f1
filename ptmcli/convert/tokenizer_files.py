"""Tokenizer files across the conversion: a ``PtmTokenizer`` <-> a transformers directory.

Reading is ``ptmcli.tokenization.published`` (every command reads such
directories). Writing produces ``tokenizer.json`` (as it was read, padding and
truncation included), ``vocab.txt`` for WordPiece, or the sentencepiece model
under the name its class reads, and a ``tokenizer_config.json`` with only the
keys transformers reads, set from the tokenizer's own pipeline so that
transformers never rebuilds it differently.
"""

from __future__ import annotations

import json
from pathlib import Path

from ptmcli.tokenization.published import SENTINEL, read_hf_tokenizer, split_sentinels
from ptmcli.tokenization.specials import SENTENCEPIECE_MODELS
from ptmcli.tokenization.tokenizer import PtmTokenizer

__all__ = ["read_hf_tokenizer", "read_ptm_tokenizer", "write_hf_tokenizer"]


def read_ptm_tokenizer(checkpoint: Path) -> PtmTokenizer | None:
    """The tokenizer stored in a ptm checkpoint, or None when it has none."""
    if (checkpoint / "tokenizer.json").is_file() or (checkpoint / "tokenizer.model").is_file():
        return PtmTokenizer.load(checkpoint)
    return None


# The class that prepares text as a sentencepiece tokenizer read from an ALBERT or XLNet directory does, by the
# model_type it is written beside: XLNet's class also frames inputs as XLNet reads them (``A <sep> <cls>``).
_QUOTING_CLASSES = {"xlnet": "XLNetTokenizer"}
_XLNET_EXTRA_SPECIALS = ("<eop>", "<eod>")


def write_hf_tokenizer(tokenizer: PtmTokenizer, directory: Path, model_type: str | None = None) -> None:
    """The model file (+ vocab.txt) and a transformers tokenizer_config.json into ``directory``; ``model_type``
    is the model's (config.json), which picks the class of a sentencepiece tokenizer with ALBERT's text steps."""
    config: dict = {"model_max_length": tokenizer.model_max_length}
    config.update({f"{role}_token": token for role, token in tokenizer.special_tokens.items()})
    if tokenizer.kind in SENTENCEPIECE_MODELS:
        steps = tokenizer.text_steps
        base, sentinels = split_sentinels(tokenizer.model_file_bytes())
        if sentinels and not steps:
            # Read from a T5 directory: T5Tokenizer appends the sentinels to spiece.model itself.
            (directory / "spiece.model").write_bytes(base)
            config.update(tokenizer_class="T5Tokenizer", extra_ids=sentinels,
                          additional_special_tokens=[SENTINEL.format(i) for i in range(sentinels)])
        elif "quotes" in steps:
            # Read from an ALBERT or XLNet directory: both classes redo the steps from these keys.
            (directory / "spiece.model").write_bytes(tokenizer.model_file_bytes())
            cls = _QUOTING_CLASSES.get(model_type or "", "AlbertTokenizer")
            config.update(tokenizer_class=cls, do_lower_case="lowercase" in steps,
                          keep_accents="strip-accents" not in steps)
            if cls == "XLNetTokenizer":
                # Named even when empty: XLNetTokenizer would otherwise add <eop> <eod> the model may lack.
                config["additional_special_tokens"] = [t for t in _XLNET_EXTRA_SPECIALS
                                                       if tokenizer.token_to_id(t) is not None]
        else:
            # The model file as is. Naming the generic class keeps transformers from picking
            # one by config.json's model_type (BertTokenizer would look for a vocab.txt).
            (directory / "tokenizer.model").write_bytes(tokenizer.model_file_bytes())
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
            if "lowercase" in steps:
                config["do_lower_case"] = True
        _write_json(directory / "tokenizer_config.json", config)
        return
    backend = _with_post_processor(tokenizer)
    description = json.loads(backend.to_str())
    backend.save(str(directory / "tokenizer.json"), pretty=True)
    normalizer = description.get("normalizer") or {}
    if description.get("model", {}).get("type") == "WordPiece" and normalizer.get("type") == "BertNormalizer":
        # The keys transformers' BERT tokenizer rebuilds the normalizer from: equal to it, so nothing changes.
        config.update(tokenizer_class="BertTokenizer", do_lower_case=normalizer.get("lowercase"),
                      strip_accents=normalizer.get("strip_accents"),
                      tokenize_chinese_chars=normalizer.get("handle_chinese_chars"))
        _write_vocab(description, directory / "vocab.txt")
    else:
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_json(directory / "tokenizer_config.json", config)


def _with_post_processor(tokenizer: PtmTokenizer):
    """The saved tokenizers pipeline (stored padding and truncation included), adding
    [CLS]/[SEP] the way other libraries expect when it has no post-processor."""
    from tokenizers import Tokenizer

    from ptmcli.tokenization.pipelines import add_post_processor

    copy = Tokenizer.from_str(tokenizer.model_file_bytes().decode("utf-8"))
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
