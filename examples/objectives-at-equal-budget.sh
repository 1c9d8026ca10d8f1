#!/usr/bin/env bash
# Encoder pretraining objectives at one equal compute budget (docs/results.md): BERT MLM, MLM+NSP, n-gram
# masking, SpanBERT span and span+SBO, ALBERT MLM+SOP, ELECTRA RTD, UniLM and XLNet's permutation LM, each
# pretrained on the Wikipedia sample for BUDGET minutes of one CPU core, then finetuned with identical settings on SST-2, CoNLL-2003, RTE
# and MRPC, against the same encoder from random initialisation.
#
#   bash examples/objectives-at-equal-budget.sh [OUT_DIR] [BUDGET_MINUTES]     e.g. runs/budget 6
#
# The budget is compute, not wall-clock: each objective's seconds per step are measured first (40 steps,
# alone on core 1), and its run gets BUDGET minutes' worth of those steps. A machine that is busy later then
# slows every run without changing what each one is given. Pretraining runs on core 1 and finetuning on
# core 0, so the finetuning of one model overlaps the pretraining of the next.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${DATA:-../shared/data}
OUT=${1:-runs/budget}
BUDGET=${2:-6}
SEEDS=${SEEDS:-0}
LR=${LR:-1e-3}          # peak learning rate of every pretraining run
ONLY=${ONLY:-}          # e.g. ONLY="mlm electra": run only these variants
mkdir -p "$OUT"
cd "$OUT"
D=$(cd "$OLDPWD" && cd "$D" && pwd)

# name | flags. Every discriminator/encoder is L4 H256 A4 (ELECTRA's generator is a quarter as wide).
cat > variants.txt <<'EOF'
mlm|--arch bert --objective mlm --preset bert-mini
electra|--arch electra --objective rtd --preset electra-mini
mlm+nsp|--arch bert --objective mlm+nsp --preset bert-mini
span+sbo|--arch bert --objective span+sbo --preset bert-mini
span|--arch bert --objective span --preset bert-mini
ngram|--arch bert --objective mlm --ngram-mask 3 --preset bert-mini
albert-sop|--arch albert --objective mlm+sop --preset albert-mini
unilm|--arch bert --objective unilm --preset bert-mini
xlnet-plm|--arch xlnet --objective plm --preset xlnet-mini
EOF
# variants.txt keeps every variant (examples/objectives_table.py reads it); this run trains those in $RUN_LIST.
RUN_LIST=variants.txt
if [ -n "$ONLY" ]; then
  for name in $ONLY; do grep "^$name|" variants.txt; done > variants.only
  RUN_LIST=variants.only
fi

[ -d tok-enwiki-8k ] || ptm tokenize train -m wordpiece --vocab-size 8192 "$D/enwiki-sample/enwiki_sample.txt" -o tok-enwiki-8k
[ -d shards-enwiki-8k ] || ptm tokenize encode --tokenizer tok-enwiki-8k "$D/enwiki-sample/enwiki_sample.txt" -o shards-enwiki-8k --no-progress
[ -d shards-wt2-valid-8k ] || ptm tokenize encode --tokenizer tok-enwiki-8k "$D/wikitext-2-raw/wiki.valid.raw" -o shards-wt2-valid-8k --no-progress
python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" sst2-train-8k.tsv

COMMON_PT="--data shards-enwiki-8k --tokenizer tok-enwiki-8k --seq-len 128 --batch-size 32 --lr $LR --precision bf16 --threads 1 --seed 0 --no-progress --overwrite"

# Seconds per step of each objective, measured alone (once per variant: later variants are added to the file).
touch calibration.txt
while IFS='|' read -r name flags <&3; do
  grep -q "^$name " calibration.txt && continue
  log=$(taskset -c 1 ptm pretrain $flags $COMMON_PT -o "calibrate-$name" --warmup-steps 5 --max-steps 40 --log-every 10 --eval-every 1000 2>&1)
  t10=$(echo "$log" | grep '^step 10 |' | sed 's/.*elapsed_s //')
  t40=$(echo "$log" | grep '^step 40 |' | grep -v eval_ | sed 's/.*elapsed_s //')
  echo "$name $(python3 -c "print(round(($t40 - $t10) / 30, 4))")" >> calibration.txt
