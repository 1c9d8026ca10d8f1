"""``ptm plot``: training curves of one or more runs, from their ``metrics.jsonl``, as a PNG or SVG.

Every number a run logs gets a subplot of its own (``loss`` first): training
records are drawn as lines, evaluation records (``eval_*`` keys, drawn in the
subplot of the key without its prefix) as markers, in the colour of their
run. Runs are overlaid and named in the legend. The x axis is the step, the
tokens seen or the training time; evaluation records carry only their step, so
they are placed on the other two axes between the training records logged
around them.

The figure is written to a hidden file beside the output and renamed into
place, so a failed plot leaves no half-written file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ptmcli.errors import PtmError

X_AXES = {"step": "step", "tokens": "tokens_seen", "time": "elapsed_s"}
X_LABELS = {"step": "step", "tokens": "tokens seen", "time": "training time"}
# Keys that place a record rather than measure anything.
PLACING = ("step", "tokens_seen", "elapsed_s")
MISSING = "ptm plot needs matplotlib: pip install matplotlib (or pip install ptm[plot])"


@dataclass
class RunMetrics:
    """One run's records, split into training and evaluation (``eval_`` taken off the keys)."""

    label: str
    path: Path
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    unreadable: int = 0


def metrics_file(path: str | Path) -> Path:
    """The ``metrics.jsonl`` of a run or checkpoint directory (or the file itself)."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if not path.exists():
        raise PtmError(f"{path}: no such run directory")
    if not (path / "metrics.jsonl").is_file():
        raise PtmError(f"{path}: no metrics.jsonl (expected a run directory of ptm pretrain or ptm finetune)")
    return path / "metrics.jsonl"


def read_records(file: Path) -> tuple[list[dict], int]:
    """The JSON objects of a ``metrics.jsonl``, and how many lines were not one (a line a kill cut short)."""
    records, bad = [], 0
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise PtmError(f"{file}: cannot read ({err.strerror})") from None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def is_eval(record: dict) -> bool:
    return any(key.startswith("eval_") for key in record)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_run(path: str | Path, label: str | None = None) -> RunMetrics:
    file = metrics_file(path)
    records, bad = read_records(file)
    run_path = file.parent
    run = RunMetrics(label or run_path.name or str(run_path), run_path, unreadable=bad)
    for record in records:
        if is_eval(record):
            run.evals.append({("step" if k == "step" else k[len("eval_"):] if k.startswith("eval_") else k): v
                              for k, v in record.items()})
        else:
            run.train.append(record)
    return run


def metric_names(runs: list[RunMetrics]) -> list[str]:
    """Every plotted metric, ``loss`` first, then in the order the runs log them (training before evaluation)."""
    names: dict[str, None] = {}
    for run in runs:
        for record in run.train:
            names.update((k, None) for k, v in record.items() if k not in PLACING and _number(v))
    for run in runs:
        for record in run.evals:
            names.update((k, None) for k, v in record.items() if k not in PLACING and _number(v))
    ordered = list(names)
    if "loss" in names:
        ordered.remove("loss")
        ordered.insert(0, "loss")
    return ordered


def _x_of(run: RunMetrics, x: str, notes: list[str]) -> tuple[list, list]:
    """x values of the training and evaluation records (None where a record cannot be placed)."""
    key = X_AXES[x]
    if x == "step" and not any("step" in r for r in run.train) and any("epoch" in r for r in run.train):
        # Static word vectors log one record per epoch, without steps.
        notes.append(f"ptm plot: {run.path}: records have no step; plotted against epoch")
        key = "epoch"
    train_x = [r.get(key) if _number(r.get(key)) else None for r in run.train]
    lacking = sum(value is None for value in train_x)
    if lacking:
        notes.append(f"ptm plot: {run.path}: {lacking} of {len(train_x)} training records have no {key}; left out")
    if key in ("step", "epoch"):
        eval_x = [r.get(key) if _number(r.get(key)) else None for r in run.evals]
    else:
        # Evaluation records hold only their step: placed between the training records around it.
        known = sorted((r["step"], value) for r, value in zip(run.train, train_x) if value is not None and _number(r.get("step")))
        eval_x = [r[key] if _number(r.get(key)) else _interpolate(known, r.get("step")) for r in run.evals]
        lacking = sum(value is None for value in eval_x)
        if lacking:
            notes.append(f"ptm plot: {run.path}: {lacking} evaluation records cannot be placed by {key} "
                         "(no training records with it); left out")
    return train_x, eval_x


def _interpolate(known: list[tuple[float, float]], step) -> float | None:
    if not known or not _number(step):
        return None
    if step <= known[0][0]:
        return known[0][1] * step / known[0][0] if known[0][0] else known[0][1]  # from (0, 0)
    for (s0, v0), (s1, v1) in zip(known, known[1:]):
        if s0 <= step <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return known[-1][1]


def _time_scale(runs_x: list[list]) -> tuple[float, str]:
    """Seconds shown in seconds, minutes or hours, by the longest run."""
    longest = max((v for xs in runs_x for v in xs if v is not None), default=0.0)
    if longest >= 2 * 3600:
        return 3600.0, "h"
    if longest >= 120:
        return 60.0, "min"
    return 1.0, "s"


def build_figure(runs: list[RunMetrics], x: str = "step", notes: list[str] | None = None):
    """The matplotlib figure: one subplot per metric, one colour per run; training lines, evaluation markers.

    ``notes`` collects one line per run whose records lack the x field.
    """
    if x not in X_AXES:
        raise PtmError(f"--x {x!r}: expected one of {', '.join(X_AXES)}")
    notes = [] if notes is None else notes
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PtmError(MISSING) from None

    names = metric_names(runs)
    if not names:
        raise PtmError(f"nothing to plot: no numbers logged in {', '.join(str(r.path / 'metrics.jsonl') for r in runs)}")
    placed = [_x_of(run, x, notes) for run in runs]
    scale, unit = _time_scale([t + e for t, e in placed]) if x == "time" else (1.0, "")
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.2 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, name in zip(axes, names):
        for run, color, (train_x, eval_x) in zip(runs, colors, placed):
            for records, xs, style in ((run.train, train_x, {"linestyle": "-", "linewidth": 1.4}),
                                       (run.evals, eval_x, {"linestyle": "none", "marker": "o", "markersize": 4})):
                points = [(xv / scale, r[name]) for r, xv in zip(records, xs)
                          if xv is not None and _number(r.get(name))]
                if points:
                    ax.plot(*zip(*points), color=color, **style)
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(X_LABELS[x] + (f" ({unit})" if unit else ""), fontsize=8)
        ax.tick_params(labelsize=8)
        if x == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 2.5
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=color, linewidth=2, label=run.label) for run, color in zip(runs, colors)]
    handles += [Line2D([], [], color="0.4", linestyle="-", label="training"),
                Line2D([], [], color="0.4", linestyle="none", marker="o", label="evaluation")]
    figure.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    return figure


def _labels(paths: list[str], labels: list[str] | None) -> list[str | None]:
    if labels and len(labels) != len(paths):
        raise PtmError(f"--label given {len(labels)} times for {len(paths)} runs: give one per run, in order")
    if labels:
        return list(labels)
    names = [Path(p).resolve().name for p in paths]
    # Runs with the same directory name are told apart by the path given.
    return [str(Path(p)) if names.count(n) > 1 else None for p, n in zip(paths, names)]


def output_format(out: str | Path) -> str:
    """The file format matplotlib writes for ``out``'s suffix; one line naming it when none does."""
    suffix = Path(out).suffix.lower().lstrip(".")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise PtmError(MISSING) from None
    supported = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in supported:
        shown = f"suffix .{suffix}" if suffix else "no suffix"
        raise PtmError(f"-o {out}: {shown}; matplotlib writes {', '.join('.' + s for s in sorted(supported))} "
                       "(.png or .svg for curves)")
    return suffix


