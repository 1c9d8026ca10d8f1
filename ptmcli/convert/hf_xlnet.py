"""XLNet's entry in the conversion table: transformers ``XLNetLMHeadModel``/``XLNetModel`` <-> ptm ``arch: "xlnet"``.

Keys map through ``ptmcli.models.xlnet``'s ``state_dict_from_hf``/``state_dict_to_hf``. The LM head's weight
is the word embedding on both sides (``lm_loss.weight`` is never written); its bias is ptm's ``lm_bias``.
Settings ptm's XLNet does not compute (unidirectional attention, bidirectional data, a reuse length,
same-length attention, an activation other than exact GELU) are refused.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import xlnet

CLASSES = {
    "XLNetLMHeadModel": HFClass("XLNetLMHeadModel", frozenset({"lm"}), objective="plm"),
    "XLNetModel": HFClass("XLNetModel"),
}
_BARE = "XLNetModel"

_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "d_inner": "intermediate_size",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "clamp_len": "clamp_len",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "d_model", "n_layer", "n_head", "d_inner")


def config_from_hf(hf: dict) -> dict:
    """ptm's XLNetConfig fields from a transformers XLNetConfig; what ptm's XLNet cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    unsupported = []
    if hf.get("attn_type", "bi") != "bi":
        unsupported.append(f"attn_type {hf['attn_type']!r} (ptm's XLNet attends both ways)")
    for flag in ("bi_data", "same_length"):
        if hf.get(flag):
            unsupported.append(f"{flag} true")
    if hf.get("reuse_len"):
        unsupported.append("reuse_len")
    if hf.get("ff_activation", "gelu") != "gelu":
        unsupported.append(f"ff_activation {hf['ff_activation']!r} (ptm's XLNet has exact gelu)")
    if hf.get("d_head") is not None and hf["d_head"] * hf["n_head"] != hf["d_model"]:
        unsupported.append("d_head * n_head other than d_model")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    dropout = hf.get("dropout", 0.1)
    values.update(hidden_dropout=dropout, attention_dropout=dropout, mem_len=hf.get("mem_len") or None)
    return xlnet.XLNetConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    cfg = xlnet.XLNetConfig.from_dict(model)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    # transformers has one dropout rate for every place; ptm's hidden one stands for both.
    out.update(model_type="xlnet", d_head=cfg.head_size, dropout=cfg.hidden_dropout, mem_len=cfg.mem_len,
               attn_type="bi", bi_data=False, same_length=False, reuse_len=None, ff_activation="gelu",
               tie_word_embeddings=True)
    for role in ("bos", "eos"):
        if role in specials:
            out[f"{role}_token_id"] = specials[role]
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return xlnet.state_dict_from_hf(hf)


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    heads = ours["xlnet.layers.0.attention.r_w_bias"].shape[0]
    out = xlnet.state_dict_to_hf(ours, heads)
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("transformer."): v for k, v in out.items() if not k.startswith("lm_loss.")}
    return out


def guess_class(keys: set[str]) -> str:
    return "XLNetLMHeadModel" if any(k.startswith("lm_loss.") for k in keys) else "XLNetModel"


ALIASES = {"lm_loss.weight": "transformer.word_embedding.weight"}

SPEC = ArchSpec(
    arch="xlnet",
    model_type="xlnet",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: xlnet.XLNetForPermutationLM(xlnet.XLNetConfig.from_dict(model)),
    config_class=xlnet.XLNetConfig.from_dict,
    input_embedding="xlnet.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_part_names={"lm": "lm_loss"},
    guess_class=guess_class,
)
