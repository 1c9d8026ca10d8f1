"""T5's entry in the conversion table: transformers ``T5ForConditionalGeneration`` / ``T5Model`` /
``T5EncoderModel`` <-> ptm ``arch: "t5"``.

Key map: ptm fuses each self-attention's ``q``, ``k``, ``v`` into one ``qkv``
weight (query rows first) and each cross-attention's ``k``, ``v`` into ``kv``.
The relative position table of each stack sits in transformers' first block
(``block.0.layer.0.SelfAttention.relative_attention_bias``) and beside the
blocks in ptm (``position_bias``). The gated feed-forward's ``wi_0`` (through
GELU) is ptm's ``gate`` and ``wi_1`` its ``up``; ReLU's ``wi`` is ``up``.
T5 has no ``model.`` prefix: the three classes differ only in what they hold
(the decoder, part ``decoder``; ``lm_head``, part ``lm``, in v1.1's untied models).

Tying: the shared embedding is also the encoder's and the decoder's
``embed_tokens`` (checked equal, written once as ``shared.weight``). v1.0
projects onto it after scaling the decoder's output; v1.1 has an untied
``lm_head`` and no scaling. transformers 5 writes the two as
``tie_word_embeddings`` and ``scale_decoder_outputs`` (older versions only the
first, which then implies the second); an ``lm_head.weight`` equal to
``shared.weight`` is a tied copy and is dropped, one that differs is v1.1's head.

Tokenizer files: T5's sentencepiece model with its ``<extra_id_N>`` sentinels
after the model's pieces (``ptmcli.tokenization.published``).
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import t5

CLASSES = {
    "T5ForConditionalGeneration": HFClass("T5ForConditionalGeneration", frozenset({"decoder", "lm"}), frozenset({"lm"}),
                                          objective="denoise", exported_from=frozenset({"span-corruption", "mass"})),
    "T5Model": HFClass("T5Model", frozenset({"decoder"})),
    "T5EncoderModel": HFClass("T5EncoderModel"),
}

# transformers config key -> ptm T5Config field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "num_layers": "num_layers",
    "num_decoder_layers": "num_decoder_layers",
    "num_heads": "num_heads",
    "d_ff": "intermediate_size",
    "d_kv": "head_size",
    "feed_forward_proj": "feed_forward",
    "relative_attention_num_buckets": "relative_attention_num_buckets",
    "relative_attention_max_distance": "relative_attention_max_distance",
    "dropout_rate": "hidden_dropout",
    "layer_norm_epsilon": "layer_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "scale_decoder_outputs": "scale_decoder_outputs",
    "initializer_factor": "initializer_factor",
    "pad_token_id": "pad_token_id",
    "decoder_start_token_id": "decoder_start_token_id",
}
# transformers' T5Config defaults for keys a config.json may leave out.
_HF_DEFAULTS = {"d_kv": 64, "feed_forward_proj": "relu", "relative_attention_num_buckets": 32,
                "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
                "tie_word_embeddings": True, "initializer_factor": 1.0, "pad_token_id": 0, "decoder_start_token_id": 0}
_REQUIRED = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff")
# What transformers derives from feed_forward_proj (written by version 5, read by none).
_ACTIVATIONS = {"relu": ("relu", False), "gated-gelu": ("gelu_new", True)}


def config_from_hf(hf: dict) -> dict:
    """ptm's T5Config fields from a transformers T5Config; what ptm's T5 cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    projection = hf.get("feed_forward_proj", "relu")
    if projection not in _ACTIVATIONS:
        raise PtmError(f"config.json: ptm cannot represent feed_forward_proj {projection!r} "
                       f"(ptm's T5 has {' and '.join(repr(k) for k in _ACTIVATIONS)})")
    act, gated = _ACTIVATIONS[projection]
    if hf.get("dense_act_fn", act) != act or hf.get("is_gated_act", gated) != gated:
        raise PtmError(f"config.json: dense_act_fn {hf.get('dense_act_fn')!r} / is_gated_act {hf.get('is_gated_act')} "
                       f"disagree with feed_forward_proj {projection!r}")
    if hf.get("is_decoder"):
        raise PtmError("config.json: ptm cannot represent is_decoder true (a decoder-only T5 stack)")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    for theirs, default in _HF_DEFAULTS.items():
        values.setdefault(_CONFIG_KEYS[theirs], default)
    values.setdefault("scale_decoder_outputs", values["tie_word_embeddings"])  # older files: tying implies it
    if values.get("num_decoder_layers") == values["num_layers"]:
        values["num_decoder_layers"] = None
    return t5.T5Config.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers T5Config fields that a ptm T5Config determines."""
    cfg = t5.T5Config.from_dict(model)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    act, gated = _ACTIVATIONS[cfg.feed_forward]
    out.update(model_type="t5", num_decoder_layers=cfg.decoder_layers, scale_decoder_outputs=cfg.scales_output,
               dense_act_fn=act, is_gated_act=gated, is_encoder_decoder=True)
    eos = next((specials[role] for role in ("eos", "sep") if role in specials), None)
    if eos is not None:
        out["eos_token_id"] = eos
    return out


# ptm key (under t5.encoder/decoder.layers.N.) -> transformers keys (under block.N.), several when ptm fuses them.
_SELF = {"attention_norm": ("layer.0.layer_norm",),
         "attention.qkv": ("layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v"),
         "attention.out": ("layer.0.SelfAttention.o",)}
_CROSS = {"cross_attention_norm": ("layer.1.layer_norm",),
          "cross_attention.query": ("layer.1.EncDecAttention.q",),
          "cross_attention.kv": ("layer.1.EncDecAttention.k", "layer.1.EncDecAttention.v"),
          "cross_attention.out": ("layer.1.EncDecAttention.o",)}
_BIAS = ("position_bias.relative_attention_bias.weight", "block.0.layer.0.SelfAttention.relative_attention_bias.weight")
_EMBEDDING = "t5.word_embeddings.weight"
_HEAD = "lm_head.weight"


def _layer_map(side: str, gated: bool) -> dict[str, tuple[str, ...]]:
    ff = "layer.2" if side == "decoder" else "layer.1"
    ffn = {"ffn_norm": (f"{ff}.layer_norm",), "ffn.down": (f"{ff}.DenseReluDense.wo",)}
    if gated:
        ffn.update({"ffn.gate": (f"{ff}.DenseReluDense.wi_0",), "ffn.up": (f"{ff}.DenseReluDense.wi_1",)})
    else:
        ffn["ffn.up"] = (f"{ff}.DenseReluDense.wi",)
    return {**_SELF, **(_CROSS if side == "decoder" else {}), **ffn}


def _num_layers(keys, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _sides(keys, prefix: str) -> tuple[str, ...]:
    return tuple(side for side in ("encoder", "decoder") if any(k.startswith(f"{prefix}{side}.") for k in keys))


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers T5 state dict (any of the three classes) to ptm keys; a KeyError names a missing tensor.

    Copies of the shared embedding (``embed_tokens``, a tied ``lm_head``) must equal it and are dropped.
    """
    names = [n for n in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight") if n in hf]
    if not names:
        raise KeyError("shared.weight")
    embedding = hf[names[0]]
    for name in names[1:]:
        if not torch.equal(hf[name], embedding):
            raise PtmError(f"{name!r} differs from {names[0]!r}; T5 shares them, so the file cannot be converted "
                           "without loss")
    out = {_EMBEDDING: embedding}
    if _HEAD in hf and not torch.equal(hf[_HEAD], embedding):
        out[_HEAD] = hf[_HEAD]
    gated = any(".DenseReluDense.wi_0." in k for k in hf)
    for side in _sides(hf, ""):
        out[f"t5.{side}.{_BIAS[0]}"] = hf[f"{side}.{_BIAS[1]}"]
        out[f"t5.{side}.final_norm.weight"] = hf[f"{side}.final_layer_norm.weight"]
        for i in range(_num_layers(hf, f"{side}.block.")):
            for ours, theirs in _layer_map(side, gated).items():
                parts = [hf[f"{side}.block.{i}.{name}.weight"] for name in theirs]
                out[f"t5.{side}.layers.{i}.{ours}.weight"] = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm T5 state dict to transformers keys: the stacks it holds, the shared embedding once, and
    ``lm_head.weight`` when the model has its own."""
    out = {"shared.weight": ours[_EMBEDDING]}
    gated = any(".ffn.gate." in k for k in ours)
    for side in _sides(ours, "t5."):
        out[f"{side}.{_BIAS[1]}"] = ours[f"t5.{side}.{_BIAS[0]}"]
        out[f"{side}.final_layer_norm.weight"] = ours[f"t5.{side}.final_norm.weight"]
        for i in range(_num_layers(ours, f"t5.{side}.layers.")):
            for mine, theirs in _layer_map(side, gated).items():
                tensor = ours[f"t5.{side}.layers.{i}.{mine}.weight"]
                pieces = tensor.chunk(len(theirs)) if len(theirs) > 1 else (tensor,)
                for name, piece in zip(theirs, pieces, strict=True):
                    out[f"{side}.block.{i}.{name}.weight"] = piece.contiguous()
    if _HEAD in ours:
        out[_HEAD] = ours[_HEAD]
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return state_dict_from_hf(hf)


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return state_dict_to_hf(ours)


def guess_class(keys: set[str]) -> str:
    if _HEAD in keys:
        return "T5ForConditionalGeneration"
    return "T5ForConditionalGeneration" if any(k.startswith("decoder.") for k in keys) else "T5EncoderModel"


def config_from_weights(model: dict, hf: dict[str, torch.Tensor]) -> dict:
    """An ``lm_head`` that differs from the shared embedding is v1.1's own head whatever config.json says:
    transformers 5 re-saves such a model with ``tie_word_embeddings: true`` and keeps the head untied."""
    shared = next((hf[n] for n in ("shared.weight", "encoder.embed_tokens.weight") if n in hf), None)
    own_head = _HEAD in hf and shared is not None and not torch.equal(hf[_HEAD], shared)
    if own_head and model["tie_word_embeddings"]:
        model = {**model, "tie_word_embeddings": False}
    return model


def check_tokenizer(model: dict, tokenizer, where: str) -> None:
    if tokenizer is None:
        return
    pad = model["pad_token_id"]
    if tokenizer.pad_id is not None and tokenizer.pad_id != pad:
        raise PtmError(f"{where}: the tokenizer has padding id {tokenizer.pad_id} but config.json's pad_token_id is "
                       f"{pad}; T5 finds a source's padding, and starts its decoder, by that id, so the two must agree")


SPEC = ArchSpec(
    arch="t5",
    model_type="t5",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: t5.T5ForConditionalGeneration(t5.T5Config.from_dict(model)),
    config_class=t5.T5Config.from_dict,
    input_embedding=_EMBEDDING,
    hf_aliases={"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"},
    # Not weights ptm keeps: a cross-attention position table transformers never reads (some old files have
    # one), and a tied lm_head copy (state_dict_from_hf drops it when it equals the embedding).
    hf_buffers=("EncDecAttention.relative_attention_bias.weight", _HEAD),
    hf_part_names={"lm": "lm_head", "decoder": "decoder.*"},
    guess_class=guess_class,
    check_tokenizer=check_tokenizer,
    config_from_weights=config_from_weights,
)
