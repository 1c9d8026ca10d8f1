"""ELECTRA's entry in the conversion table: transformers ``Electra*`` classes <-> ptm ``arch: "electra"``.

transformers keeps the two networks apart: ``ElectraForPreTraining`` is the discriminator,
``ElectraForMaskedLM`` the generator, each a whole model with its own copy of the embeddings. A ptm
checkpoint holds both with one set of embeddings: it converts to the discriminator classes (its encoder
``electra.*``), and with ``--hf-class ElectraForMaskedLM`` to the generator (its ``generator.*`` over the
shared embeddings), whose config.json then describes the generator's shape. A transformers generator
alone has no discriminator to be ptm's encoder and is refused; a discriminator alone converts into a ptm
checkpoint without a generator, an encoder to finetune.

The sequence classifier's ``classifier.dense`` is ptm's ``electra.pooler.dense`` (dense + GELU on [CLS])
and its ``classifier.out_proj`` ptm's ``classifier``.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import electra

_GENERATOR = "ElectraForMaskedLM"
_SEQUENCE = "ElectraForSequenceClassification"
_BARE = "ElectraModel"  # the one class whose keys have no "electra." prefix
CLASSES = {
    _BARE: HFClass(_BARE),
    "ElectraForPreTraining": HFClass("ElectraForPreTraining", frozenset({"rtd"}), objective="rtd"),
    _GENERATOR: HFClass(_GENERATOR, frozenset({"generator"}), objective="mlm"),
    _SEQUENCE: HFClass(_SEQUENCE, frozenset({"pooler", "classifier"}), task="classification"),
    "ElectraForTokenClassification": HFClass(
        "ElectraForTokenClassification", frozenset({"classifier"}), task="token-classification"),
}

# transformers config key -> ptm ElectraConfig field.
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
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size")
_HEAD_KEYS = {
    _SEQUENCE: {"electra.pooler.dense.weight": "classifier.dense.weight", "electra.pooler.dense.bias": "classifier.dense.bias",
                "classifier.weight": "classifier.out_proj.weight", "classifier.bias": "classifier.out_proj.bias"},
    "ElectraForTokenClassification": {"classifier.weight": "classifier.weight", "classifier.bias": "classifier.bias"},
}


def config_from_hf(hf: dict) -> dict:
    """ptm's ElectraConfig fields from a transformers discriminator's ElectraConfig."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    if _GENERATOR in (hf.get("architectures") or []):
        raise PtmError(f"config.json: a transformers {_GENERATOR} is an ELECTRA generator alone; ptm reads an ELECTRA "
                       "through its discriminator (ElectraForPreTraining, ElectraModel), the encoder it finetunes")
    unsupported = []
    if hf.get("hidden_act", "gelu") != "gelu":
        unsupported.append(f"hidden_act {hf['hidden_act']!r} (ptm's ELECTRA uses the exact GELU, 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append(f"position_embedding_type {hf['position_embedding_type']!r} (ptm's ELECTRA has absolute positions)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        unsupported.append("a decoder/cross-attention ELECTRA (is_decoder or add_cross_attention)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    return electra.ElectraConfig.from_dict(values).to_dict()


def _common(cfg: electra.ElectraConfig, specials: dict[str, int]) -> dict:
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="electra", hidden_act="gelu", position_embedding_type="absolute")
    return out


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers ElectraConfig fields of the discriminator."""
    return _common(electra.ElectraConfig.from_dict(model), specials)


def class_config_to_hf(model: dict, specials: dict[str, int], cls: HFClass) -> dict:
    """As :func:`config_to_hf`; for the generator class, the generator's shape."""
    cfg = electra.ElectraConfig.from_dict(model)
    out = _common(cfg, specials)
    if cls.name == _GENERATOR:
        out.update(hidden_size=cfg.generator_hidden_size, num_attention_heads=cfg.generator_heads,
                   intermediate_size=cfg.generator_intermediate_size, tie_word_embeddings=True)
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    if cls.name == _GENERATOR:
        raise PtmError(f"a transformers {_GENERATOR} is an ELECTRA generator alone; ptm reads an ELECTRA through its "
                       "discriminator (ElectraForPreTraining, ElectraModel)")
    if cls.name == _BARE or not any(k.startswith("electra.") for k in hf):
        hf = {(k if k.startswith(("classifier.", "discriminator_predictions.")) else f"electra.{k}"): v
              for k, v in hf.items()}
    out = electra.encoder_from_hf(hf, "electra.")
    heads = {**electra.HF_DISCRIMINATOR_HEAD, **_HEAD_KEYS.get(cls.name, {})}
    out.update({ours: hf[theirs] for ours, theirs in heads.items() if theirs in hf})
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    if cls.name == _GENERATOR:
        out = electra.encoder_to_hf(ours, "generator.")
        out.update({theirs: ours[mine] for mine, theirs in electra.HF_GENERATOR_HEAD.items() if mine in ours})
        return out
    out = electra.encoder_to_hf(ours, "electra.")
    heads = {**electra.HF_DISCRIMINATOR_HEAD, **_HEAD_KEYS.get(cls.name, {})}
    out.update({theirs: ours[mine] for mine, theirs in heads.items() if mine in ours})
    if cls.name == _BARE:
        out = {k.removeprefix("electra."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("discriminator_predictions.") for k in keys):
        return "ElectraForPreTraining"
    if any(k.startswith("generator_predictions.") for k in keys):
        return _GENERATOR
    if any(k.startswith("classifier.out_proj.") for k in keys):
        return _SEQUENCE
    return _BARE if not any(k.startswith("electra.") for k in keys) else ""


ALIASES = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

SPEC = ArchSpec(
    arch="electra",
    model_type="electra",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: electra.ElectraForPreTraining(electra.ElectraConfig.from_dict(model)),
    config_class=electra.ElectraConfig.from_dict,
    input_embedding="electra.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=("embeddings.position_ids", "embeddings.token_type_ids"),
    hf_part_names={"pooler": "classifier.dense.* in a sequence classifier", "rtd": "discriminator_predictions.*",
                   "generator": "generator.*, ELECTRA's generator; a discriminator converted alone has none", "classifier": "classifier.*"},
    guess_class=guess_class,
    class_config_to_hf=class_config_to_hf,
)
