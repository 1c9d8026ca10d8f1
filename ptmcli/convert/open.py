"""What a command that reads a model was given: a checkpoint, a run directory, or a transformers directory.

- a ptm checkpoint is used as it is;
- a run directory stands for its ``best/`` checkpoint (the best dev score of a
  finetuning run) when it has one, else its newest step checkpoint;
- a transformers model directory of a family ptm converts is converted for
  this process into a temporary checkpoint, removed at exit (``ptm convert``
  keeps one).

One line on stderr says which checkpoint was used when that is not plain: a
finetuning run's best/ or, without one, its newest step; a conversion.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from ptmcli.errors import PtmError

BEST = "best"


def open_checkpoint(path: str | Path, flag: str = "--checkpoint") -> Path:
    """The ptm checkpoint directory that ``path`` stands for."""
    from ptmcli.checkpoint import CONFIG, resolve_checkpoint

    given = Path(path)
    if not given.exists():
        raise PtmError(f"{flag} {path}: no such checkpoint or run directory")
    if (given / CONFIG).is_file() or (given / "modules.json").is_file():
        if _is_transformers(given):
            return _converted(given, flag)
        return given  # a ptm checkpoint, or a broken one that reading its config will name
    best = given / BEST
    if (best / CONFIG).is_file():
        _say(f"ptm: using {best} (the run's best checkpoint on its dev data)")
        return best
    latest = resolve_checkpoint(given)
    if (given / "results.json").is_file():  # a finetuning run without best/ (it had no --dev)
        _say(f"ptm: using {latest} (the run's newest checkpoint; it kept no best/)")
    return latest


def _is_transformers(directory: Path) -> bool:
    """A transformers config.json (a model type, no ptm "format"), or none beside an old
    sentence-transformers model's modules.json."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "format" not in config and ("model_type" in config or "architectures" in config)


def _converted(directory: Path, flag: str) -> Path:
    from ptmcli.convert.sources import read_hf
    from ptmcli.convert.writers import write_ptm

    staging = Path(tempfile.mkdtemp(prefix="ptm-converted-"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)
    try:
        model = read_hf(directory)
    except PtmError as err:
        raise PtmError(f"{flag} {directory}: a transformers directory ptm cannot convert ({err}); "
                       "see ptm convert --help") from None
    target = write_ptm(model, staging / "checkpoint", overwrite=False)
    _say(f"ptm: converted {directory} ({model.source.get('class')}) to a ptm checkpoint for this run; "
         f"ptm convert {directory} DIR keeps one")
    return target


def _say(line: str) -> None:
    print(line, file=sys.stderr)
