#!/usr/bin/env bash
# Multi-task against single-task finetuning (MT-DNN's comparison) on SST-2 (8,000 training sentences), RTE, MRPC
# and STS-B from one pretrained checkpoint: each task finetuned alone for EPOCHS passes over its data, and one
# multi-task run for EPOCHS passes over all four together (so both sides see the same rows the same number of
# times), then each task's dev metric from both, side by side.
#
#   CKPT=runs/cram/pt-post-ln bash examples/multitask-vs-single.sh runs/mt
#
# CKPT (required): a pretrained encoder checkpoint (its tokenizer is used). EPOCHS (2), LR (1e-4), SEED (0),
# THREADS (1), TEMPERATURE (2: task sampling p_i ~ n_i^(1/T)), MAX_STEPS (unset: only to smoke-test the script).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(cd "${DATA:-../shared/data}" && pwd)
OUT=${1:-runs/multitask}
CKPT=${CKPT:?set CKPT to a pretrained checkpoint}
EPOCHS=${EPOCHS:-2}
LR=${LR:-1e-4}
SEED=${SEED:-0}
THREADS=${THREADS:-1}
TEMPERATURE=${TEMPERATURE:-2}
LENGTH="--epochs $EPOCHS"
[ -n "${MAX_STEPS:-}" ] && LENGTH="--max-steps $MAX_STEPS"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # tasks.toml reads relative paths from its own directory

[ -f "$OUT/sst2-train-8k.tsv" ] || python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" "$OUT/sst2-train-8k.tsv"

# name | type | train | dev | extra single-task flags | extra tasks.toml lines
cat > "$OUT/tasks.txt" <<EOF
sst2|classification|$OUT/sst2-train-8k.tsv|$D/sst2/dev.tsv|--max-len 64|max_len = 64
rte|pair-classification|$D/rte/train.tsv|$D/rte/dev.tsv||
mrpc|pair-classification|$D/mrpc/train.tsv|$D/mrpc/dev.tsv|--text-columns "#1 String,#2 String" --label-column Quality|text_columns = ["#1 String", "#2 String"]
label_column = "Quality"
stsb|regression|$D/stsb/train.tsv|$D/stsb/dev.tsv|--text-columns sentence1,sentence2 --label-column score|text_columns = ["sentence1", "sentence2"]
label_column = "score"
EOF

{
  echo "sampling = \"temperature\""
  echo "temperature = $TEMPERATURE"
  echo "epochs = $EPOCHS"
  awk -F'|' 'NF >= 4 { printf "\n[[task]]\nname = \"%s\"\ntype = \"%s\"\ntrain = \"%s\"\ndev = \"%s\"\n", $1, $2, $3, $4; if ($6 != "") print $6; next }
             { print }' "$OUT/tasks.txt"
} > "$OUT/tasks.toml"

COMMON="--checkpoint $CKPT --lr $LR --seed $SEED --threads $THREADS --batch-size 32 --no-progress --log-every 100 --overwrite"
grep -E '^[a-z0-9]+\|' "$OUT/tasks.txt" | while IFS='|' read -r name type train dev extra _; do
  eval "ptm finetune $COMMON --task $type --train '$train' --dev '$dev' $extra $LENGTH -o '$OUT/single-$name'"
done
ptm finetune $COMMON --tasks "$OUT/tasks.toml" $LENGTH -o "$OUT/multi"

python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def best(run):
    data = json.loads((run / "results.json").read_text())
    return data.get("best", data)
multi = best(out / "multi")
print("| task | metric | single-task | multi-task |")
print("| --- | --- | ---: | ---: |")
for name in ("sst2", "rte", "mrpc", "stsb"):
    single = best(out / f"single-{name}")
    metric = "pearson" if name == "stsb" else ("macro_f1" if name == "mrpc" else "accuracy")
    mine = single.get(metric)
    theirs = next((v for k, v in multi.items() if k.endswith(f"{name}/{metric}")), None)
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
    print(f"| {name} | {metric} | {fmt(mine)} | {fmt(theirs)} |")
PY
