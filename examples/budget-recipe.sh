#!/usr/bin/env bash
# Pretraining within a wall-clock budget (docs/results.md, "Pretraining on a time budget"): bert-mini on the
# Wikipedia sample with `--budget`, the small-budget recipe (pre-LN blocks, no biases, no dropout, a higher
# peak rate, the schedule planned over the budget) against today's defaults at the same budget, then SST-2
# (8,000 training sentences, 3 seeds) and CoNLL-2003 finetuning against the same encoder from random init.
#
#   bash examples/budget-recipe.sh [OUT_DIR] [BUDGET]          e.g. runs/cram 30m
#
# Each variant spells out its choices, so --no-budget-recipe keeps --budget from filling in the recipe.
# Two pretraining runs go at once, each pinned to one core with one thread (taskset), so each variant gets
# one core for BUDGET of wall-clock time; then the finetuning runs share the two cores the same way.
# Env: LR (recipe peak rate, 1e-3), SEEDS ("0 1 2"), ONLY (e.g. ONLY="recipe defaults"), DATA (../shared/data).
set -euo pipefail
D=${DATA:-../shared/data}
OUT=${1:-runs/cram}
BUDGET=${2:-30m}
LR=${LR:-1e-3}
SEEDS=${SEEDS:-0 1 2}
ONLY=${ONLY:-}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
cd "$OUT"
D=$(cd "$OLDPWD" && cd "$D" && pwd)

RECIPE="--norm pre --no-bias --hidden-dropout 0 --attention-dropout 0 --lr $LR"
# name | flags. Each ablation switches one recipe choice back to today's default.
cat > variants.txt <<EOF
recipe|$RECIPE
defaults|--lr 1e-4
post-ln|--norm post --no-bias --hidden-dropout 0 --attention-dropout 0 --lr $LR
bias|--norm pre --hidden-dropout 0 --attention-dropout 0 --lr $LR
dropout|--norm pre --no-bias --lr $LR
low-lr|--norm pre --no-bias --hidden-dropout 0 --attention-dropout 0 --lr 1e-4
mask-0.3|$RECIPE --mask-prob 0.3
EOF
if [ -n "$ONLY" ]; then
  for name in $ONLY; do grep "^$name|" variants.txt; done > variants.only && mv variants.only variants.txt
fi

[ -d tok-enwiki-8k ] || ptm tokenize train -m wordpiece --vocab-size 8192 "$D/enwiki-sample/enwiki_sample.txt" -o tok-enwiki-8k
[ -d shards-enwiki-8k ] || ptm tokenize encode --tokenizer tok-enwiki-8k "$D/enwiki-sample/enwiki_sample.txt" -o shards-enwiki-8k --no-progress
[ -d shards-wt2-valid-8k ] || ptm tokenize encode --tokenizer tok-enwiki-8k "$D/wikitext-2-raw/wiki.valid.raw" -o shards-wt2-valid-8k --no-progress
[ -f sst2-train-8k.tsv ] || python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" sst2-train-8k.tsv

PT="--data shards-enwiki-8k --tokenizer tok-enwiki-8k --eval-data shards-wt2-valid-8k --arch bert --objective mlm
    --preset bert-mini --seq-len 128 --batch-size 32 --precision bf16 --threads 1 --seed 0 --no-progress --overwrite
    --budget $BUDGET --eval-every 500 --eval-batches 40 --log-every 50 --keep-last 1 --no-budget-recipe"

pretrain() {  # core, name, flags
  [ -f "pt-$2/DONE" ] && return
  taskset -c "$1" ptm pretrain $PT $3 -o "pt-$2" > "pt-$2.log" 2>&1 && touch "pt-$2/DONE"
}

# Pretraining, two variants at a time.
core=0
pids=()
while IFS='|' read -r name flags <&3; do
  pretrain "$core" "$name" "$flags" &
  pids+=($!)
  core=$((1 - core))
  if [ ${#pids[@]} -eq 2 ]; then wait "${pids[@]}"; pids=(); fi
done 3< variants.txt
wait

FT="--threads 1 --no-progress --log-every 100 --precision bf16 --batch-size 32 --overwrite"
finetune() {  # core, checkpoint, name, extra flags
  local core=$1 ckpt=$2 name=$3 extra=$4 seed
  mkdir -p ft
  for seed in $SEEDS; do
    [ -f "ft/$name-sst2-s$seed/DONE" ] || { taskset -c "$core" ptm finetune --checkpoint "$ckpt" $extra --task classification \
        --train sst2-train-8k.tsv --dev "$D/sst2/dev.tsv" -o "ft/$name-sst2-s$seed" --epochs 2 --lr 1e-4 --max-len 64 \
        --seed "$seed" $FT > "ft/$name-sst2-s$seed.log" 2>&1 && touch "ft/$name-sst2-s$seed/DONE"; }
  done
  [ -f "ft/$name-conll-s0/DONE" ] || { taskset -c "$core" ptm finetune --checkpoint "$ckpt" $extra --task token-classification \
      --train "$D/conll2003/train.txt" --dev "$D/conll2003/valid.txt" -o "ft/$name-conll-s0" --epochs 1 --lr 3e-4 \
      --max-len 128 --seed 0 $FT > "ft/$name-conll-s0.log" 2>&1 \
      && taskset -c "$core" ptm eval -c "ft/$name-conll-s0/best" --data "$D/conll2003/test.txt" --json --threads 1 \
          > "ft/$name-conll-s0/test.json" && touch "ft/$name-conll-s0/DONE"; }
}

# Two lanes, one per core: the recipe's encoder from random initialisation (its shape from the pretrained
# checkpoint) and every pretrained variant, dealt out in turn.
jobs=("pt-recipe|random-recipe|--from-scratch")
while IFS='|' read -r name flags <&3; do jobs+=("pt-$name|$name|"); done 3< variants.txt
lane() {
  local core=$1 i=$1
  while [ "$i" -lt "${#jobs[@]}" ]; do
    IFS='|' read -r ckpt name extra <<< "${jobs[$i]}"
    finetune "$core" "$ckpt" "$name" "$extra"
    i=$((i + 2))
  done
}
lane 0 & lane 1 & wait
python3 "$HERE/budget_table.py" .
echo "done: pretraining logs pt-*.log, finetuning runs ft/"
