"""Pre-LN RoBERTa's entry in the conversion table: transformers ``RobertaPreLayerNorm*`` <-> ptm ``arch: "roberta"``
with ``norm: "pre"``.

transformers' pre-LN encoder is RoBERTa's (same embeddings, positions counted from the padding id, same
heads) with the block LayerNorms moved in front of each branch and one LayerNorm after the last block:

==========================================  ================================
transformers (``encoder.layer.{i}.``)       ptm (``roberta.layers.{i}.``)
==========================================  ================================
``attention.self.query/key/value``          ``attention.qkv`` (fused)
``attention.output.dense``                  ``attention.out``
``attention.LayerNorm`` (before attention)  ``attention_norm``
``intermediate.LayerNorm`` (before the FFN) ``ffn_norm``
``intermediate.dense`` / ``output.dense``   ``ffn.up`` / ``ffn.down``
``roberta_prelayernorm.LayerNorm``          ``roberta.final_norm``
==========================================  ================================

Everything else maps as in ``hf_roberta.py``, with ``roberta_prelayernorm.`` for ``roberta.``. A RoBERTa
checkpoint with ``norm: "post"`` goes through ``hf_roberta.py``; which entry a ptm checkpoint takes is
its ``norm`` (``ArchSpec.takes``). A model without biases has no transformers form and is refused.
"""

from __future__ import annotations

import torch

from ptmcli.convert import hf_roberta
from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.models import roberta
from ptmcli.models.bert import refuse_bias_free

_PREFIX = "RobertaPreLayerNorm"
_BARE = f"{_PREFIX}Model"  # the one class whose keys have no "roberta_prelayernorm." prefix
_TRUNK = "roberta_prelayernorm."

CLASSES = {
    _BARE: HFClass(_BARE, frozenset({"pooler"}), frozenset({"pooler"})),
    f"{_PREFIX}ForMaskedLM": HFClass(f"{_PREFIX}ForMaskedLM", frozenset({"mlm"}), objective="mlm"),
    f"{_PREFIX}ForSequenceClassification": HFClass(
        f"{_PREFIX}ForSequenceClassification", frozenset({"pooler", "classifier"}), task="classification"),
    f"{_PREFIX}ForTokenClassification": HFClass(
        f"{_PREFIX}ForTokenClassification", frozenset({"classifier"}), task="token-classification"),
    f"{_PREFIX}ForQuestionAnswering": HFClass(f"{_PREFIX}ForQuestionAnswering", frozenset({"classifier"}), task="qa"),
}
# The task heads are RoBERTa's: its table, under these class names.
_HEAD_KEYS = {name: hf_roberta._HEAD_KEYS[name.replace(_PREFIX, "Roberta", 1)]
              for name in CLASSES if name.replace(_PREFIX, "Roberta", 1) in hf_roberta._HEAD_KEYS}

_LAYER_KEYS = {  # ptm -> transformers, per layer, weight and bias alike
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.LayerNorm",
    "ffn_norm": "intermediate.LayerNorm",
    "ffn.up": "intermediate.dense",
    "ffn.down": "output.dense",
}
_GLOBAL_KEYS = {  # ptm -> transformers
    "roberta.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "roberta.embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "roberta.embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "roberta.embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "roberta.embeddings.norm.bias": "embeddings.LayerNorm.bias",
    "roberta.final_norm.weight": "LayerNorm.weight",
    "roberta.final_norm.bias": "LayerNorm.bias",
    "roberta.pooler.dense.weight": "pooler.dense.weight",
    "roberta.pooler.dense.bias": "pooler.dense.bias",
}


