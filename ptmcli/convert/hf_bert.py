"""BERT's entry in the conversion table: transformers ``Bert*`` classes <-> ptm ``arch: "bert"``.

The encoder and pretraining-head keys map through ``ptmcli.models.bert``'s
``state_dict_from_hf``/``state_dict_to_hf``; the task head ``classifier.*`` has
the same name on both sides, except in ``BertForQuestionAnswering``, where it is ``qa_outputs.*``. transformers' ``BertModel`` stores its keys
without the ``bert.`` prefix.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import MASKED_LM_OBJECTIVES, SPAN_OBJECTIVES, ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import bert

CLASSES = {
    "BertModel": HFClass("BertModel", frozenset({"pooler"}), frozenset({"pooler"})),
    "BertForPreTraining": HFClass("BertForPreTraining", frozenset({"pooler", "mlm", "nsp"}), objective="mlm+nsp"),
    "BertForMaskedLM": HFClass("BertForMaskedLM", frozenset({"mlm"}), objective="mlm",
                               exported_from=SPAN_OBJECTIVES | MASKED_LM_OBJECTIVES),
    "BertForSequenceClassification": HFClass(
        "BertForSequenceClassification", frozenset({"pooler", "classifier"}), task="classification"),
    "BertForTokenClassification": HFClass(
        "BertForTokenClassification", frozenset({"classifier"}), task="token-classification"),
    "BertForQuestionAnswering": HFClass("BertForQuestionAnswering", frozenset({"classifier"}), task="qa"),
}
_BARE = "BertModel"  # the one class whose keys have no "bert." prefix

# transformers config key -> ptm BertConfig field.
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
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_CLASSIFIER = ("classifier.weight", "classifier.bias")
# transformers' name of ptm's task head, by class: the span head is "qa_outputs", the rest "classifier".
_HEAD_NAMES = {"BertForQuestionAnswering": "qa_outputs"}


def config_from_hf(hf: dict) -> dict:
    """ptm's BertConfig fields from a transformers BertConfig; what ptm's BERT cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    unsupported = []
    if hf.get("hidden_act", "gelu") != "gelu":
        unsupported.append(f"hidden_act {hf['hidden_act']!r} (ptm's BERT uses the exact GELU, 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append(f"position_embedding_type {hf['position_embedding_type']!r} (ptm's BERT has absolute positions)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        unsupported.append("a decoder/cross-attention BERT (is_decoder or add_cross_attention)")
    if hf.get("tie_word_embeddings") is False:
        unsupported.append("tie_word_embeddings false (ptm's MLM decoder is the word embedding)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    return bert.BertConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers BertConfig fields that a ptm BertConfig determines."""
    cfg = bert.BertConfig.from_dict(model)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="bert", hidden_act="gelu", position_embedding_type="absolute", tie_word_embeddings=True)
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = bert.state_dict_from_hf(hf)
    head = _HEAD_NAMES.get(cls.name, "classifier")
    for key in _CLASSIFIER:
        theirs = key.replace("classifier", head, 1)
        if theirs in hf:
            out[key] = hf[theirs]
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = bert.state_dict_to_hf(ours)
    head = _HEAD_NAMES.get(cls.name, "classifier")
    for key in _CLASSIFIER:
        if key in ours:
            out[key.replace("classifier", head, 1)] = ours[key]
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("bert."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("cls.seq_relationship.") for k in keys):
        return "BertForPreTraining"
    if any(k.startswith("cls.predictions.") for k in keys):
        return "BertForMaskedLM"
    return "BertModel" if not any(k.startswith("bert.") for k in keys) else ""


ALIASES = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}

SPEC = ArchSpec(
    arch="bert",
    model_type="bert",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: bert.BertForPreTraining(bert.BertConfig.from_dict(model)),
    config_class=bert.BertConfig.from_dict,
    input_embedding="bert.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=("embeddings.position_ids", "embeddings.token_type_ids"),
    hf_part_names={"pooler": "bert.pooler.*", "mlm": "cls.predictions.*", "nsp": "cls.seq_relationship.*",
                   "classifier": "classifier.*, or qa_outputs.* in a question-answering model"},
    guess_class=guess_class,
)
