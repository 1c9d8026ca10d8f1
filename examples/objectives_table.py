"""Markdown tables from a run of examples/objectives-at-equal-budget.sh.

    python3 examples/objectives_table.py runs/budget

Classification figures are the last evaluation's (not the best over epochs, which would favour whichever
run happened to peak); CoNLL-2003 is entity F1 on the test set of the model chosen on valid.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

TASKS = (("sst2", "accuracy", "SST-2 acc"), ("rte", "accuracy", "RTE acc"), ("mrpc", "accuracy", "MRPC acc"),
         ("conll", "f1", "CoNLL test F1"))


def last_eval(run: Path, metric: str) -> float | None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [row for row in rows if f"eval_{metric}" in row]
    return evals[-1][f"eval_{metric}"] if evals else None


def conll_test(run: Path) -> float | None:
    path = run / "test.json"
    if not path.is_file() or not path.stat().st_size:
        return None
    report = json.loads(path.read_text())
    for key in ("f1", "entity_f1", "micro_f1"):
        if key in report:
            return report[key]
        if key in report.get("metrics", {}):
            return report["metrics"][key]
    return None


def finetuned(root: Path, name: str, task: str, metric: str) -> str:
    values = []
    for run in sorted((root / "ft").glob(f"{name}-{task}-s*")):
        if not (run / "DONE").exists():
            continue
        value = conll_test(run) if task == "conll" else last_eval(run, metric)
        if value is not None:
            values.append(100 * value)
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def pretraining(root: Path, name: str) -> tuple[str, str, str]:
    log = root / f"pt-{name}.log"
    if not log.is_file():
        return "–", "–", "–"
    text = log.read_text()
    steps = re.search(r"(\d[\d,]*) steps ->", text)
    evals = [line for line in text.splitlines() if "| eval_" in line]
    last = evals[-1] if evals else ""
    fields = dict(re.findall(r"(eval_\w+) ([-\d.e]+)", last))
    shown = ", ".join(f"{key[5:]} {float(value):.3f}" for key, value in fields.items())
    done = re.search(r"in (\d+)s", text.splitlines()[-1]) if text.strip() else None
    return (steps.group(1) if steps else "–"), (shown or "–"), (f"{int(done.group(1)) / 60:.0f}" if done else "–")


def main(root: Path) -> None:
    names = [line.split("|")[0] for line in (root / "variants.txt").read_text().splitlines() if line.strip()]
    print("| objective | steps | wall min | WikiText-2 valid at the end |")
    print("| --- | --- | --- | --- |")
    for name in names:
        steps, shown, minutes = pretraining(root, name)
        print(f"| {name} | {steps} | {minutes} | {shown} |")
    print()
    print("| initialisation | " + " | ".join(title for _, _, title in TASKS) + " |")
    print("| --- |" + " --- |" * len(TASKS))
    for name in ["random", *names]:
        print(f"| {name} | " + " | ".join(finetuned(root, name, task, metric) for task, metric, _ in TASKS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/budget"))
