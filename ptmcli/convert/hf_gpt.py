"""GPT-2's entry in the conversion table: transformers ``GPT2LMHeadModel``/``GPT2Model`` <-> ptm ``arch: "gpt"``.

Keys map through ``ptmcli.models.gpt``'s ``state_dict_from_hf``/``state_dict_to_hf``
(GPT-2's Conv1D weights are stored transposed). The LM head is the token
embedding on both sides, so ``lm_head.weight`` is never written.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import gpt

CLASSES = {
    "GPT2LMHeadModel": HFClass("GPT2LMHeadModel", objective="clm"),
    "GPT2Model": HFClass("GPT2Model"),
}
_BARE = "GPT2Model"

_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "n_embd": "hidden_size",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "n_positions": "max_position_embeddings",
    "resid_pdrop": "hidden_dropout",
    "attn_pdrop": "attention_dropout",
    "layer_norm_epsilon": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}
_REQUIRED = ("vocab_size", "n_embd", "n_layer", "n_head")
# Both are the tanh approximation of GELU; "gelu" is the exact one.
_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def config_from_hf(hf: dict) -> dict:
    """ptm's GPTConfig fields from a transformers GPT2Config; what ptm's GPT cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    activation = hf.get("activation_function", "gelu_new")
    unsupported = []
    if activation not in _GELU:
        unsupported.append(f"activation_function {activation!r} (ptm's GPT has {', '.join(_GELU)})")
    if hf.get("scale_attn_weights", True) is not True or hf.get("scale_attn_by_inverse_layer_idx"):
        unsupported.append("attention scaling other than 1/sqrt(head_dim) (scale_attn_weights, scale_attn_by_inverse_layer_idx)")
    if hf.get("add_cross_attention"):
        unsupported.append("add_cross_attention")
    if hf.get("tie_word_embeddings") is False:
        unsupported.append("tie_word_embeddings false (ptm's GPT projects onto the token embedding)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    values["intermediate_size"] = hf.get("n_inner") or 4 * hf["n_embd"]
    values.update(norm="pre", gelu=_GELU[activation])
    return gpt.GPTConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    cfg = gpt.GPTConfig.from_dict(model)
    if cfg.norm != "pre":
        raise PtmError("a GPT with post-LN blocks (GPT-1, norm 'post') has no transformers GPT2 equivalent")
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="gpt2", n_inner=cfg.intermediate_size, embd_pdrop=cfg.hidden_dropout,
               activation_function="gelu_new" if cfg.gelu == "tanh" else "gelu", tie_word_embeddings=True,
               scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False)
    for role in ("bos", "eos"):
        if role in specials:
            out[f"{role}_token_id"] = specials[role]
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return gpt.state_dict_from_hf(hf)


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    out = gpt.state_dict_to_hf(ours)
    for alias in ALIASES:
        out.pop(alias, None)
    if cls.name == _BARE:
        out = {k.removeprefix("transformer."): v for k, v in out.items()}
    return out


def guess_class(keys: set[str]) -> str:
    return "GPT2LMHeadModel" if any(k.startswith("transformer.") for k in keys) else "GPT2Model"


ALIASES = {"lm_head.weight": "transformer.wte.weight"}

SPEC = ArchSpec(
    arch="gpt",
    model_type="gpt2",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: gpt.GPTForCausalLM(gpt.GPTConfig.from_dict(model)),
    config_class=gpt.GPTConfig.from_dict,
    input_embedding="gpt.word_embeddings.weight",
    hf_aliases=ALIASES,
    hf_buffers=(".attn.bias", ".attn.masked_bias"),
    guess_class=guess_class,
)
