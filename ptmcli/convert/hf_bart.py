"""BART's entry in the conversion table: transformers ``BartModel`` / ``BartForConditionalGeneration``
<-> ptm ``arch: "bart"``.

Key map: ptm fuses each self-attention's query, key and value projections
into one ``qkv`` weight (query rows first) and each cross-attention's key and
value into one ``kv``; transformers keeps ``q_proj``/``k_proj``/``v_proj``.
``final_logits_bias`` is ``[vocab]`` in ptm, ``[1, vocab]`` in transformers.
``BartModel`` stores its keys without the ``model.`` prefix and has no
``final_logits_bias`` (ptm's part ``lm``).

The shared embedding is tied to the encoder's and the decoder's
``embed_tokens`` and to ``lm_head``. transformers 5 writes it once, as
``shared.weight``; older files also carry the tied copies, and some only
them: every spelling is read (copies must be equal), ``shared.weight`` alone
is written.

Tokenizer files (BART's byte-level BPE) go across as RoBERTa's do; a
tokenizer whose padding id differs from config.json's is refused.
"""

from __future__ import annotations

import torch

from ptmcli.convert.archs import ArchSpec, HFClass
from ptmcli.errors import PtmError
from ptmcli.models import bart

CLASSES = {
    "BartModel": HFClass("BartModel"),
    "BartForConditionalGeneration": HFClass("BartForConditionalGeneration", frozenset({"lm"}), objective="denoise"),
}
_BARE = "BartModel"  # the class whose keys have no "model." prefix

# transformers config key -> ptm BartConfig field.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "encoder_layers": "num_layers",
    "decoder_layers": "num_decoder_layers",
    "encoder_attention_heads": "num_heads",
    "encoder_ffn_dim": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "init_std": "initializer_range",
    "scale_embedding": "scale_embedding",
    "pad_token_id": "pad_token_id",
    "decoder_start_token_id": "decoder_start_token_id",
}
# transformers' BartConfig defaults for keys a config.json may leave out (not ptm's).
_HF_DEFAULTS = {"max_position_embeddings": 1024, "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
                "init_std": 0.02, "scale_embedding": False, "pad_token_id": 1, "decoder_start_token_id": 2}
_REQUIRED = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "encoder_ffn_dim")
# Decoder keys that ptm's BART shares with the encoder's: a file where they differ is refused.
_SAME_AS_ENCODER = {"decoder_attention_heads": "encoder_attention_heads", "decoder_ffn_dim": "encoder_ffn_dim"}


def config_from_hf(hf: dict) -> dict:
    """ptm's BartConfig fields from a transformers BartConfig; what ptm's BART cannot compute is an error."""
    missing = [key for key in _REQUIRED if not isinstance(hf.get(key), int)]
    if missing:
        raise PtmError(f"config.json: missing or non-integer {', '.join(missing)}")
    unsupported = []
    if hf.get("activation_function", "gelu") != "gelu":
        unsupported.append(f"activation_function {hf['activation_function']!r} (ptm's BART uses the exact GELU, 'gelu')")
    for decoder_key, encoder_key in _SAME_AS_ENCODER.items():
        if hf.get(decoder_key, hf[encoder_key]) != hf[encoder_key]:
            unsupported.append(f"{decoder_key} {hf[decoder_key]} unlike {encoder_key} {hf[encoder_key]} "
                               "(ptm's BART gives both stacks the same)")
    for key in ("encoder_layerdrop", "decoder_layerdrop"):
        if hf.get(key):
            unsupported.append(f"{key} {hf[key]} (ptm's BART trains every layer)")
    for key in ("normalize_before", "add_final_layer_norm", "add_bias_logits"):
        if hf.get(key):
            unsupported.append(f"{key} true (mBART's layout, not BART's)")
    if hf.get("tie_word_embeddings") is False:
        unsupported.append("tie_word_embeddings false (ptm's BART projects onto the shared embedding)")
    if unsupported:
        raise PtmError(f"config.json: ptm cannot represent {unsupported[0]}")
    values = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if hf.get(theirs) is not None}
    for theirs, default in _HF_DEFAULTS.items():
        values.setdefault(_CONFIG_KEYS[theirs], default)
    if values["num_decoder_layers"] == values["num_layers"]:
        values["num_decoder_layers"] = None
    return bart.BartConfig.from_dict(values).to_dict()


def config_to_hf(model: dict, specials: dict[str, int]) -> dict:
    """The transformers BartConfig fields that a ptm BartConfig determines."""
    cfg = bart.BartConfig.from_dict(model)
    out = {theirs: getattr(cfg, ours) for theirs, ours in _CONFIG_KEYS.items()}
    out.update(model_type="bart", activation_function="gelu", decoder_layers=cfg.decoder_layers,
               decoder_attention_heads=cfg.num_heads, decoder_ffn_dim=cfg.intermediate_size,
               is_encoder_decoder=True, tie_word_embeddings=True)
    for roles, key in ((("bos", "cls"), "bos_token_id"), (("eos", "sep"), "eos_token_id")):
        found = next((specials[role] for role in roles if role in specials), None)
        if found is not None:
            out[key] = found
    return out


# ptm key (under bart.encoder/decoder.layers.N.) -> transformers keys, several when ptm fuses them.
_SELF = {"attention.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "attention.out": ("self_attn.out_proj",),
         "attention_norm": ("self_attn_layer_norm",),
         "ffn.up": ("fc1",),
         "ffn.down": ("fc2",),
         "ffn_norm": ("final_layer_norm",)}
