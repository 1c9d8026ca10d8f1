#!/usr/bin/env bash
# Cross-view training on CoNLL-2003 with 10% of the training sentences labelled: every 10th sentence in
# file order keeps its tags (examples/cvt_conll_split.py), the other 90% are unlabeled text. Two taggers
# train the same labelled steps, one supervised only, one with --cvt-unlabeled (one unlabeled step after
# each labelled one); both are scored on the test set and their entity F1s printed.
#
#   bash examples/cvt-conll.sh [OUT_DIR]                      a bert-mini from random initialisation
#   CKPT=runs/bert-mini bash examples/cvt-conll.sh runs/cvt   a pretrained checkpoint instead
#
# EPOCHS (default 3) passes over the labelled part, or STEPS labelled steps; RATIO (1) unlabeled steps per
# labelled step; EVERY (10) labels one sentence in EVERY; DEV/TEST override the evaluation files.
set -euo pipefail
D=${DATA:-../shared/data}/conll2003
OUT=${1:-runs/cvt-conll}
THREADS=${THREADS:-1}
EPOCHS=${EPOCHS:-3}
RATIO=${RATIO:-1}
EVERY=${EVERY:-10}
DEV=${DEV:-$D/valid.txt}
TEST=${TEST:-$D/test.txt}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"

python3 "$HERE/cvt_conll_split.py" "$D/train.txt" -o "$OUT/split" --every "$EVERY"

if [ -z "${CKPT:-}" ]; then
  # A bert-mini shell: a WordPiece tokenizer of the training words and one pretraining step, which
  # --from-scratch then re-initialises at random.
  awk 'NF && $1 != "-DOCSTART-" {printf "%s ", $1} !NF {print ""}' "$D/train.txt" > "$OUT/train-words.txt"
  ptm tokenize train -m wordpiece --vocab-size 8000 "$OUT/train-words.txt" -o "$OUT/tok" --overwrite
  ptm tokenize encode --tokenizer "$OUT/tok" "$OUT/train-words.txt" -o "$OUT/shards" --overwrite --no-progress
  ptm pretrain --arch bert --preset bert-mini --data "$OUT/shards" --tokenizer "$OUT/tok" -o "$OUT/bert-mini" \
      --max-steps 1 --seq-len 128 --batch-size 8 --overwrite --no-progress --threads "$THREADS"
  CKPT=$OUT/bert-mini; INIT=--from-scratch
else
  INIT=
fi

if [ -n "${STEPS:-}" ]; then
  SUP_LENGTH="--max-steps $STEPS"
  CVT_LENGTH="--max-steps $(python3 -c "import math; print(math.ceil($STEPS * (1 + $RATIO)))")"
else
  SUP_LENGTH="--epochs $EPOCHS"; CVT_LENGTH="--epochs $EPOCHS"   # --epochs counts passes over the labelled part
fi
COMMON="--checkpoint $CKPT $INIT --task token-classification --train $OUT/split/labelled.txt --dev $DEV --max-len 128
        --batch-size 32 --lr 1e-3 --seed 0 --threads $THREADS --no-progress --log-every 50 --overwrite"
ptm finetune $COMMON $SUP_LENGTH -o "$OUT/supervised"
ptm finetune $COMMON $CVT_LENGTH -o "$OUT/cvt" --cvt-unlabeled "$OUT/split/unlabeled.txt" --cvt-ratio "$RATIO"

for run in supervised cvt; do
  ptm eval -c "$OUT/$run" --data "$TEST" --json --threads "$THREADS" > "$OUT/$run-test.json"
done
python3 - "$OUT" <<'PY'
import json, sys
for run in ("supervised", "cvt"):
    result = json.load(open(f"{sys.argv[1]}/{run}-test.json"))
    print(f"{run:>10}: test entity F1 {100 * result['f1']:.2f}")
PY
