"""Attention-head pruning by importance (Michel, Levy and Neubig, 2019, "Are Sixteen Heads Really Better than One?").

Each head's output (its slice of the context, before the output projection) is
multiplied by a gate ``xi_h`` fixed at 1. A head's importance is the absolute
gradient of the loss with respect to its gate, accumulated over the batches of a
data set, ``sum_batches |dL/dxi_h|``: the first-order change of the loss were the
head removed. Importances are divided by their L2 norm within each layer (the
paper's normalisation: layers differ in scale), then the lowest-scoring heads
across the whole model are removed, keeping at least one per layer.

Removing a head deletes its rows of the fused ``qkv`` projection (its query, key
and value slices) and its columns of the output projection, so the pruned model
computes exactly what the original computes with those gates at 0. Only the
BERT encoder (``BertModel``: bert, roberta, distilbert) records per-layer head counts
(``heads_per_layer`` in its config); other families are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch

from ptmcli.errors import PtmError


def attention_layers(family, model) -> list:
    """The SelfAttention of each block of ``model``'s encoder, or a PtmError for a family that cannot be pruned."""
    from ptmcli.models.bert import BertModel

    encoder = family.encoder(model.lm if hasattr(model, "checkpoint_state") else model)
    if not isinstance(encoder, BertModel):
        raise PtmError(f"--prune-heads: a {family.name} checkpoint cannot be pruned; head pruning supports "
                       "BERT-family encoders (bert, roberta, distilbert)")
    return [layer.attention for layer in encoder.layers]


@contextmanager
def head_gates(attentions: list, values: list[torch.Tensor] | None = None):
    """Inside, each head's context is multiplied by its gate; yields the gates (one ``[heads]`` tensor per layer).

    ``values`` None: gates at 1 that require grad (importance); else fixed gates (a 0 masks a head out).
    """
    gates = values if values is not None else [
        torch.ones(a.num_heads, requires_grad=True) for a in attentions]
    handles = []
    for attention, gate in zip(attentions, gates, strict=True):
        def scale(module, args, gate=gate, width=attention.head_dim):
            # The output projection's input is [B, T, heads * head_dim], head by head.
            return (args[0] * gate.to(args[0].dtype).repeat_interleave(width),)

        handles.append(attention.out.register_forward_pre_hook(scale))
    try:
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def head_importance(model, attentions: list, batches: Iterable, loss: Callable) -> list[torch.Tensor]:
    """Per layer, ``sum over batches |d loss(batch) / d gate|`` (not normalised); ``loss`` returns a batch's mean loss.

    Runs in eval mode (no dropout), with the model's own parameters needing no gradient.
    """
    was_training = model.training
    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        with head_gates(attentions) as gates:
            total = [torch.zeros_like(g) for g in gates]
            for batch in batches:
                grads = torch.autograd.grad(loss(batch), gates)
                for acc, grad in zip(total, grads, strict=True):
                    acc += grad.abs()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return total


def normalise(importance: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's importances divided by their L2 norm."""
    return [layer / (layer.norm(p=2) + 1e-20) for layer in importance]


def choose_heads(scores: list[torch.Tensor], fraction: float) -> list[list[int]]:
    """Heads kept per layer: the ``floor(fraction * all heads)`` lowest scores go, each layer keeping one."""
    total = sum(len(layer) for layer in scores)
    to_remove = int(fraction * total)
    ranked = sorted((float(s), layer, head) for layer, row in enumerate(scores) for head, s in enumerate(row))
    kept = [set(range(len(row))) for row in scores]
    removed = 0
    for _, layer, head in ranked:
        if removed == to_remove:
            break
        if len(kept[layer]) > 1:
            kept[layer].discard(head)
            removed += 1
    return [sorted(layer) for layer in kept]


def _rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def prune_state(state: dict, prefix: str, kept: list[list[int]], heads_now: list[int], head_dim: int) -> dict:
    """``state`` (checkpoint names) with the removed heads' rows of ``qkv`` and columns of ``out`` deleted.

    ``prefix`` is the encoder's key prefix (``bert.``); ``heads_now`` the heads each layer has in ``state``.
    """
    out = dict(state)
    for layer, (keep, heads) in enumerate(zip(kept, heads_now, strict=True)):
        base = f"{prefix}layers.{layer}.attention."
        width = heads * head_dim
        # qkv rows are [3, heads, head_dim]: the same heads' slices of the query, key and value blocks.
        rows = torch.cat([part * width + _rows(keep, head_dim) for part in range(3)])
        for kind in ("weight", "bias"):
            if base + f"qkv.{kind}" in out:
                out[base + f"qkv.{kind}"] = out[base + f"qkv.{kind}"].index_select(0, rows).contiguous()
        out[base + "out.weight"] = out[base + "out.weight"].index_select(1, _rows(keep, head_dim)).contiguous()
    return out
