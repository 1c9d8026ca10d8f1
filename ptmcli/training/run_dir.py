"""The run directory of a training command: refused early, created only once every input is checked."""

from __future__ import annotations

import shutil
from pathlib import Path

from ptmcli.errors import PtmError


def check_run_dir(out: str | None, overwrite: bool, resuming: bool) -> Path:
    """The run directory, refused early if it cannot be used; nothing is written until the run is set up."""
    if out is None:
        raise PtmError("-o/--out RUN_DIR is required (where checkpoints and metrics go)")
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise PtmError(f"-o {run_dir}: exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()) and not resuming and not overwrite:
        raise PtmError(f"-o {run_dir}: run directory exists and is not empty (use --resume {run_dir} to continue it, or --overwrite)")
    return run_dir


def create_run_dir(run_dir: Path, resuming: bool) -> None:
    """Called once every input has been checked, so a refused run leaves nothing behind."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resuming:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