def _num_layers(keys, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ptm keys of a transformers pre-LN RoBERTa state dict (trunk and MLM head); unknown keys are ignored."""
    if not any(k.startswith(_TRUNK) for k in hf):
        hf = {k if k.startswith("lm_head.") else _TRUNK + k: v for k, v in hf.items()}
    out = {ours: hf[_TRUNK + theirs] for ours, theirs in _GLOBAL_KEYS.items() if _TRUNK + theirs in hf}
    for i in range(_num_layers(hf, f"{_TRUNK}encoder.layer.")):
        src, dst = f"{_TRUNK}encoder.layer.{i}.", f"roberta.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [hf[f"{src}attention.self.{name}.{kind}"] for name in ("query", "key", "value")]
            out[f"{dst}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
            for ours, theirs in _LAYER_KEYS.items():
                out[f"{dst}{ours}.{kind}"] = hf[f"{src}{theirs}.{kind}"]
    out.update({ours: hf[theirs] for ours, theirs in roberta._HF_HEAD_KEYS.items() if theirs in hf})
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``RobertaPreLayerNormForMaskedLM`` keys (plus the pooler) of a ptm pre-LN RoBERTa state dict."""
    refuse_bias_free(ours, "roberta.")
    out = {_TRUNK + theirs: ours[mine] for mine, theirs in _GLOBAL_KEYS.items() if mine in ours}
    for i in range(_num_layers(ours, "roberta.layers.")):
        src, dst = f"roberta.layers.{i}.", f"{_TRUNK}encoder.layer.{i}."
        for kind in ("weight", "bias"):
            query, key, value = ours[f"{src}attention.qkv.{kind}"].chunk(3, dim=0)
            for name, tensor in (("query", query), ("key", key), ("value", value)):
                out[f"{dst}attention.self.{name}.{kind}"] = tensor.contiguous()
            for mine, theirs in _LAYER_KEYS.items():
                out[f"{dst}{theirs}.{kind}"] = ours[f"{src}{mine}.{kind}"]
    out.update({theirs: ours[mine] for mine, theirs in roberta._HF_HEAD_KEYS.items() if mine in ours})
    return out


def config_from_hf(hf: dict) -> dict:
    """RoBERTa's fields (``hf_roberta.config_from_hf``) with ``norm: "pre"``."""
    model = hf_roberta.config_from_hf(hf)
    return roberta.RobertaConfig.from_dict({**model, "norm": "pre"}).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    out = hf_roberta.config_to_hf({**model, "norm": "post"}, specials)  # RoBERTa's fields; the layout is the class
    out["model_type"] = "roberta-prelayernorm"
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    heads = _HEAD_KEYS.get(cls.name, {})
    out = state_dict_from_hf({k: v for k, v in hf.items() if not k.startswith(("classifier.", "qa_outputs."))})
    out.update({ours: hf[theirs] for ours, theirs in heads.items() if theirs in hf})
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    heads = _HEAD_KEYS.get(cls.name, {})
    out = state_dict_to_hf({k: v for k, v in ours.items() if k not in heads})
    out.update({theirs: ours[mine] for mine, theirs in heads.items() if mine in ours})
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix(_TRUNK): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("lm_head.") for k in keys):
        return f"{_PREFIX}ForMaskedLM"
    if any(k.startswith("classifier.out_proj.") for k in keys):
        return f"{_PREFIX}ForSequenceClassification"
    return _BARE if not any(k.startswith(_TRUNK) for k in keys) else ""


ALIASES = {
    "lm_head.decoder.weight": f"{_TRUNK}embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}

SPEC = ArchSpec(
    arch="roberta",
    model_type="roberta-prelayernorm",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=hf_roberta.SPEC.build_model,
    config_class=hf_roberta.SPEC.config_class,
    input_embedding="roberta.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=hf_roberta.SPEC.hf_buffers,
    hf_part_names={"pooler": f"{_TRUNK}pooler.*, or classifier.dense.* in a sequence classifier", "mlm": "lm_head.*",
                   "classifier": "classifier.*"},
    guess_class=guess_class,
    check_tokenizer=hf_roberta.check_tokenizer,
    takes=lambda model: model.get("norm", "post") == "pre",
)
