"""``--tensorboard``: every record of ``metrics.jsonl`` written as TensorBoard scalars too.

``TensorBoardLog`` wraps the run's ``MetricsLog``: each record goes to
``metrics.jsonl`` first (the record of the run), then to event files in
``RUN_DIR/tensorboard/``. A training key ``loss`` becomes the tag
``train/loss``, an evaluation key ``eval_mlm_acc`` the tag ``eval/mlm_acc``;
the x axis is the record's step. Only the main rank writes (the loop makes no
``MetricsLog`` on the others).

A resumed run writes a new event file whose first event purges the steps after
the checkpoint it resumed from (``purge_step``), so TensorBoard, like
``metrics.jsonl``, tells one story.
"""

from __future__ import annotations

import math
import shutil
import weakref
from pathlib import Path

from ptmcli.errors import PtmError

DIRECTORY = "tensorboard"
MISSING = "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install ptm[tensorboard])"


def check_available() -> None:
    """Refuse ``--tensorboard`` in one line, before any training, when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:  # torch raises ImportError when the tensorboard package is absent
        raise PtmError(MISSING) from None


def tag(key: str) -> str:
    """The TensorBoard tag of a ``metrics.jsonl`` key."""
    return f"eval/{key[len('eval_'):]}" if key.startswith("eval_") else f"train/{key}"


class TensorBoardLog:
    """A ``MetricsLog`` that also writes each record's numbers as scalars under ``directory``."""

    def __init__(self, metrics, directory: Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PtmError(MISSING) from None
        self.metrics = metrics
        self.path = metrics.path
        if resume_step is None and directory.exists():
            # A new run in a reused directory starts a new history, as metrics.jsonl does.
            shutil.rmtree(directory)
        try:
            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge)
        except OSError as err:
            raise PtmError(f"--tensorboard: cannot write {directory}: {err.strerror}") from None
        # Closed when the loop drops the log (its background thread ends with it).
        weakref.finalize(self, self.writer.close)

    def write(self, record: dict) -> None:
        self.metrics.write(record)
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self.writer.add_scalar(tag(key), value, global_step=step)
        # Records come every --log-every steps: flushing each one keeps the files current for a live TensorBoard.
        self.writer.flush()


def wrap(metrics, enabled: bool, run_dir: Path, resume_step: int | None):
    """``metrics`` itself, or with ``enabled`` a ``TensorBoardLog`` around it (None stays None: not the main rank)."""
    if metrics is None or not enabled:
        return metrics
    return TensorBoardLog(metrics, run_dir / DIRECTORY, resume_step)
