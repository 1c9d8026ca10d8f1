"""Multi-task checkpoints: one encoder, one head per task, and how a command picks a head.

``config.json`` ``task`` is ``{"type": "multi-task", "heads": {NAME: <a single-task
"task" object>}, ...}``; ``model.safetensors`` holds the encoder under its pretraining
names (as a single-task checkpoint does) and head NAME's tensors under
``task_heads.NAME.`` (``task_heads.sst2.classifier.weight``). ``extra_heads`` names that
prefix, so whatever loads the pretrained model alone skips the heads.

Choosing head NAME gives the single-task view: the config with ``task`` set to
that head's, and the weights with that head's tensors under their single-task
names, so every reader of finetuned checkpoints works on it unchanged. Kept free
of torch: commands check ``--head`` before any model loads.
"""

from __future__ import annotations

from ptmcli.checkpoint.loading import HEADS_PREFIX
from ptmcli.errors import PtmError

MULTITASK = "multi-task"
EXTRA_HEADS = {"task_heads": HEADS_PREFIX}


def is_multitask(config: dict) -> bool:
    return isinstance(config.get("task"), dict) and config["task"].get("type") == MULTITASK


def head_names(config: dict) -> list[str]:
    return list((config.get("task") or {}).get("heads") or {})


def select_head(config: dict, head: str | None, where: str) -> dict:
    """``config`` as head ``head`` sees it (unchanged for a single-task checkpoint without ``--head``)."""
    if not is_multitask(config):
        if head is not None:
            raise PtmError(f"--head {head}: {where} is not a multi-task checkpoint (it has no heads to choose from)")
        return config
    names = head_names(config)
    if head is None:
        raise PtmError(f"{where} is a multi-task checkpoint: choose a head with --head ({', '.join(names)})")
    if head not in names:
        raise PtmError(f"--head {head}: {where} has no such head (heads: {', '.join(names)})")
    return dict(config, task=dict(config["task"]["heads"][head]), multitask_head=head)


def refuse_multitask(config: dict, where: str, command: str) -> None:
    """A command that takes one task's checkpoint and has no ``--head`` names the way to get one."""
    if is_multitask(config):
        names = head_names(config)
        raise PtmError(f"{where} is a multi-task checkpoint (heads: {', '.join(names)}); {command} takes one task's "
                       f"checkpoint: finetune one from it first (ptm finetune --checkpoint {where} --head {names[0]} ...)")


def head_weights(state: dict, head: str) -> dict:
    """The encoder's tensors and head ``head``'s under their single-task names; the other heads' left out."""
    own = f"{HEADS_PREFIX}{head}."
    out = {k: v for k, v in state.items() if not k.startswith(HEADS_PREFIX)}
    out.update({k[len(own):]: v for k, v in state.items() if k.startswith(own)})
    return out


def continued_head(source_config: dict, head: str | None, task_type: str, mode: str, where: str) -> dict | None:
    """The head ``ptm finetune --head`` continues from (None without ``--head``), checked against the new run."""
    view = select_head(source_config, head, where) if head is not None else None
    if view is None:
        return None
    task = view["task"]
    if task.get("type") != task_type:
        raise PtmError(f"--head {head}: a {task.get('type')} head; this run is --task {task_type}")
    if task.get("mode", "finetune") != mode:
        raise PtmError(f"--head {head}: trained with --mode {task.get('mode', 'finetune')}; this run is --mode {mode}")
    return task
