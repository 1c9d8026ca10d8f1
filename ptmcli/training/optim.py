"""AdamW with BERT's weight-decay rule, and its state as named tensors.

Biases and LayerNorm weights get no weight decay (as in google-research/bert).
The optimizer state is saved as ``{param_name}.{slot}`` tensors in safetensors
and the hyper-parameters as JSON, so no pickle is involved and a checkpoint
can be inspected with any safetensors reader.
"""

from __future__ import annotations

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.training.distributed import full_tensor, like_parameter


def _no_decay(param: torch.Tensor) -> bool:
    # Biases and LayerNorm gains/shifts are exactly the 1-D parameters.
    return param.ndim < 2


def parameter_groups(model: nn.Module, weight_decay: float, lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Two groups (decay / no decay); each remembers its parameter names for saving."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _no_decay(param) else decay).append((name, param))
    groups = []
    for members, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if members:
            groups.append({"params": [p for _, p in members], "names": [n for n, _ in members], "weight_decay": wd})
    return groups


def build_adamw(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-6, device: str = "cpu") -> torch.optim.Optimizer:
    """AdamW over ``model``'s decay / no-decay groups (see :func:`adamw_for_groups`)."""
    return adamw_for_groups(parameter_groups(model, weight_decay), lr, betas=betas, eps=eps, device=device)


def adamw_for_groups(groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-6, device: str = "cpu") -> torch.optim.Optimizer:
    """AdamW over ready-made parameter groups, fused when the device supports it (CPU and CUDA do in torch >= 2.4).

    Each group names its parameters (``names``) for saving; a group's own ``lr``
    (finetuning's per-layer rates) wins over ``lr``.
    """
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=device != "cpu")


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten the optimizer state to ``{name.slot: tensor}`` plus JSON-able group settings."""
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    for group in optimizer.param_groups:
        for name, param in zip(group["names"], group["params"]):
            for slot, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor):
                    # FSDP shards the moments like their parameters: gather them whole (every rank calls this).
                    tensors[f"{name}.{slot}"] = full_tensor(value.detach()).contiguous().cpu()
                else:
                    tensors[f"{name}.{slot}"] = torch.tensor(value)
        groups.append({k: v for k, v in group.items() if k not in ("params",) and _jsonable(v)})
    return tensors, groups


def _jsonable(value) -> bool:
    return isinstance(value, (int, float, str, bool, type(None), list, tuple))


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict], source: str) -> None:
    """Restore what ``optimizer_state_tensors`` saved, matching parameters by name."""
    if len(groups) != len(optimizer.param_groups):
        raise PtmError(f"{source}: optimizer has {len(groups)} parameter groups, the model needs {len(optimizer.param_groups)}")
    for group, saved in zip(optimizer.param_groups, groups):
        if list(group["names"]) != list(saved.get("names", [])):
            raise PtmError(f"{source}: optimizer state does not match the model's parameters")
        for key, value in saved.items():
            if key != "names":
                group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
        for name, param in zip(group["names"], group["params"]):
            slots = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".") and "." not in k[len(name) + 1:]}
            if not slots:
                continue
            state = {}
            for slot, value in slots.items():
                if slot == "step":
                    state[slot] = value.clone().to(torch.float32)
                else:
                    if value.shape != param.shape:
                        raise PtmError(f"{source}: optimizer slot {name}.{slot} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
                    state[slot] = like_parameter(value, param)
            optimizer.state[param] = state
