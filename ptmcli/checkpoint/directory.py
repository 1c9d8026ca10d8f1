"""The ``ptm-checkpoint`` directory (docs/formats.md): write atomically, read strictly.

A checkpoint is a directory: ``config.json`` (enough to rebuild the model),
``model.safetensors`` (tied weights stored once), the tokenizer files, an
optional ``metrics.jsonl`` and, for resumable training checkpoints, a
``trainer/`` folder with the optimizer state as named tensors and a JSON
state. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ptmcli import __version__
from ptmcli.errors import PtmError
from ptmcli.textio.atomic import (
    OutputWriteError,
    atomic_directory,
    discard_directory,
    remove_leftovers,
)

FORMAT = "ptm-checkpoint"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER = "trainer"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.txt")


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=False)
        handle.write("\n")


def state_dict_for_saving(model, tied: dict[str, str]) -> dict:
    """The unwrapped module's tensors, contiguous, with aliases of tied weights left out."""
    state = {}
    for key, tensor in model.state_dict().items():
        if key in tied:
            continue
        state[key] = tensor.detach().contiguous().cpu()
    return state


def save_checkpoint(
    target: str | Path,
    *,
    config: dict,
    weights: dict,
    tokenizer_dir: str | Path | None,
    metrics_file: str | Path | None = None,
    optimizer_tensors: dict | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    A save that cannot be written (disk full, read-only filesystem) raises one
    ``PtmError`` line naming the checkpoint that is still intact; nothing of the
    failed save stays on disk.
    """
    target = Path(target)
    try:
        with atomic_directory(target, overwrite=True) as tmp:
            full_config = {"format": FORMAT, "version": VERSION, **config, "ptm_version": __version__}
            write_json(tmp / CONFIG, full_config)
            _save_tensors(weights, tmp / WEIGHTS, metadata={"format": "pt"})
            if tokenizer_dir is not None and copy_tokenizer_files(tokenizer_dir, tmp) == 0:
                raise PtmError(f"{tokenizer_dir}: no tokenizer files to copy into the checkpoint")
            if metrics_file is not None and Path(metrics_file).exists():
                shutil.copyfile(metrics_file, tmp / "metrics.jsonl")
            if optimizer_tensors is not None or trainer_state is not None:
                (tmp / TRAINER).mkdir()
                if optimizer_tensors is not None:
                    _save_tensors(optimizer_tensors, tmp / TRAINER / OPTIMIZER)
                write_json(tmp / TRAINER / STATE, trainer_state or {})
    except OutputWriteError as err:
        raise PtmError(f"could not write checkpoint {target}: {err.reason}; {_what_is_intact(target)}") from err
    return target


def copy_tokenizer_files(source: str | Path, target: Path) -> int:
    """Put the tokenizer of ``source`` into the directory ``target`` in ptm's layout; returns how many files.

    A ptm tokenizer directory is copied as it is. Any other layout ptm reads (``spiece.model``,
    ``vocab.txt`` alone, ``vocab.json`` + ``merges.txt``) is written the way ptm saves a tokenizer,
    so the checkpoint holds a model file every command finds.
    """
    from ptmcli.tokenization.tokenizer import CONFIG_FORMAT, PtmTokenizer, read_tokenizer_config

    source = Path(source)
    if read_tokenizer_config(source).get("format") == CONFIG_FORMAT:
        copied = 0
        for name in TOKENIZER_FILES:
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
                copied += 1
        return copied
    before = set(target.iterdir())
    PtmTokenizer.load(source).write_files(target)
    return len(set(target.iterdir()) - before)



def _save_tensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        # safetensors reports a failed write as its own error, with the OS error number in the text.
        found = re.search(r"os error (\d+)", str(err))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from err


def _what_is_intact(target: Path) -> str:
    if (target / CONFIG).exists():
        return f"the existing {target} is unchanged"
    earlier = [p for p in _complete_checkpoints(target.parent) if p.name < target.name] if target.name.startswith("step-") else []
    if earlier:
        return f"the previous checkpoint {earlier[-1]} is intact"
    return "no earlier checkpoint exists"


def read_config(path: str | Path) -> dict:
    """Read and validate ``config.json`` of a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise PtmError(f"{path}: not a checkpoint directory (no such directory)")
    cfg_path = path / CONFIG
    if not cfg_path.exists():
        raise PtmError(f"{path}: not a ptm checkpoint ({CONFIG} is missing)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PtmError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise PtmError(f"{cfg_path}: unknown format {config.get('format') if isinstance(config, dict) else None!r} (expected {FORMAT!r})")
    if config.get("version") != VERSION:
        raise PtmError(f"{cfg_path}: unsupported {FORMAT} version {config.get('version')!r} (this ptm reads version {VERSION})")
    for key in ("arch", "model"):
        if key not in config:
            raise PtmError(f"{cfg_path}: missing required key {key!r}")
    return config


def read_trainer(path: str | Path) -> tuple[dict, dict]:
    """The optimizer tensors and JSON state of a resumable checkpoint."""
    from ptmcli.checkpoint.weights import read_tensors

    trainer = Path(path) / TRAINER
    if not (trainer / STATE).exists():
        raise PtmError(f"{path}: not a resumable checkpoint ({TRAINER}/{STATE} is missing)")
    try:
        state = json.loads((trainer / STATE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PtmError(f"{trainer / STATE}: not valid JSON ({err})") from None
    tensors = {}
    if (trainer / OPTIMIZER).exists():
        tensors = read_tensors(trainer / OPTIMIZER)
    return tensors, state


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary and stale dirs ignored)."""
    return _complete_checkpoints(Path(run_dir) / "checkpoints")


def _complete_checkpoints(root: Path) -> list[Path]:
    # Interrupted writes only ever leave hidden names (.step-*.tmp-*), which never start with "step-".
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / CONFIG).exists()]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory meaning its latest checkpoint."""
    path = Path(path)
    if (path / CONFIG).exists():
        return path
    steps = list_step_checkpoints(path)
    if steps:
        return steps[-1]
    if not path.exists():
        raise PtmError(f"{path}: no such checkpoint or run directory")
    raise PtmError(f"{path}: neither a ptm checkpoint nor a run directory with checkpoints/")


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """After a save: drop step checkpoints beyond the newest ``keep_last`` (0 keeps all) and
    whatever interrupted saves of earlier processes left behind.

    Each old checkpoint is hidden by one rename before it is deleted, so a process
    killed mid-prune never leaves a half-deleted ``step-*`` directory.
    """
    remove_leftovers(Path(run_dir) / "checkpoints", prefix="step-")
    if keep_last <= 0:
        return
    for old in list_step_checkpoints(run_dir)[:-keep_last]:
        discard_directory(old)
