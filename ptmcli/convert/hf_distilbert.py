"""DistilBERT's entry in the conversion table: transformers ``DistilBert*`` classes <-> ptm ``arch: "distilbert"``.

The encoder and head keys map through ``ptmcli.models.distilbert``'s
``state_dict_from_hf``/``state_dict_to_hf``: the sequence classifier's
``pre_classifier`` is ptm's pooler, and ``classifier.*`` has the same name on
both sides. transformers' ``DistilBertModel`` stores its keys without the
``distilbert.`` prefix. As for BERT, a directory without tokenizer files
converts, with a note: DistilBERT's framing is BERT's, so any tokenizer with
[CLS] and [SEP] serves.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import MASKED_LM_OBJECTIVES, ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import distilbert

CLASSES = {
    "DistilBertModel": HFClass("DistilBertModel"),
    "DistilBertForMaskedLM": HFClass("DistilBertForMaskedLM", frozenset({"mlm"}), objective="mlm",
                           exported_from=MASKED_LM_OBJECTIVES),
    "DistilBertForSequenceClassification": HFClass(
        "DistilBertForSequenceClassification", frozenset({"pooler", "classifier"}), task="classification"),
    "DistilBertForTokenClassification": HFClass(
        "DistilBertForTokenClassification", frozenset({"classifier"}), task="token-classification"),
}
_BARE = "DistilBertModel"  # the one class whose keys have no "distilbert." prefix

# transformers config key -> ptm DistilBertConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "n_layers": "num_layers",
    "n_heads": "num_heads",
    "hidden_dim": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "seq_classif_dropout": "classifier_dropout",
    "sinusoidal_pos_embds": "sinusoidal_positions",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim")
_CLASSIFIER = ("classifier.weight", "classifier.bias")
_HF_LAYER_NORM_EPS = 1e-12  # transformers' DistilBERT has no setting for it


def config_from_hf(hf: dict) -> dict:
    """ptm's DistilBertConfig fields from a transformers DistilBertConfig; what ptm cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    if hf.get("activation", "gelu") != "gelu":
        raise PtmError(f"config.json: ptm cannot represent activation {hf['activation']!r} "
                       "(ptm's DistilBERT uses the exact GELU, 'gelu')")
    if hf.get("tie_word_embeddings") is False:
        raise PtmError("config.json: ptm cannot represent tie_word_embeddings false (ptm's MLM decoder is the word embedding)")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    return distilbert.DistilBertConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers DistilBertConfig fields that a ptm DistilBertConfig determines."""
    cfg = distilbert.DistilBertConfig.from_dict(model)
    if cfg.layer_norm_eps != _HF_LAYER_NORM_EPS:
        raise PtmError(f"a DistilBERT with layer_norm_eps {cfg.layer_norm_eps} has no transformers equivalent: "
                       f"transformers' DistilBERT fixes it at {_HF_LAYER_NORM_EPS}")
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="distilbert", activation="gelu", tie_word_embeddings=True)
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = distilbert.state_dict_from_hf(hf)
    for key in _CLASSIFIER:
        if key in hf:
            out[key] = hf[key]
    return out


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = distilbert.state_dict_to_hf(ours)
    for key in _CLASSIFIER:
        if key in ours:
            out[key] = ours[key]
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("distilbert."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    if any(k.startswith("vocab_projector.") for k in keys):
        return "DistilBertForMaskedLM"
    if any(k.startswith("pre_classifier.") for k in keys):
        return "DistilBertForSequenceClassification"
    return "DistilBertModel" if not any(k.startswith("distilbert.") for k in keys) else ""


ALIASES = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

SPEC = ArchSpec(
    arch="distilbert",
    model_type="distilbert",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: distilbert.DistilBertForMaskedLM(distilbert.DistilBertConfig.from_dict(model)),
    config_class=distilbert.DistilBertConfig.from_dict,
    input_embedding="distilbert.embeddings.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=("embeddings.position_ids",),
    hf_part_names={"pooler": "pre_classifier.*", "mlm": "vocab_transform.*, vocab_layer_norm.*, vocab_projector.*",
                   "classifier": "classifier.*"},
    guess_class=guess_class,
)
