"""Open a ptm checkpoint as a ready model and its tokenizer: what every command after pretraining starts with.

One vocabulary policy for every command: the tokenizer may have fewer tokens
than the model's embedding table (tables are often padded to a round size),
never more.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmcli.errors import PtmError

# Tensors a pretraining model never holds: a task head, its learned scalar mix, the encoder over static vectors.
TASK_PARTS = {"classifier": "classifier.", "scalar_mix": "scalar_mix.", "word_encoder": "word_encoder."}
# A multi-task checkpoint's heads: head NAME's tensors under task_heads.NAME. (finetuning/multitask_checkpoint.py).
HEADS_PREFIX = "task_heads."
SCALAR_MIX_WEIGHTS = "scalar_mix.weights"
SCALAR_MIX_GAMMA = "scalar_mix.gamma"


def apply_quantization(model: Any, config: dict) -> Any:
    """The one hook between building a checkpoint's model and loading its weights: an int8 checkpoint
    (``ptm compress --quantize``) gets torch's dynamic int8 Linears where its config lists them."""
    if not config.get("quantization"):
        return model
    from ptmcli.compress.quantize import apply_quantization as swap

    return swap(model, config)


@dataclass
class LoadedCheckpoint:
    path: Path
    """The checkpoint directory (a run directory resolves to its latest checkpoint)."""
    config: dict
    """The checkpoint's config.json."""
    arch: str
    model: Any
    """The family's pretraining model, weights loaded, in eval mode."""
    model_config: Any
    tokenizer: Any
    """The PtmTokenizer saved with the checkpoint."""
    initialised: list[str] | None = None
    """Heads the checkpoint lacked, left at their random initialisation."""
    family: Any = None
    """The :class:`~ptmcli.models.family.Family` of ``arch``."""
    scalar_mix: dict | None = None
    """``weights`` and ``gamma`` of a learned scalar mix the checkpoint holds (encoder-only loads)."""


def extra_head_parts(config: dict) -> dict[str, str]:
    """Heads the checkpoint's pretraining objective added to the family's model (``{"sbo": "sbo."}``),
    as its config.json records them: a model built from the family alone skips them."""
    return dict(config.get("extra_heads") or {})


def check_vocabulary(ckpt: Path, tokenizer, model_config) -> None:
    if tokenizer.vocab_size > model_config.vocab_size:  # fewer is fine: embedding tables are often padded
        raise PtmError(
            f"{ckpt}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has {model_config.vocab_size}"
        )


def describe(path: str | Path):
    """(checkpoint dir, config.json, family, model config, tokenizer) without building the model."""
    from ptmcli.checkpoint.directory import read_config, resolve_checkpoint
    from ptmcli.models.registry import get_family
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    family = get_family(config["arch"])
    model_config = family.config_class.from_dict(config["model"])
    tokenizer = PtmTokenizer.load(ckpt)
    check_vocabulary(ckpt, tokenizer, model_config)
    return ckpt, config, family, model_config, tokenizer


def load_checkpoint(path: str | Path, device: Any = "cpu", note_initialised: bool = True) -> LoadedCheckpoint:
    """Rebuild the model a checkpoint describes and load its weights and tokenizer, strictly.

    A converted encoder may lack pretraining heads (a BertModel has no MLM or NSP head): those
    start at their initialisation and are listed; a task head is not part of the pretraining model.
    """
    import torch

    from ptmcli.checkpoint.weights import load_partial_weights

    ckpt, config, family, model_config, tokenizer = describe(path)
    model = apply_quantization(family.build(model_config), config)
    initialised, _ = load_partial_weights(ckpt, model, model.tied_weights(), family.head_parts,
                                          {**TASK_PARTS, **extra_head_parts(config)})
    if initialised and note_initialised:
        say_initialised(ckpt, initialised)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    return LoadedCheckpoint(ckpt, config, config["arch"], model, model_config, tokenizer, initialised, family)


def check_part(family: Any, arch: str, name: str | None) -> None:
    """Refuse ``--part name`` for a family whose checkpoints hold one network."""
    if name is not None and not family.parts:
        raise PtmError(f"--part {name}: a {arch} checkpoint is one network (--part chooses within an ELECTRA's)")


def select_part(loaded: LoadedCheckpoint, name: str | None, use: str) -> LoadedCheckpoint:
    """The checkpoint as ``--part name`` reads it: itself for the family's default part (or None), else the
    family's view of that network (ELECTRA's generator). ``use`` ends the refusal of a part whose weights
    the checkpoint lacks ("nothing to score with")."""
    import dataclasses

    family = loaded.family
    check_part(family, loaded.arch, name)
    if name is not None and name in (loaded.initialised or []):
        raise PtmError(f"--part {name}: {loaded.path} has no {name} weights (a model converted from the "
                       f"{family.parts[0]} alone); {use}")
    if loaded.initialised and name is not None:
        say_initialised(loaded.path, loaded.initialised)
    if name is None or name == family.parts[0]:
        return loaded
    module, part_family = family.part(loaded.model, name)
    return dataclasses.replace(loaded, model=module, family=part_family)


def say_initialised(ckpt: Path, initialised: list[str]) -> None:
    print(f"ptm: note: {ckpt} has no {', '.join(initialised)} weights; initialised at random", file=sys.stderr)


def load_encoder(path: str | Path, device: Any = "cpu", head: str | None = None) -> LoadedCheckpoint:
    """Only the encoder's tensors (strictly: each present with its shape), for features.

    Pretraining heads, task heads and a learned scalar mix may be present or not; the
    mix, when present, is returned as ``scalar_mix`` (a multi-task checkpoint's: ``head``'s). Other weights stay
    uninitialised.
    """
    import torch

    from ptmcli.checkpoint.directory import WEIGHTS
    from ptmcli.checkpoint.weights import check_shapes, read_weights
    from ptmcli.models.unfilled import without_random_init

    ckpt, config, family, model_config, tokenizer = describe(path)
    with without_random_init():
        model = apply_quantization(family.build(model_config), config)
    state = read_weights(ckpt)
    encoder, prefix = family.encoder(model), family.encoder_prefix
    unused = family.unused_by_features(set(state))
    expected = {k: v for k, v in encoder.state_dict().items() if not k.startswith(unused)}
    file = ckpt / WEIGHTS
    tensors = {}
    for key in expected:
        stored = state.get(prefix + key)
        if stored is None:
            raise PtmError(f"{file}: the encoder tensor {prefix + key!r} is missing")
        tensors[key] = stored
    check_shapes(file, {prefix + k: v for k, v in tensors.items()}, {prefix + k: v for k, v in expected.items()})
    encoder.load_state_dict(tensors, strict=False)
    mix = {}
    own = "" if head is None else f"{HEADS_PREFIX}{head}."
    for name, key in (("weights", own + SCALAR_MIX_WEIGHTS), ("gamma", own + SCALAR_MIX_GAMMA)):
        if key in state:
            mix[name] = state[key].float().reshape(-1)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    return LoadedCheckpoint(ckpt, config, config["arch"], model, model_config, tokenizer, None, family, mix)


def saved_normed_top(task: dict | None) -> bool:
    """Whether a saved task's GPT mix reads the top layer after the final LayerNorm; checkpoints
    written before ``normed_top_layer`` was recorded read the block's own output."""
    return bool((task or {}).get("normed_top_layer", False))
