"""A runnable module from a checkpoint that may lack some heads.

A checkpoint with a ``task`` becomes its task model (``ptmcli.models.heads``),
any other the architecture's pretraining model. Heads the checkpoint lacks
(the NSP head of a converted ``BertForMaskedLM``, every head of a ``BertModel``)
keep their random initialisation, and the loader returns their names so the
command can say so.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ptmcli.convert.sources import Model
from ptmcli.models.heads import build_task_model, head_parts


def build_module(model: Model) -> tuple[nn.Module, list[str]]:
    """The module of an already checked ``Model`` (eval mode) and the parts it initialised."""
    spec = model.spec
    if model.task is not None:
        module = build_task_model(spec.arch, spec.config_class(model.model), model.task)
    else:
        module = spec.build_model(model.model)
    have = set(module.state_dict())
    module.load_state_dict({k: v for k, v in model.state.items() if k in have}, strict=False)
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    parts = head_parts(spec.arch)
    initialised = sorted(p for p, prefix in parts.items() if p not in model.parts and any(k.startswith(prefix) for k in have))
    return module.eval(), initialised


def load_model(path: str | Path) -> tuple[nn.Module, dict, list[str]]:
    """(module, checkpoint config, initialised parts) of a ptm checkpoint or run directory.

    A task checkpoint loads into its task model; another into the pretraining
    model, a task head it may hold being skipped. Missing whole heads are
    initialised; anything else missing or mismatched is a PtmError.
    """
    from ptmcli.checkpoint import load_partial_weights, read_config, resolve_checkpoint
    from ptmcli.checkpoint.loading import extra_head_parts
    from ptmcli.convert.archs import spec_for_arch

    checkpoint = resolve_checkpoint(path)
    config = read_config(checkpoint)
    spec = spec_for_arch(config["arch"])
    model_config = spec.config_class(config["model"])
    parts = dict(head_parts(spec.arch))
    task = config.get("task")
    if task is not None:
        module = build_task_model(spec.arch, model_config, task)
        ignored = {}
        parts.pop("classifier", None)
    else:
        module = spec.build_model(model_config.to_dict())
        ignored = {"classifier": parts.pop("classifier")} if "classifier" in parts else {}
    tied = module.tied_weights() if hasattr(module, "tied_weights") else {}
    # Task models have no pretraining heads but the pooler; those tensors, if any, are not theirs to load.
    if task is not None:
        ignored.update({p: prefix for p, prefix in parts.items() if p != "pooler"})
    ignored.update(extra_head_parts(config))  # pretraining-only heads an objective attached (SpanBERT's sbo.*)
    initialised, _ = load_partial_weights(checkpoint, module, tied, parts, ignored)
    return module.eval(), config, initialised
