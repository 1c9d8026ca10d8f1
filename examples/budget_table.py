"""The table of examples/budget-recipe.sh: per variant, the pretraining it got and what finetuning made of it.

    python3 examples/budget_table.py RUN_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_dev(run: Path) -> float | None:
    results = run / "results.json"
    if not results.exists():
        return None
    data = json.loads(results.read_text())
    best = data.get("best", data)
    for key in ("accuracy", "dev_accuracy", "eval_accuracy"):
        if key in best:
            return float(best[key])
    return None


def main(root: Path) -> None:
    names = [line.split("|", 1)[0] for line in (root / "variants.txt").read_text().splitlines() if line.strip()]
    print("| variant | steps | tokens (M) | WikiText-2 MLM acc | WikiText-2 MLM loss | SST-2 dev acc (mean ± sd, seeds) | CoNLL test F1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ["random-recipe", *names]:
        pt = records(root / f"pt-{name}" / "metrics.jsonl")
        train = [r for r in pt if "loss" in r]
        evals = [r for r in pt if "eval_evaldata_mlm_acc" in r]
        steps = train[-1]["step"] if train else "-"
        tokens = f"{train[-1]['tokens_seen'] / 1e6:.1f}" if train else "-"
        acc = f"{100 * evals[-1]['eval_evaldata_mlm_acc']:.1f}" if evals else "-"
        loss = f"{evals[-1]['eval_evaldata_mlm_loss']:.2f}" if evals else "-"
        sst = [v for v in (best_dev(p) for p in sorted((root / "ft").glob(f"{name}-sst2-s*")) if p.is_dir()) if v is not None]
        sst_text = (f"{100 * statistics.mean(sst):.1f} ± {100 * statistics.stdev(sst):.1f} ({len(sst)})" if len(sst) > 1
                    else f"{100 * sst[0]:.1f} (1)" if sst else "-")
        conll_file = root / "ft" / f"{name}-conll-s0" / "test.json"
        conll = "-"
        if conll_file.exists():
            test = json.loads(conll_file.read_text())
            f1 = test.get("f1", test.get("metrics", {}).get("f1"))
            conll = f"{100 * f1:.1f}" if f1 is not None else "-"
        print(f"| {name} | {steps} | {tokens} | {acc} | {loss} | {sst_text} | {conll} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