def save_figure(figure, out: str | Path, fmt: str) -> None:
    """Write ``figure`` to a hidden file beside ``out``, then rename it into place."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    except OSError as err:
        raise PtmError(f"-o {out}: cannot write there ({err.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format=fmt, dpi=120)
        os.chmod(staging, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
        os.replace(staging, out)
    except BaseException as err:
        Path(staging).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise PtmError(f"-o {out}: cannot write ({err.strerror})") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(run_dirs: list[str], out: str, x: str = "step", labels: list[str] | None = None) -> Path:
    """Plot ``run_dirs`` into ``out``; returns its path. Notes go to stderr, one line each."""
    if not run_dirs:
        raise PtmError("give at least one RUN_DIR")
    if x not in X_AXES:
        raise PtmError(f"--x {x!r}: expected one of {', '.join(X_AXES)}")
    names = _labels(run_dirs, labels)
    runs = [read_run(path, label) for path, label in zip(run_dirs, names)]
    fmt = output_format(out)
    notes: list[str] = []
    for one in runs:
        if one.unreadable:
            notes.append(f"ptm plot: {one.path / 'metrics.jsonl'}: {one.unreadable} unreadable lines skipped")
    figure = build_figure(runs, x, notes)
    for line in notes:
        print(line, file=sys.stderr)
    save_figure(figure, out, fmt)
    count = sum(len(r.train) + len(r.evals) for r in runs)
    print(f"ptm plot: {count} records of {len(runs)} {'run' if len(runs) == 1 else 'runs'} -> {out}", file=sys.stderr)
    return Path(out)
