#!/usr/bin/env bash
# Accuracy against the fraction of attention heads pruned (docs/compress.md, "Measured").
#
# From a finetuned SST-2 checkpoint: for each fraction, `ptm compress --prune-heads` (importance on the
# first ROWS rows of the training file), then `ptm eval` on the dev set, without recovery and after
# STEPS steps of recovery finetuning on the training file at LR. Prints a markdown table and keeps it
# in OUT/table.md.
#
#   examples/prune-sweep.sh
#   CKPT=runs/sst2/best TRAIN=sst2/train.tsv DEV=sst2/dev.tsv OUT=runs/prune-sst2 examples/prune-sweep.sh
set -euo pipefail

CKPT=${CKPT:-runs/cram/ft/mask-0.3-sst2-s0/best}
TRAIN=${TRAIN:-runs/budget/sst2-train-8k.tsv}   # the file the checkpoint was finetuned on (its run.json)
DEV=${DEV:-../shared/data/sst2/dev.tsv}
OUT=${OUT:-runs/prune}
ROWS=${ROWS:-2000}
STEPS=${STEPS:-150}
LR=${LR:-1e-4}                                  # the checkpoint's own finetuning rate (its run.json)
SEED=${SEED:-0}
THREADS=${THREADS:-1}
FRACTIONS=${FRACTIONS:-"0 0.125 0.25 0.375 0.5 0.625 0.75"}

mkdir -p "$OUT"
accuracy() {  # the dev accuracy of checkpoint $1
    ptm eval -c "$1" --data "$DEV" --json --threads "$THREADS" 2>/dev/null | tail -n 1 \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["accuracy"])'
}

echo "source $CKPT: dev accuracy $(accuracy "$CKPT")" | tee "$OUT/source.txt"
rows=()
for f in $FRACTIONS; do
    dir="$OUT/f$f"
    ptm compress "$CKPT" -o "$dir/pruned" --prune-heads "$f" --data "$TRAIN" --max-examples "$ROWS" \
        --seed "$SEED" --threads "$THREADS"
    ptm compress "$CKPT" -o "$dir/recovered" --prune-heads "$f" --data "$TRAIN" --max-examples "$ROWS" \
        --recover-steps "$STEPS" --recover-lr "$LR" --seed "$SEED" --threads "$THREADS"
    plain=$(accuracy "$dir/pruned")
    recovered=$(accuracy "$dir/recovered")
    rows+=("$(python3 - "$f" "$dir" "$plain" "$recovered" <<'EOF'
import json, os, sys
f, d, plain, recovered = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
config = json.load(open(os.path.join(d, "pruned", "config.json")))
heads = config["model"]["heads_per_layer"]
total = config["model"]["num_layers"] * config["model"]["num_heads"]
size = os.path.getsize(os.path.join(d, "pruned", "model.safetensors")) / 1e6
print(f"| {float(f):.3f} | {sum(heads)}/{total} {heads} | {size:.1f} MB | {plain:.4f} | {recovered:.4f} |")
EOF
)")
done

{
    echo "| fraction pruned | heads kept (per layer) | model.safetensors | dev accuracy, no recovery | dev accuracy, $STEPS recovery steps |"
    echo "|---:|---|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.md"
