#!/usr/bin/env bash
# Feature-based use, BERT-paper style: extract every layer once, then train a scalar mix + head on the stored features.
#   bash examples/feature-based.sh CHECKPOINT [OUT_DIR]
set -euo pipefail
D=${DATA:-../shared/data}
CKPT=$1
OUT=${2:-runs/features}
mkdir -p "$OUT"
X="--task classification --pool mean --layers all --max-seq-length 64 --precision bf16 --overwrite"
ptm extract-features -c "$CKPT" "$D/sst2/train.tsv" -o "$OUT/sst2-train" $X
ptm extract-features -c "$CKPT" "$D/sst2/dev.tsv" -o "$OUT/sst2-dev" $X
ptm finetune --train-features "$OUT/sst2-train" --dev-features "$OUT/sst2-dev" --task classification \
    --train "$D/sst2/train.tsv" --dev "$D/sst2/dev.tsv" --epochs 5 --lr 1e-3 -o "$OUT/sst2-head" --overwrite
# The result is an ordinary checkpoint: score it on raw text.
ptm eval -c "$OUT/sst2-head/best" --data "$D/sst2/dev.tsv"
