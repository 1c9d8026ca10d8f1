"""Heads an objective adds to a family's pretraining model, run on the encoder output of its forward pass.

A pretraining model keeps the heads of its family's own objectives (MLM, NSP,
SOP) as fields. An objective that needs more (SpanBERT's span boundary head)
attaches a module under a name of its own; the model's ``forward`` hands every
attached head the model, the top hidden states, the MLM labels and the batch
inputs the head names in ``input_names``, and returns the head's summed terms
with its own.
The head's parameters live under ``<name>.`` in the state dict, so they are
saved, resumed and, being absent from a fresh model, ignored by finetuning.
"""

from __future__ import annotations

import torch
from torch import nn


def attach_head(model: nn.Module, name: str, head: nn.Module) -> None:
    """Register ``head`` as ``model.<name>`` and run it in every forward pass from now on."""
    if hasattr(model, name):
        raise ValueError(f"the model already has a part named {name!r}")
    model.add_module(name, head)
    model.attached_heads = (*getattr(model, "attached_heads", ()), name)


def attached_terms(model: nn.Module, hidden: torch.Tensor, mlm_labels: torch.Tensor | None,
                   inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The summed terms of every attached head; an input no head takes is an error, as a typo would be."""
    heads = [getattr(model, name) for name in getattr(model, "attached_heads", ())]
    unknown = set(inputs) - {key for head in heads for key in head.input_names}
    if unknown:
        raise TypeError(f"unexpected inputs {', '.join(sorted(unknown))}: no attached head takes them")
    out: dict[str, torch.Tensor] = {}
    for head in heads:
        out.update(head(model, hidden, mlm_labels, **{key: inputs[key] for key in head.input_names if key in inputs}))
    return out
