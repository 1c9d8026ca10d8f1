#!/usr/bin/env bash
# Multi30k English->German with each sequence-to-sequence pretraining objective against random initialisation
# (docs/results.md, "Multi30k: pretraining objectives against random init").
#
# One byte-level tokenizer (8,000 ids, RoBERTa's special tokens plus T5-style sentinels) for both languages.
# Pretraining text: Multi30k's own English and German training sentences, one sentence per document. Every
# model pretrains for PT_STEPS steps of 32 x 64 tokens, then finetunes en->de for FT_STEPS steps of 64 pairs,
# and is scored on test_2016_flickr with 4 beams (BLEU and chrF, sacrebleu):
#   bart-tiny (2+2 layers, 128 wide): denoise (BART), mass (MASS), span-corruption (T5's objective), random init;
#   T5's own architecture at the same shape (t5-tiny widened to 128, 8 heads of 16, feed-forward 512):
#   span-corruption, random init;
#   a 4-layer, 128-wide BERT finetuned as UniLM's seq2seq LM: pretrained with unilm, with plain mlm, random init.
# All runs are step-based, so a busy machine changes only how long they take.
#
#   bash examples/multi30k-objectives.sh OUT_DIR CORE [NICE]
#
# Several lanes (one per core, e.g. `... runs/m30k 0 & ... runs/m30k 1 &`) share the job list through lock
# directories under OUT_DIR/locks; each job runs once. Env: PT_STEPS (1500), FT_STEPS (600), JOBS (all).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(cd "${DATA:-$HERE/../../shared/data}/multi30k" && pwd)
OUT=${1:?OUT_DIR}
CORE=${2:?CORE}
NICE=${3:-0}
PT_STEPS=${PT_STEPS:-1500}
FT_STEPS=${FT_STEPS:-600}
JOBS=${JOBS:-"pt-denoise pt-mass pt-span-corruption pt-unilm pt-mlm pt-t5-span-corruption ft-random ft-denoise ft-mass
  ft-span-corruption ft-unilm ft-mlm ft-bert-random ft-t5-span-corruption ft-t5-random"}
mkdir -p "$OUT/locks"
cd "$OUT"
run() { taskset -c "$CORE" nice -n "$NICE" ptm "$@"; }

if mkdir locks/data 2>/dev/null; then
  run tokenize train "$D/train.en" "$D/train.de" -o tok --model bytelevel --vocab-size 8000 --special-tokens roberta-sentinels
  run tokenize encode "$D/train.en" "$D/train.de" --tokenizer tok -o shards --no-progress --document-boundary line
  run tokenize encode "$D/val.en" "$D/val.de" --tokenizer tok -o shards-val --no-progress --document-boundary line
  touch locks/data.done
fi
while [ ! -e locks/data.done ]; do sleep 10; done

PT="--data shards --tokenizer tok --eval-data shards-val --seq-len 64 --batch-size 32 --max-steps $PT_STEPS --lr 1e-3
    --warmup-steps 150 --eval-every 500 --eval-batches 20 --log-every 50 --keep-last 1 --threads 1 --seed 0 --no-progress
    --overwrite"
pretrain() {  # objective
  case $1 in
    unilm|mlm) run pretrain --arch bert --preset bert-tiny --num-layers 4 --objective "$1" $PT -o "pt-$1" ;;
    t5-*) run pretrain --arch t5 --preset t5-tiny --hidden-size 128 --num-heads 8 --intermediate-size 512 \
            --objective "${1#t5-}" $PT -o "pt-$1" ;;
    *) run pretrain --arch bart --preset bart-tiny --objective "$1" $PT -o "pt-$1" ;;
  esac
}
finetune() {  # name, checkpoint, extra flags
  run finetune --task seq2seq --checkpoint "$2" $3 --source-file "$D/train.en" --target-file "$D/train.de" \
    --dev-source-file "$D/val.en" --dev-target-file "$D/val.de" -o "ft-$1" --max-len 64 --batch-size 64 --lr 1e-3 \
    --label-smoothing 0.1 --max-steps "$FT_STEPS" --eval-every 300 --precision bf16 --threads 1 --seed 0 --no-progress \
    --overwrite \
  && run eval -c "ft-$1" --source-file "$D/test_2016_flickr.en" --target-file "$D/test_2016_flickr.de" --num-beams 4 \
    --predictions "ft-$1/test.hyp.de" --json --threads 1 > "ft-$1/test.json"
}
dep() { case $1 in ft-random) echo pt-denoise;; ft-bert-random) echo pt-unilm;; ft-t5-random) echo pt-t5-span-corruption;; ft-*) echo "pt-${1#ft-}";; *) echo "";; esac; }

while true; do
  took=""
  for job in $JOBS; do
    [ -e "locks/$job.done" ] && continue
    d=$(dep "$job")
    [ -n "$d" ] && [ ! -e "locks/$d.done" ] && continue
    mkdir "locks/$job" 2>/dev/null || continue
    took=$job; break
  done
  if [ -z "$took" ]; then
    left=$(for j in $JOBS; do [ -e "locks/$j.done" ] || echo "$j"; done)
    [ -z "$left" ] && break
    sleep 30; continue
  fi
  echo "$(date +%T) core $CORE start $took"
  case $took in
    pt-*) pretrain "${took#pt-}" > "$took.log" 2>&1 ;;
    ft-random) finetune random pt-denoise --from-scratch > "$took.log" 2>&1 ;;
    ft-bert-random) finetune bert-random pt-unilm --from-scratch > "$took.log" 2>&1 ;;
    ft-t5-random) finetune t5-random pt-t5-span-corruption --from-scratch > "$took.log" 2>&1 ;;
    ft-*) finetune "${took#ft-}" "pt-${took#ft-}" "" > "$took.log" 2>&1 ;;
  esac && touch "locks/$took.done"
  echo "$(date +%T) core $CORE end $took"
done

python3 - <<'PY'
import json
from pathlib import Path
rows = [("bart-tiny", "random init", "ft-random"), ("bart-tiny", "denoise (BART)", "ft-denoise"),
        ("bart-tiny", "mass (MASS)", "ft-mass"), ("bart-tiny", "span-corruption (T5)", "ft-span-corruption"),
        ("t5 2x128", "random init", "ft-t5-random"), ("t5 2x128", "span-corruption (T5)", "ft-t5-span-corruption"),
        ("bert 4x128 as UniLM", "random init", "ft-bert-random"), ("bert 4x128 as UniLM", "unilm", "ft-unilm"),
        ("bert 4x128 as UniLM", "mlm", "ft-mlm")]
print("| model | pretraining | test BLEU | test chrF |")
print("| --- | --- | ---: | ---: |")
for model, objective, run in rows:
    path = Path(run) / "test.json"
    if path.exists():
        r = json.loads(path.read_text())
        print(f"| {model} | {objective} | {r['bleu']:.1f} | {r['chrf']:.1f} |")
PY
