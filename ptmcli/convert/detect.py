"""What a source is: a ptm checkpoint, a ptm run directory, a transformers model, or a word-vector file.

Only config.json is read (no torch), so a wrong path fails at once; a file is
a word-vector file (word2vec text or binary, GloVe text, fastText .vec),
whose format its reader finds.
"""

from __future__ import annotations

import json
from pathlib import Path

from ptmcli.errors import PtmError

TARGETS = ("hf", "ptm", "word2vec", "onnx")


VECTORS = "vectors"
VECTOR_TARGETS = ("ptm", "word2vec")


def source_kind(path: str | Path) -> str:
    """``"ptm"``, ``"hf"`` or ``"vectors"``; a PtmError saying what was expected otherwise."""
    path = Path(path)
    if not path.exists():
        raise PtmError(f"{path}: no such file or directory")
    if path.is_file():
        return VECTORS
    if not path.is_dir():
        raise PtmError(f"{path}: expected a directory (a ptm checkpoint or a Hugging Face model directory) "
                       "or a word-vector file")
    config = path / "config.json"
    if not config.is_file():
        if (path / "checkpoints").is_dir():
            return "ptm"  # a run directory: its latest checkpoint
        if (path / "modules.json").is_file():
            return "hf"  # an old sentence-transformers model: its Transformer lives in a subdirectory
        raise PtmError(f"{path}: neither a ptm checkpoint nor a Hugging Face model directory (no config.json)")
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{config}: not valid JSON ({err})") from None
    if isinstance(values, dict) and values.get("format") == "ptm-checkpoint":
        return "ptm"
    if isinstance(values, dict) and ("model_type" in values or "architectures" in values):
        return "hf"
    raise PtmError(f"{path}: neither a ptm checkpoint (config.json with format 'ptm-checkpoint') "
                   "nor a Hugging Face model directory (config.json with model_type)")


def target_for(kind: str, to: str | None) -> str:
    """The output format: the other side of the source unless ``--to`` says otherwise."""
    if to is None:
        return "hf" if kind == "ptm" else "ptm"
    if to not in TARGETS:
        raise PtmError(f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    if kind == VECTORS and to not in VECTOR_TARGETS:
        raise PtmError(f"--to {to}: a word-vector file converts to {' or '.join(VECTOR_TARGETS)}")
    if to == kind:
        name = "a ptm checkpoint" if kind == "ptm" else "a Hugging Face model directory"
        raise PtmError(f"--to {to}: the source is already {name}")
    return to
