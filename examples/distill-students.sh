#!/usr/bin/env bash
# Task distillation with a pretrained teacher (docs/finetune.md, "Distillation"): a pretrained encoder is
# finetuned on SST-2 (8,000 training sentences) and CoNLL-2003 as the teacher; bert-tiny students (2 x 128)
# are then trained from random initialisation on the same rows, distilled from the teacher (T 2, alpha 0.5)
# or on the hard labels alone (--alpha 0), SEEDS each. Every model is scored with `ptm eval` on the SST-2
# dev set and the CoNLL-2003 test set, whose reported time gives the inference speed (one thread).
#
#   PRETRAINED=runs/cram/pt-mask-0.3 bash examples/distill-students.sh runs/distill
#
# PRETRAINED (required): the teacher's pretrained encoder. SEEDS ("0 1 2"), THREADS (1).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(cd "${DATA:-../shared/data}" && pwd)
OUT=${1:-runs/distill}
PRETRAINED=${PRETRAINED:?set PRETRAINED to a pretrained encoder checkpoint}
SEEDS=${SEEDS:-"0 1 2"}
THREADS=${THREADS:-1}
mkdir -p "$OUT"

[ -f "$OUT/sst2-train-8k.tsv" ] || python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" "$OUT/sst2-train-8k.tsv"

COMMON="--threads $THREADS --no-progress --log-every 100 --precision bf16 --batch-size 32 --overwrite"
# task | training file | dev file | test file | epochs | teacher lr | flags
TASKS="sst2|classification|$OUT/sst2-train-8k.tsv|$D/sst2/dev.tsv|$D/sst2/dev.tsv|2|1e-4|--max-len 64
conll|token-classification|$D/conll2003/train.txt|$D/conll2003/valid.txt|$D/conll2003/test.txt|1|3e-4|--max-len 128"

score() {  # run directory, test file
  ptm eval -c "$1" --data "$2" --json --threads "$THREADS" > "$1/test.json"
}

echo "$TASKS" | while IFS='|' read -r name task train dev test epochs lr flags; do
  teacher="$OUT/teacher-$name"
  [ -f "$teacher/test.json" ] || {
    ptm finetune --checkpoint "$PRETRAINED" --task "$task" --train "$train" --dev "$dev" -o "$teacher" \
        --epochs "$epochs" --lr "$lr" --seed 0 $flags $COMMON > "$teacher.log" 2>&1
    score "$teacher" "$test"
  }
  for seed in $SEEDS; do
    for alpha in 0.5 0; do
      run="$OUT/student-$name-alpha$alpha-s$seed"
      [ -f "$run/test.json" ] && continue
      ptm distill --teacher "$teacher" --student bert-tiny --task "$task" --train "$train" --dev "$dev" -o "$run" \
          --epochs "$epochs" --alpha "$alpha" --temperature 2 --seed "$seed" $COMMON > "$run.log" 2>&1
      score "$run" "$test"
    done
  done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
def scores(pattern, metric):
    runs = sorted(out.glob(pattern))
    results = [json.loads((run / "test.json").read_text()) for run in runs if (run / "test.json").exists()]
    return [100 * r[metric] for r in results], [r["examples"] / r["seconds"] for r in results]
print("| task | model | score (mean ± sd over seeds) | runs | eval sentences/s (best run) |")
print("| --- | --- | ---: | ---: | ---: |")
for name, metric in (("sst2", "accuracy"), ("conll", "f1")):
    for label, pattern in (("teacher", f"teacher-{name}"), ("bert-tiny, distilled (alpha 0.5)", f"student-{name}-alpha0.5-s*"),
                           ("bert-tiny, hard labels (alpha 0)", f"student-{name}-alpha0-s*")):
        values, speeds = scores(pattern, metric)
        if not values:
            continue
        sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
        print(f"| {name} | {label} | {statistics.mean(values):.1f}{sd} | {len(values)} | {max(speeds):.0f} |")
PY
