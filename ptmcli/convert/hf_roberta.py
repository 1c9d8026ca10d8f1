"""RoBERTa's entry in the conversion table: transformers ``Roberta*`` classes <-> ptm ``arch: "roberta"``.

The encoder and MLM-head keys map through ``ptmcli.models.roberta``'s
``state_dict_from_hf``/``state_dict_to_hf``. transformers' sequence
classifier is a dense + tanh over ``<s>`` then ``out_proj``: its
``classifier.dense`` is ptm's pooler and ``classifier.out_proj`` ptm's
``classifier``; the token classifier's ``classifier`` has the same name on
both sides. transformers' ``RobertaModel`` stores its keys without the
``roberta.`` prefix.

transformers' ``max_position_embeddings`` counts the rows of the position
table (514 for roberta-base), ptm's the tokens a sequence may hold (512): they
differ by ``pad_token_id + 1``.

A RoBERTa converts only with its tokenizer: the tokenizer frames its inputs
(``<s> A </s></s> B </s>``) and pads with the id its positions are counted
from, so a directory without tokenizer files, or whose tokenizer pads with
another id than config.json's ``pad_token_id``, is refused.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import MASKED_LM_OBJECTIVES, ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import roberta

CLASSES = {
    "RobertaModel": HFClass("RobertaModel", frozenset({"pooler"}), frozenset({"pooler"})),
    "RobertaForMaskedLM": HFClass("RobertaForMaskedLM", frozenset({"mlm"}), objective="mlm",
                        exported_from=MASKED_LM_OBJECTIVES),
    "RobertaForSequenceClassification": HFClass(
        "RobertaForSequenceClassification", frozenset({"pooler", "classifier"}), task="classification"),
    "RobertaForTokenClassification": HFClass(
        "RobertaForTokenClassification", frozenset({"classifier"}), task="token-classification"),
    "RobertaForQuestionAnswering": HFClass("RobertaForQuestionAnswering", frozenset({"classifier"}), task="qa"),
}
_BARE = "RobertaModel"  # the one class whose keys have no "roberta." prefix
_SEQUENCE = "RobertaForSequenceClassification"

# transformers config key -> ptm RobertaConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "classifier_dropout": "classifier_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
# What transformers' RobertaConfig assumes for keys a config.json leaves out (its defaults, not ptm's).
_HF_DEFAULTS = {"max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 1}
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# ptm key -> transformers key of each task head, by class.
_HEAD_KEYS = {
    _SEQUENCE: {"roberta.pooler.dense.weight": "classifier.dense.weight",
                "roberta.pooler.dense.bias": "classifier.dense.bias",
                "classifier.weight": "classifier.out_proj.weight", "classifier.bias": "classifier.out_proj.bias"},
    "RobertaForTokenClassification": {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"},
    "RobertaForQuestionAnswering": {"classifier.weight": "qa_outputs.weight", "classifier.bias": "qa_outputs.bias"},
}


def config_from_hf(hf: dict) -> dict:
    """ptm's RobertaConfig fields from a transformers RobertaConfig; what ptm's RoBERTa cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    unsupported = []
    if hf.get("hidden_act", "gelu") != "gelu":
        unsupported.append(f"hidden_act {hf['hidden_act']!r} (ptm's RoBERTa uses the exact GELU, 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append(f"position_embedding_type {hf['position_embedding_type']!r} (ptm's RoBERTa has absolute positions)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        unsupported.append("a decoder/cross-attention RoBERTa (is_decoder or add_cross_attention)")
    if hf.get("tie_word_embeddings") is False:
        unsupported.append("tie_word_embeddings false (ptm's MLM decoder is the word embedding)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    for theirs, default in _HF_DEFAULTS.items():
        values.setdefault(_CONFIG_KEYS[theirs], default)
    values.setdefault("classifier_dropout", None)
    # transformers counts the rows of the position table; ptm the tokens a sequence may hold.
    rows, pad = values["max_position_embeddings"], values["pad_token_id"]
    if rows <= pad + 1:
        raise PtmError(f"config.json: max_position_embeddings {rows} leaves no position after the padding id {pad} "
                       "(RoBERTa's positions start at pad_token_id + 1)")
    values["max_position_embeddings"] = rows - pad - 1
    return roberta.RobertaConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers RobertaConfig fields that a ptm RobertaConfig determines."""
    cfg = roberta.RobertaConfig.from_dict(model)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="roberta", hidden_act="gelu", position_embedding_type="absolute", tie_word_embeddings=True,
               max_position_embeddings=cfg.position_rows)
    # RoBERTa's <s> and </s> are its begin and end of sequence.
    for roles, key in ((("bos", "cls"), "bos_token_id"), (("eos", "sep"), "eos_token_id")):
        found = next((specials[role] for role in roles if role in specials), None)
        if found is not None:
            out[key] = found
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    heads = _HEAD_KEYS.get(cls.name, {})
    out = roberta.state_dict_from_hf({k: v for k, v in hf.items() if not k.startswith("classifier.")})
    out.update({ours: hf[theirs] for ours, theirs in heads.items() if theirs in hf})
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    heads = _HEAD_KEYS.get(cls.name, {})
    out = roberta.state_dict_to_hf({k: v for k, v in ours.items() if k not in heads})
    out.update({theirs: ours[mine] for mine, theirs in heads.items() if mine in ours})
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("roberta."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("lm_head.") for k in keys):
        return "RobertaForMaskedLM"
    if any(k.startswith("classifier.out_proj.") for k in keys):
        return _SEQUENCE
    return "RobertaModel" if not any(k.startswith("roberta.") for k in keys) else ""


def check_tokenizer(model: dict, tokenizer, where: str) -> None:
    if tokenizer is None:
        raise PtmError(f"{where}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt); a RoBERTa converts "
                       "only with its tokenizer, which frames its inputs <s> A </s></s> B </s> and pads with the id its "
                       "positions count from")
    pad = model["pad_token_id"]
    if tokenizer.pad_id != pad:
        has = "no padding token" if tokenizer.pad_id is None else f"padding id {tokenizer.pad_id}"
        raise PtmError(f"{where}: the tokenizer has {has} but config.json's pad_token_id is {pad}; RoBERTa counts "
                       "positions from the padding id, so the two must agree")


ALIASES = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}

SPEC = ArchSpec(
    arch="roberta",
    model_type="roberta",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: roberta.RobertaForMaskedLM(roberta.RobertaConfig.from_dict(model)),
    config_class=roberta.RobertaConfig.from_dict,
    input_embedding="roberta.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=("embeddings.position_ids", "embeddings.token_type_ids"),
    hf_part_names={"pooler": "roberta.pooler.*, or classifier.dense.* in a sequence classifier", "mlm": "lm_head.*",
                   "classifier": "classifier.*"},
    guess_class=guess_class,
    check_tokenizer=check_tokenizer,
)