done 3< "$RUN_LIST"

pretrain_all() {
  while IFS='|' read -r name flags <&3; do
    [ -f "pt-$name/DONE" ] && continue
    step_s=$(awk -v n="$name" '$1 == n {print $2}' calibration.txt)
    steps=$(python3 -c "print(int($BUDGET * 60 / $step_s))")
    warmup=$(( steps / 10 ))
    taskset -c 1 ptm pretrain $flags $COMMON_PT -o "pt-$name" --eval-data shards-wt2-valid-8k \
        --max-steps "$steps" --warmup-steps "$warmup" --eval-every "$(( steps / 4 ))" --eval-batches 20 \
        --log-every 50 --save-every 500 --keep-last 1 > "pt-$name.log" 2>&1
    touch "pt-$name/DONE"
  done 3< "$RUN_LIST"
}

FT_COMMON="--threads 1 --no-progress --log-every 100 --precision bf16 --batch-size 32 --overwrite"
finetune_one() {  # checkpoint, name, extra flags
  local ckpt=$1 name=$2 extra=$3 seed
  for seed in $SEEDS; do
    [ -f "ft/$name-sst2-s$seed/DONE" ] || { taskset -c 0 ptm finetune --checkpoint "$ckpt" $extra --task classification \
        --train sst2-train-8k.tsv --dev "$D/sst2/dev.tsv" -o "ft/$name-sst2-s$seed" --epochs 2 --lr 1e-4 --max-len 64 \
        --seed "$seed" $FT_COMMON > "ft/$name-sst2-s$seed.log" 2>&1 && touch "ft/$name-sst2-s$seed/DONE"; }
    [ -f "ft/$name-rte-s$seed/DONE" ] || { taskset -c 0 ptm finetune --checkpoint "$ckpt" $extra --task pair-classification \
        --train "$D/rte/train.tsv" --dev "$D/rte/dev.tsv" -o "ft/$name-rte-s$seed" --epochs 3 --lr 1e-4 --max-len 128 \
        --seed "$seed" $FT_COMMON > "ft/$name-rte-s$seed.log" 2>&1 && touch "ft/$name-rte-s$seed/DONE"; }
    [ -f "ft/$name-mrpc-s$seed/DONE" ] || { taskset -c 0 ptm finetune --checkpoint "$ckpt" $extra --task pair-classification \
        --train "$D/mrpc/train.tsv" --dev "$D/mrpc/dev.tsv" -o "ft/$name-mrpc-s$seed" --epochs 3 --lr 1e-4 --max-len 128 \
        --seed "$seed" $FT_COMMON > "ft/$name-mrpc-s$seed.log" 2>&1 && touch "ft/$name-mrpc-s$seed/DONE"; }
    [ -f "ft/$name-conll-s$seed/DONE" ] || { taskset -c 0 ptm finetune --checkpoint "$ckpt" $extra --task token-classification \
        --train "$D/conll2003/train.txt" --dev "$D/conll2003/valid.txt" -o "ft/$name-conll-s$seed" --epochs 1 --lr 3e-4 \
        --max-len 128 --seed "$seed" $FT_COMMON > "ft/$name-conll-s$seed.log" 2>&1 \
        && taskset -c 0 ptm eval -c "ft/$name-conll-s$seed/best" --data "$D/conll2003/test.txt" --json --threads 1 \
            > "ft/$name-conll-s$seed/test.json" && touch "ft/$name-conll-s$seed/DONE"; }
  done
}

finetune_all() {
  mkdir -p ft
  # Random initialisation of the L4 H256 encoder (the calibration checkpoint supplies its shape), while the
  # first model pretrains.
  finetune_one calibrate-mlm random --from-scratch
  while IFS='|' read -r name flags <&3; do
    while [ ! -f "pt-$name/DONE" ]; do sleep 20; done
    finetune_one "pt-$name" "$name" ""
  done 3< "$RUN_LIST"
}

pretrain_all &
finetune_all
wait
echo "done: pretraining logs pt-*.log, finetuning runs ft/"
