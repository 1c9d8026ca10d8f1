"""ALBERT's entry in the conversion table: transformers ``Albert*`` classes <-> ptm ``arch: "albert"``.

The encoder and pretraining-head keys map through ``ptmcli.models.albert``'s
``state_dict_from_hf``/``state_dict_to_hf``; the task head ``classifier.*`` has
the same name on both sides. transformers' ``AlbertModel`` stores its keys
without the ``albert.`` prefix.

transformers shares whole layers in ``num_hidden_groups`` groups of
``inner_group_num`` layers each. ptm's ``share: "all"`` is one group of one
layer, ``"none"`` one group per depth; sharing only the attention or only the
feed-forward sublayer has no transformers form and is refused, naming ``--share``.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import SPAN_OBJECTIVES, ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import albert

CLASSES = {
    "AlbertModel": HFClass("AlbertModel", frozenset({"pooler"}), frozenset({"pooler"})),
    "AlbertForPreTraining": HFClass("AlbertForPreTraining", frozenset({"pooler", "mlm", "sop"}), objective="mlm+sop"),
    "AlbertForMaskedLM": HFClass("AlbertForMaskedLM", frozenset({"mlm"}), objective="mlm", exported_from=SPAN_OBJECTIVES),
    "AlbertForSequenceClassification": HFClass(
        "AlbertForSequenceClassification", frozenset({"pooler", "classifier"}), task="classification"),
    "AlbertForTokenClassification": HFClass(
        "AlbertForTokenClassification", frozenset({"classifier"}), task="token-classification"),
}
_BARE = "AlbertModel"  # the one class whose keys have no "albert." prefix

# transformers config key -> ptm AlbertConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "embedding_size": "embedding_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "classifier_dropout_prob": "classifier_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")
# transformers' activation names -> ptm's: gelu_pytorch_tanh is gelu_new's formula in one kernel.
_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu"}
_CLASSIFIER = ("classifier.weight", "classifier.bias")


def config_from_hf(hf: dict) -> dict:
    """ptm's AlbertConfig fields from a transformers AlbertConfig; what ptm's ALBERT cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    layers, groups, inner = hf["num_hidden_layers"], hf.get("num_hidden_groups", 1), hf.get("inner_group_num", 1)
    activation = hf.get("hidden_act", "gelu_new")
    unsupported = []
    if inner != 1:
        unsupported.append(f"inner_group_num {inner} (ptm's ALBERT has one layer per group)")
    if groups not in (1, layers):
        unsupported.append(f"num_hidden_groups {groups} (ptm's ALBERT shares one layer across all depths, "
                           f"num_hidden_groups 1, or none, num_hidden_groups {layers})")
    if activation not in _ACTIVATIONS:
        unsupported.append(f"hidden_act {activation!r} (ptm's ALBERT has {', '.join(_ACTIVATIONS)})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append(f"position_embedding_type {hf['position_embedding_type']!r} (ptm's ALBERT has absolute positions)")
    if hf.get("tie_word_embeddings") is False:
        unsupported.append("tie_word_embeddings false (ptm's MLM decoder is the word embedding)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    values.update(hidden_act=_ACTIVATIONS[activation], share="all" if groups == 1 else "none")
    return albert.AlbertConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers AlbertConfig fields that a ptm AlbertConfig determines."""
    cfg = albert.AlbertConfig.from_dict(model)
    albert.check_transformers_sharing(cfg.share)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="albert", hidden_act=cfg.hidden_act, inner_group_num=1,
               num_hidden_groups=1 if cfg.share == "all" else cfg.num_layers,
               position_embedding_type="absolute", tie_word_embeddings=True)
    # ALBERT's tokenizer uses [CLS] and [SEP] as its begin and end of sequence.
    for role, key in (("cls", "bos_token_id"), ("sep", "eos_token_id")):
        if role in specials:
            out[key] = specials[role]
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = albert.state_dict_from_hf(hf)
    for key in _CLASSIFIER:
        if key in hf:
            out[key] = hf[key]
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = albert.state_dict_to_hf(ours)
    for key in _CLASSIFIER:
        if key in ours:
            out[key] = ours[key]
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("albert."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("sop_classifier.") for k in keys):
        return "AlbertForPreTraining"
    if any(k.startswith("predictions.") for k in keys):
        return "AlbertForMaskedLM"
    return "AlbertModel" if not any(k.startswith("albert.") for k in keys) else ""


ALIASES = {
    "predictions.decoder.weight": "albert.embeddings.word_embeddings.weight",
    "predictions.decoder.bias": "predictions.bias",
}

SPEC = ArchSpec(
    arch="albert",
    model_type="albert",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: albert.AlbertForPreTraining(albert.AlbertConfig.from_dict(model)),
    config_class=albert.AlbertConfig.from_dict,
    input_embedding="albert.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=("embeddings.position_ids", "embeddings.token_type_ids"),
    hf_part_names={"pooler": "albert.pooler.*", "mlm": "predictions.*", "sop": "sop_classifier.*",
                   "classifier": "classifier.*"},
    guess_class=guess_class,
)
