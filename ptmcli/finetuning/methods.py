"""ULMFiT's finetuning methods (Howard and Ruder, 2018) as parameter groups and a freezing plan.

The model's parameters are split into layer groups from the bottom up: the
embeddings (or ELMo's token encoder), then each Transformer/LSTM layer, then
everything task-side (pooler, final LayerNorm, scalar mix, classifier, LM
heads). Discriminative learning rates give group g the rate
``lr / factor ** (top - g)``; gradual unfreezing trains only the top group in
the first epoch and unfreezes one more group per epoch.
"""

from __future__ import annotations

import re

from torch import nn

from ptmcli.training.optim import _no_decay

_LAYER = re.compile(r"(?:^|\.)(?:layers|forward_layers|backward_layers)\.(\d+)\.")


def layer_group(name: str, num_layers: int, bottom: tuple[str, ...]) -> int:
    """0 for the embeddings (keys under ``bottom``, the family's), 1..L for layer i-1, L+1 for everything task-side."""
    match = _LAYER.search(name)
    if match and name.startswith("lm."):
        return int(match.group(1)) + 1
    if name.startswith(bottom):
        return 0
    return num_layers + 1


def discriminative_groups(model: nn.Module, lr: float, weight_decay: float, factor: float, num_layers: int) -> list[dict]:
    """AdamW parameter groups (per layer group x decay / no decay), each with its own ``lr``.

    ``factor`` 1.0 gives every group the same rate. ULMFiT used 2.6.
    Frozen parameters are included (gradual unfreezing turns them on later);
    AdamW skips parameters without gradients.
    """
    top = num_layers + 1
    buckets: dict[tuple[int, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad and not name.startswith("lm."):
            continue
        buckets.setdefault((layer_group(name, num_layers, model.bottom_prefixes), _no_decay(param)), []).append((name, param))
    groups = []
    for (group, no_decay), members in sorted(buckets.items()):
        groups.append({
            "params": [p for _, p in members], "names": [n for n, _ in members],
            "weight_decay": 0.0 if no_decay else weight_decay, "lr": lr / factor ** (top - group), "layer_group": group,
        })
    return groups


def unfreeze_for_epoch(model: nn.Module, epoch: int, num_layers: int, frozen_encoder: bool = False) -> int:
    """Gradual unfreezing: in epoch e (from 0) only groups >= top - e train. Returns the lowest trainable group.

    ``frozen_encoder`` (features mode) keeps every pretrained weight frozen whatever the epoch.
    """
    top = num_layers + 1
    lowest = max(0, top - epoch)
    for name, param in model.named_parameters():
        if frozen_encoder and name.startswith("lm."):
            param.requires_grad_(False)
            continue
        param.requires_grad_(layer_group(name, num_layers, model.bottom_prefixes) >= lowest)
    return lowest
