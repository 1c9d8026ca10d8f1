"""``ptm info``: what a checkpoint is and how far its training got, from its files alone.

Reads ``config.json``, the header of ``model.safetensors`` (the tensor shapes:
the parameter count without loading a weight), ``tokenizer_config.json``,
``trainer/state.json`` and ``metrics.jsonl``; a run directory stands for its
newest step checkpoint. No model is built and torch is not imported, so it
answers at once even for a large checkpoint.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.evaluation.results import print_json

# safetensors dtypes that hold weights; integer tensors are buffers (ids, tables), not parameters.
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
# The header of a safetensors file is small; a larger length is a damaged or foreign file.
MAX_HEADER = 100 * 1024 * 1024


def tensor_shapes(file: Path) -> dict[str, tuple[str, list[int]]]:
    """``name -> (dtype, shape)`` from a safetensors header, without reading the tensors."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise PtmError(f"{file}: unreadable safetensors file (shorter than its header)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER:
                raise PtmError(f"{file}: unreadable safetensors file (header length {length})")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as err:
        raise PtmError(f"{file}: cannot read ({err.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise PtmError(f"{file}: unreadable safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise PtmError(f"{file}: unreadable safetensors file (its header is not a JSON object)")
    return {name: (entry.get("dtype"), list(entry.get("shape", [])))
            for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}


def count_parameters(file: Path) -> dict:
    """Floating-point values stored (tied weights are stored once), and the tensors and dtypes they are in."""
    shapes = tensor_shapes(file)
    floats = {name: (dtype, shape) for name, (dtype, shape) in shapes.items() if dtype in FLOAT_DTYPES}
    return {"parameters": sum(math.prod(shape) for _, shape in floats.values()),
            "tensors": len(shapes), "dtypes": sorted({dtype for dtype, _ in floats.values()})}


def _read_json(file: Path) -> dict | None:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{file}: not readable JSON ({err})") from None
    return value if isinstance(value, dict) else None


def _find(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint directory, run directory or None)."""
    from ptmcli.checkpoint.directory import CONFIG, resolve_checkpoint

    if (path / CONFIG).is_file():
        parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, parent if (parent / "run.json").is_file() else None
    return resolve_checkpoint(path), path


def describe(path: str | Path) -> dict:
    """Everything ``ptm info`` reports, as one JSON-ready dict."""
    from ptmcli.checkpoint.directory import WEIGHTS, read_config
    from ptmcli.commands.plot import is_eval, read_records

    path = Path(path)
    checkpoint, run_dir = _find(path)
    config = read_config(checkpoint)
    weights = checkpoint / WEIGHTS
    if not weights.is_file():
        raise PtmError(f"{checkpoint}: checkpoint has no {WEIGHTS}")
    counts = count_parameters(weights)
    tok_config = _read_json(checkpoint / "tokenizer_config.json") or {}
    recorded_tok = config.get("tokenizer") or {}
    task = config.get("task")
    info: dict = {
        "checkpoint": str(checkpoint),
        "run": str(run_dir) if run_dir is not None else None,
        "family": config["arch"],
        "objective": config.get("objective"),
        "task": task.get("type") if isinstance(task, dict) else None,
        "labels": len(task["labels"]) if isinstance(task, dict) and isinstance(task.get("labels"), list) else None,
        "parameters": counts["parameters"],
        "tensors": counts["tensors"],
        "dtypes": counts["dtypes"],
        "model": config.get("model"),
        "tokenizer": {"kind": tok_config.get("kind") or tok_config.get("tokenizer_class"),
                      "vocab_size": recorded_tok.get("vocab_size", tok_config.get("vocab_size")),
                      "sha256": recorded_tok.get("sha256")},
        "steps": None, "tokens_seen": None, "training_seconds": None,
        "last_metrics": None, "last_eval": None,
        "best": config.get("best"),
        "finetuned_from": config.get("finetuned_from"),
        "converted_from": config.get("converted_from"),
        "training_data": (config.get("training") or {}).get("data"),
        "ptm_version": config.get("ptm_version"),
    }
    state = _read_json(checkpoint / "trainer" / "state.json") or {}
    loop = state.get("loop") if isinstance(state.get("loop"), dict) else {}
    # The checkpoint's own copy of the history ends at its step; the run's file may go further.
    metrics = checkpoint / "metrics.jsonl"
    if not metrics.is_file() and run_dir is not None:
        metrics = run_dir / "metrics.jsonl"
    records = read_records(metrics)[0] if metrics.is_file() else []
    train = [r for r in records if not is_eval(r)]
    evals = [r for r in records if is_eval(r)]
    last = train[-1] if train else None
    # A best/ checkpoint has no trainer state: its step is the one it was kept at.
    latest = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=None)
    info["steps"] = loop.get("step", (config.get("best") or {}).get("step", latest))
    info["tokens_seen"] = loop.get("tokens_seen", (last or {}).get("tokens_seen"))
    info["training_seconds"] = loop.get("elapsed_s", (last or {}).get("elapsed_s"))
    info["last_metrics"] = last
    info["last_eval"] = evals[-1] if evals else None
    return info


def _count(value) -> str:
    if value is None:
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.2f}{unit} ({value:,})"
    return f"{value:,}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _metrics_text(record: dict | None, skip: tuple[str, ...]) -> str:
    if not record:
        return "-"
    parts = []
    for key, value in record.items():
        if key in skip:
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def _shape_text(model: dict | None) -> str:
    if not isinstance(model, dict):
        return "-"
    keys = (("num_layers", "layers"), ("hidden_size", "hidden"), ("num_heads", "heads"), ("vocab_size", "vocab"))
    return ", ".join(f"{label} {model[key]}" for key, label in keys if key in model) or "-"


def rows(info: dict) -> list[tuple[str, str]]:
    """The table's (field, value) lines."""
    tok = info["tokenizer"]
    task = info["task"] if info["labels"] is None else f"{info['task']} ({info['labels']} labels)"
    lines = [
        ("checkpoint", info["checkpoint"]),
        ("family", info["family"]),
        ("objective", info["objective"] or "-"),
        ("task", task or "- (pretrained)"),
        ("parameters", f"{_count(info['parameters'])} in {info['tensors']} tensors, {'/'.join(info['dtypes']) or '-'}"),
        ("shape", _shape_text(info["model"])),
        ("tokenizer", f"{tok['kind'] or '-'}, vocabulary {tok['vocab_size'] if tok['vocab_size'] is not None else '-'}"),
        ("steps", f"{info['steps']:,}" if isinstance(info["steps"], int) else "-"),
        ("tokens seen", _count(info["tokens_seen"])),
        ("training time", _duration(info["training_seconds"])),
        ("last metrics", _metrics_text(info["last_metrics"], ("tokens_seen", "elapsed_s"))),
        ("last evaluation", _metrics_text(info["last_eval"], ())),
    ]
    if info["best"]:
        lines.append(("best", _metrics_text(info["best"], ())))
    if info["run"]:
        lines.insert(1, ("run", info["run"]))
    if info["finetuned_from"]:
        lines.append(("finetuned from", str(info["finetuned_from"])))
    source = info["converted_from"]
    if source:
        shown = {k: v for k, v in source.items() if not isinstance(v, (dict, list)) or v}
        shown.pop("hf_config", None)  # the whole foreign config: in --json only
        lines.append(("converted from", ", ".join(f"{k} {v}" for k, v in shown.items()) or "-"))
    if info["training_data"]:
        lines.append(("training data", info["training_data"]))
    return lines


def run(path: str, as_json: bool = False) -> dict:
    info = describe(path)
    if as_json:
        print_json(info)
        return info
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in rows(info):
        table.add_row(Text(name), Text(value))  # Text: file contents are never read as markup
    Console(highlight=False).print(table)
    return info
