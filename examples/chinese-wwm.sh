#!/usr/bin/env bash
# Chinese character masking against whole-word (jieba) masking, as Chinese BERT-wwm compares them
# (docs/results.md, "Chinese: character against whole-word masking"). There is no Chinese corpus in the shared
# data, so both models pretrain task-adaptively on ChnSentiCorp's training reviews with their labels dropped,
# from one character-level WordPiece tokenizer and one set of shards that records jieba's word boundaries;
# `--mask-unit token` masks single characters, `--mask-unit word` every character of a chosen jieba word.
# Each is then finetuned on ChnSentiCorp (SEEDS) and scored on its dev set (the bundled test set has no labels),
# against random init.
#
#   bash examples/chinese-wwm.sh runs/zh
#
# STEPS (1000 pretraining steps of 32 x 128), SEEDS ("0 1"), THREADS (1). Needs jieba (pip install 'ptm[chinese]').
set -euo pipefail
D=$(cd "${DATA:-../shared/data}/chinese" && pwd)
OUT=${1:-runs/zh}
STEPS=${STEPS:-1000}
SEEDS=${SEEDS:-"0 1"}
THREADS=${THREADS:-1}
mkdir -p "$OUT"
cd "$OUT"

[ -d tok ] || ptm tokenize train -m wordpiece --vocab-size 8000 --limit-alphabet 6000 --tsv-column text_a "$D/train.tsv" -o tok
[ -d shards ] || ptm tokenize encode --tokenizer tok --tsv-column text_a --word-segmenter jieba "$D/train.tsv" -o shards --no-progress

for unit in token word; do
  [ -f "pt-$unit/DONE" ] && continue
  ptm pretrain --arch bert --objective mlm --mask-unit "$unit" --preset bert-mini --data shards --tokenizer tok \
      --seq-len 128 --batch-size 32 --lr 5e-4 --warmup-steps $(( STEPS / 10 )) --max-steps "$STEPS" --precision bf16 \
      --threads "$THREADS" --seed 0 --log-every 100 --eval-every "$(( STEPS / 2 ))" --keep-last 1 --no-progress \
      --overwrite -o "pt-$unit" > "pt-$unit.log" 2>&1
  touch "pt-$unit/DONE"
done

FT="--task classification --train $D/train.tsv --dev $D/dev.tsv --text-columns text_a --epochs 3 --lr 1e-4 --max-len 128
    --batch-size 32 --precision bf16 --threads $THREADS --no-progress --log-every 100 --overwrite"
for init in token word random; do
  for seed in $SEEDS; do
    run="ft-$init-s$seed"
    [ -f "$run/DONE" ] && continue
    if [ "$init" = random ]; then src="pt-token --from-scratch"; else src="pt-$init"; fi
    ptm finetune --checkpoint $src $FT --seed "$seed" -o "$run" > "$run.log" 2>&1
    touch "$run/DONE"
  done
done

python3 - <<'PY'
import json, statistics
from pathlib import Path
def evals(run):  # dev accuracy after each epoch
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [100 * line["eval_accuracy"] for line in lines if "eval_accuracy" in line]
print("| initialisation | dev accuracy, epochs 1 / 2 / 3 (mean over seeds) | last epoch, mean ± sd | seeds |")
print("| --- | --- | ---: | ---: |")
for init, label in (("random", "random init"), ("token", "character masking"), ("word", "whole-word masking (jieba)")):
    runs = [evals(r) for r in sorted(Path(".").glob(f"ft-{init}-s*")) if (r / "DONE").exists()]
    if runs:
        per_epoch = " / ".join(f"{statistics.mean(col):.1f}" for col in zip(*runs))
        last = [r[-1] for r in runs]
        sd = f" ± {statistics.stdev(last):.1f}" if len(last) > 1 else ""
        print(f"| {label} | {per_epoch} | {statistics.mean(last):.1f}{sd} | {len(runs)} |")
PY