_CROSS = {"cross_attention.query": ("encoder_attn.q_proj",),
          "cross_attention.kv": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
          "cross_attention.out": ("encoder_attn.out_proj",),
          "cross_attention_norm": ("encoder_attn_layer_norm",)}
_STACK = {"position_embeddings.weight": "embed_positions.weight",
          "embedding_norm.weight": "layernorm_embedding.weight",
          "embedding_norm.bias": "layernorm_embedding.bias"}
_EMBEDDING = "bart.word_embeddings.weight"
# Spellings of the shared embedding in a file without the "model." prefix, the canonical one first.
_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _layer_maps(side: str) -> dict[str, tuple[str, ...]]:
    return {**_SELF, **_CROSS} if side == "decoder" else _SELF


def _num_layers(keys, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers BART state dict (either class) to ptm keys; a KeyError names a missing tensor."""
    prefixed = any(k.startswith("model.") for k in hf)
    trunk = {k.removeprefix("model."): v for k, v in hf.items()} if prefixed else dict(hf)
    if prefixed and "lm_head.weight" in hf:
        trunk.setdefault("lm_head.weight", hf["lm_head.weight"])
    names = [n for n in (*_EMBEDDING_NAMES, "lm_head.weight") if n in trunk]
    if not names:
        raise KeyError(("model." if prefixed else "") + "shared.weight")
    embedding = trunk[names[0]]
    for name in names[1:]:
        if not torch.equal(trunk[name], embedding):
            raise PtmError(f"{name!r} differs from {names[0]!r}; ptm's BART ties them, so untied weights cannot be "
                           "converted without loss")
    out = {_EMBEDDING: embedding}
    for side in ("encoder", "decoder"):
        out.update({f"bart.{side}.{ours}": trunk[f"{side}.{theirs}"] for ours, theirs in _STACK.items()})
        for i in range(_num_layers(trunk, f"{side}.layers.")):
            for ours, theirs in _layer_maps(side).items():
                for kind in ("weight", "bias"):
                    parts = [trunk[f"{side}.layers.{i}.{name}.{kind}"] for name in theirs]
                    out[f"bart.{side}.layers.{i}.{ours}.{kind}"] = parts[0] if len(parts) == 1 else torch.cat(parts)
    if "final_logits_bias" in hf:
        out["final_logits_bias"] = hf["final_logits_bias"].reshape(-1)
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor], bare: bool = False) -> dict[str, torch.Tensor]:
    """Map a ptm BART state dict to transformers keys: ``BartForConditionalGeneration``'s, or with ``bare``
    ``BartModel``'s; the shared embedding once, as ``shared.weight``."""
    prefix = "" if bare else "model."
    out = {f"{prefix}shared.weight": ours[_EMBEDDING]}
    for side in ("encoder", "decoder"):
        out.update({f"{prefix}{side}.{theirs}": ours[f"bart.{side}.{mine}"] for mine, theirs in _STACK.items()})
        for i in range(_num_layers(ours, f"bart.{side}.layers.")):
            for mine, theirs in _layer_maps(side).items():
                for kind in ("weight", "bias"):
                    tensor = ours[f"bart.{side}.layers.{i}.{mine}.{kind}"]
                    pieces = tensor.chunk(len(theirs)) if len(theirs) > 1 else (tensor,)
                    for name, piece in zip(theirs, pieces, strict=True):
                        out[f"{prefix}{side}.layers.{i}.{name}.{kind}"] = piece.contiguous()
    if "final_logits_bias" in ours and not bare:
        out["final_logits_bias"] = ours["final_logits_bias"].reshape(1, -1)
    return out


def weights_from_hf(hf: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return state_dict_from_hf(hf)


def weights_to_hf(ours: dict[str, torch.Tensor], cls: HFClass) -> dict[str, torch.Tensor]:
    return state_dict_to_hf(ours, bare=cls.name == _BARE)


def guess_class(keys: set[str]) -> str:
    if "final_logits_bias" in keys or any(k.startswith("model.") for k in keys):
        return "BartForConditionalGeneration"
    return _BARE


def check_tokenizer(model: dict, tokenizer, where: str) -> None:
    if tokenizer is None:
        return  # the vocabulary is not needed to convert: the result simply has no tokenizer either
    pad = model["pad_token_id"]
    if tokenizer.pad_id is not None and tokenizer.pad_id != pad:
        raise PtmError(f"{where}: the tokenizer has padding id {tokenizer.pad_id} but config.json's pad_token_id is "
                       f"{pad}; BART's batches and decoding find the source's padding by that id, so the two must agree")


# Tied copies of the shared embedding that some files carry (checked equal, never written); a file
# without shared.weight has it read from the first copy listed.
ALIASES = {
    "model.encoder.embed_tokens.weight": "model.shared.weight",
    "model.decoder.embed_tokens.weight": "model.shared.weight",
    "lm_head.weight": "model.shared.weight",
    "encoder.embed_tokens.weight": "shared.weight",
    "decoder.embed_tokens.weight": "shared.weight",
}

SPEC = ArchSpec(
    arch="bart",
    model_type="bart",
    classes=CLASSES,
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weights_from_hf=weights_from_hf,
    weights_to_hf=weights_to_hf,
    build_model=lambda model: bart.BartForConditionalGeneration(bart.BartConfig.from_dict(model)),
    config_class=bart.BartConfig.from_dict,
    input_embedding=_EMBEDDING,
    hf_aliases=ALIASES,
    hf_part_names={"lm": "final_logits_bias"},
    guess_class=guess_class,
    check_tokenizer=check_tokenizer,
)
