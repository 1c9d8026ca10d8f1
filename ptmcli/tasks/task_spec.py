"""``tasks.toml``: the tasks of one multi-task finetuning run (``ptm finetune --tasks``).

One ``[[task]]`` table per task and a few top-level keys shared by all::

    sampling = "temperature"      # or "proportional" (the default)
    temperature = 2.0             # p_i proportional to n_i ** (1 / T); T = 1 is proportional
    steps = 3000                  # or epochs = 2 (passes over all training sets together)

    [[task]]
    name = "sst2"                 # letters, digits, - and _: the head's name and its metric keys
    type = "classification"
    train = "sst2/train.tsv"      # relative paths are read from the file's own directory
    dev = "sst2/dev.tsv"

Per task, beside those: ``text_columns`` (a list or a comma-separated string),
``label_column``, ``metric``, ``max_len`` and ``pool``, as ``ptm finetune``'s
flags of the same names. Everything is checked here, before any model loads,
and each mistake is one line naming the file and the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.tasks import QA, SEQ2SEQ, TASKS

SAMPLING = ("proportional", "temperature")
# Metrics a task's dev scores hold where higher is better: what may choose the best checkpoint.
METRICS = {
    "classification": ("accuracy", "macro_f1", "mcc"),
    "pair-classification": ("accuracy", "macro_f1", "mcc"),
    "multiple-choice": ("accuracy", "macro_f1", "mcc"),
    "regression": ("pearson", "spearman"),
    "token-classification": ("f1", "precision", "recall", "token_accuracy"),
}
TYPE_ALIASES = {"tagging": "token-classification"}
POOLS = ("mean", "cls", "last", "max", "pooler")
TOP_KEYS = {"sampling", "temperature", "steps", "epochs", "task"}
TASK_KEYS = {"name", "type", "train", "dev", "text_columns", "label_column", "metric", "max_len", "pool"}
NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Refused with the reason: their data and scoring are not one labeled row per example with one head.
REFUSED_TYPES = {
    QA: "question answering trains on passage windows scored per question; finetune it on its own (--task qa)",
    SEQ2SEQ: "seq2seq trains the model's own decoder (an encoder-decoder's, or UniLM's LM head), not a head on a shared encoder",
}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: str
    train: str
    dev: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    metric: str | None = None
    max_len: int | None = None
    pool: str | None = None


@dataclass(frozen=True)
class MultiTaskSpec:
    path: str
    tasks: tuple[TaskSpec, ...]
    sampling: str = "proportional"
    temperature: float = 1.0
    steps: int | None = None
    epochs: float | None = None

    def to_dict(self) -> dict:
        return {"sampling": self.sampling, "temperature": self.temperature,
                "tasks": [{"name": t.name, "type": t.type, "train": t.train, "dev": t.dev} for t in self.tasks]}


def read_tasks(path: str | Path) -> MultiTaskSpec:
    """The checked contents of a tasks.toml file."""
    path = Path(path)
    if not path.is_file():
        raise PtmError(f"--tasks {path}: no such file")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise PtmError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:  # its message says the line and column
        raise PtmError(f"{path}: not valid TOML: {err}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise PtmError(f"{path}: unknown key {key!r} (top-level keys: {', '.join(sorted(TOP_KEYS))})")
    sampling = data.get("sampling", "temperature" if "temperature" in data else "proportional")
    if sampling not in SAMPLING:
        raise PtmError(f"{path}: sampling = {sampling!r}: expected one of {', '.join(SAMPLING)}")
    temperature = data.get("temperature", 1.0)
    if sampling == "proportional" and "temperature" in data:
        raise PtmError(f"{path}: temperature applies to sampling = \"temperature\"")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise PtmError(f"{path}: temperature = {temperature!r}: must be a positive number")
    if "steps" in data and "epochs" in data:
        raise PtmError(f"{path}: give steps or epochs, not both")
    steps, epochs = data.get("steps"), data.get("epochs")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
        raise PtmError(f"{path}: steps = {steps!r}: must be a positive integer")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0):
        raise PtmError(f"{path}: epochs = {epochs!r}: must be a positive number")
    tables = data.get("task")
    if not isinstance(tables, list) or not tables:
        raise PtmError(f"{path}: no [[task]] tables")
    tasks: list[TaskSpec] = []
    for index, table in enumerate(tables):
        spec = _task(path, index, table)
        if any(t.name == spec.name for t in tasks):
            raise PtmError(f"{path}: task name {spec.name!r} is given twice (each head needs its own name)")
        tasks.append(spec)
    return MultiTaskSpec(str(path), tuple(tasks), sampling, float(temperature), steps, None if epochs is None else float(epochs))


def _task(path: Path, index: int, table) -> TaskSpec:
    where = f"{path}: [[task]] {index + 1}"
    if not isinstance(table, dict):
        raise PtmError(f"{where}: not a table")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise PtmError(f"{where}: name = {name!r}: required, letters, digits, - and _ only")
    where = f"{path}: task {name!r}"
    for key in table:
        if key not in TASK_KEYS:
            raise PtmError(f"{where}: unknown key {key!r} (task keys: {', '.join(sorted(TASK_KEYS))})")
    kind = TYPE_ALIASES.get(table.get("type"), table.get("type"))
    if kind in REFUSED_TYPES:
        raise PtmError(f"{where}: type = {kind!r} is not supported in multi-task runs: {REFUSED_TYPES[kind]}")
    if kind not in TASKS:
        raise PtmError(f"{where}: type = {table.get('type')!r}: expected one of {', '.join(TASKS)} (or tagging)")
    files = {}
    for key in ("train", "dev"):
        value = table.get(key)
        if value is None and key == "dev":
            files[key] = None
            continue
        if not isinstance(value, str) or not value:
            raise PtmError(f"{where}: {key}: required, a file path")
        file = Path(value) if Path(value).is_absolute() else path.parent / value
        if not file.is_file():
            raise PtmError(f"{where}: {key} = {value!r}: no such file ({file})")
        files[key] = str(file)
    columns = table.get("text_columns")
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    if columns is not None and (not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)):
        raise PtmError(f"{where}: text_columns: a list of column names")
    label_column = table.get("label_column")
    if label_column is not None and not isinstance(label_column, str):
        raise PtmError(f"{where}: label_column: a column name")
    metric = table.get("metric")
    if metric is not None and metric not in METRICS[kind]:
        raise PtmError(f"{where}: metric = {metric!r}: a {kind} task keeps the best by one of {', '.join(METRICS[kind])}")
    max_len = table.get("max_len")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0):
        raise PtmError(f"{where}: max_len = {max_len!r}: must be a positive integer")
    pool = table.get("pool")
    if pool is not None and pool not in POOLS:
        raise PtmError(f"{where}: pool = {pool!r}: expected one of {', '.join(POOLS)}")
    return TaskSpec(name, kind, files["train"], files["dev"], tuple(columns) if columns else None, label_column, metric, max_len, pool)


def sampling_probabilities(sizes: list[int], temperature: float = 1.0) -> list[float]:
    """p_i proportional to n_i ** (1 / T): T = 1 follows the data sizes, larger T flattens toward uniform."""
    weights = [float(n) ** (1.0 / temperature) for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]
