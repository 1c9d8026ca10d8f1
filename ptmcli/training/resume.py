"""What a resumed run takes from the checkpoint it continues, whichever command trained it.

Which flags may change on ``--resume`` is each command's own rule; the saved
configuration, the per-device batch for this world size and where the resumed
run writes are settled the same way for both.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.training.launch import resume_batch_size


def saved_run(config_class, resume: str) -> tuple[Path, dict, object]:
    """The checkpoint ``--resume`` names, its trainer state, and the run configuration saved in it."""
    from ptmcli.checkpoint import read_trainer, resolve_checkpoint

    ckpt = resolve_checkpoint(resume)
    _tensors, state = read_trainer(ckpt)
    saved = config_class(**{k: v for k, v in state["run_config"].items() if k in config_class.__dataclass_fields__})
    return ckpt, state, saved


def placement(cfg, saved, state: dict, ckpt: Path) -> dict:
    """Updates every resumed run takes: the per-device batch that keeps the saved global batch at this
    world size (when it changed), and ``out``, the run directory it writes."""
    updates = resume_batch_size(saved.batch_size, int(state.get("world_size", 1)), ckpt)
    out = cfg.out or (str(ckpt.parent.parent) if ckpt.parent.name == "checkpoints" else None)
    if out is None:
        raise PtmError(f"--resume {cfg.resume}: give -o RUN_DIR to say where the resumed run writes")
    return dict(updates, out=out)


def resumed_config(config_class, cfg, explicit: set[str], overrides: set[str]):
    """(the saved run configuration with the flags in ``overrides`` given again applied, the checkpoint); any
    other flag given with a value unlike the saved one is refused, naming it."""
    ckpt, state, saved = saved_run(config_class, cfg.resume)
    conflicts = sorted(n for n in explicit - overrides - {"config"} if getattr(cfg, n) != getattr(saved, n))
    if conflicts:
        allowed = ", ".join(_flag(n) for n in sorted(overrides - {"resume", "out"}))
        raise PtmError(f"{_flag(conflicts[0])} conflicts with the run being resumed; only {allowed} may change on --resume")
    updates = {n: getattr(cfg, n) for n in explicit & overrides}
    updates.update(placement(cfg, saved, state, ckpt))
    return replace(saved, **updates), ckpt


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
