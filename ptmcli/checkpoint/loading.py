"""Open a ptm checkpoint as a ready model and its tokenizer: what every command after pretraining starts with."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmcli.errors import PtmError


@dataclass
class LoadedCheckpoint:
    path: Path
    """The checkpoint directory (a run directory resolves to its latest checkpoint)."""
    config: dict
    """The checkpoint's config.json."""
    arch: str
    model: Any
    """The architecture's pretraining model class, weights loaded, in eval mode."""
    model_config: Any
    tokenizer: Any
    """The PtmTokenizer saved with the checkpoint."""
    initialised: list[str] | None = None
    """Heads the checkpoint lacked, left at their random initialisation."""


def load_checkpoint(path: str | Path, device: Any = "cpu") -> LoadedCheckpoint:
    """Rebuild the model a checkpoint describes and load its weights and tokenizer, strictly."""
    import torch

    from ptmcli.models.heads import HEAD_PARTS
    from ptmcli.models.registry import get_architecture
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training.checkpoint import load_partial_weights, read_config, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    arch = get_architecture(config["arch"])
    model_config = arch.config_class.from_dict(config["model"])
    tokenizer = PtmTokenizer.load(ckpt)
    if tokenizer.vocab_size > model_config.vocab_size:  # fewer is fine: embedding tables are often padded
        raise PtmError(
            f"{ckpt}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has {model_config.vocab_size}"
        )
    model = arch.model_class(model_config)
    # A converted encoder may lack pretraining heads (a BertModel has no MLM or NSP head): those
    # start at their initialisation and are listed; a task head is not part of the pretraining model.
    optional = {part: prefix for part, prefix in HEAD_PARTS.get(config["arch"], {}).items() if part != "classifier"}
    ignored = {"classifier": "classifier.", "scalar_mix": "scalar_mix."}
    initialised, _ = load_partial_weights(ckpt, model, model.tied_weights(), optional, ignored)
    if initialised:
        print(f"ptm: note: {ckpt} has no {', '.join(initialised)} weights; initialised at random", file=sys.stderr)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    return LoadedCheckpoint(ckpt, config, config["arch"], model, model_config, tokenizer, initialised)
