#!/usr/bin/env bash
# bart-mini pretrained on the Wikipedia sample plus Multi30k's English (BART's denoising by default; T5's span
# corruption or MASS through MODELS, at the same budget), then finetuned English->German on Multi30k, against
# the same bart-mini from random initialisation at the same finetuning budget (docs/results.md, "bart-mini
# pretrained on Wikipedia + Multi30k English").
#
# One byte-level tokenizer (8,000 ids, RoBERTa's special tokens plus sentinels) trained on all three texts
# (Wikipedia, Multi30k English and German), so the decoder's German has its own pieces. Pretraining text: the
# Wikipedia sample (its articles) and each Multi30k English training sentence as a document of
# its own. Finetuning and scoring as examples/multi30k-objectives.sh: FT_STEPS steps of 64 pairs, label
# smoothing 0.1, test_2016_flickr with 4 beams (sacrebleu BLEU and chrF). Every run is step-based.
#
#   bash examples/bart-mini-multi30k.sh OUT_DIR            e.g. runs/bart-mini
# Env: DATA (../shared/data), PT_STEPS (2000), FT_STEPS (600), CORE (0), SEEDS ("0"),
#      MODELS ("random denoise": "random" is the from-scratch baseline, any other word a pretraining
#      objective of bart: denoise, span-corruption, mass). Two copies with different MODELS can share OUT_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(cd "${DATA:-$HERE/../../shared/data}" && pwd)
M=$D/multi30k
OUT=${1:-runs/bart-mini}
PT_STEPS=${PT_STEPS:-2000}
FT_STEPS=${FT_STEPS:-600}
CORE=${CORE:-0}
SEEDS=${SEEDS:-0}
MODELS=${MODELS:-random denoise}
mkdir -p "$OUT"
cd "$OUT"
run() { taskset -c "$CORE" ptm "$@"; }

[ -d tok ] || run tokenize train "$D/enwiki-sample/enwiki_sample.txt" "$M/train.en" "$M/train.de" -o tok \
    --model bytelevel --vocab-size 8000 --special-tokens roberta-sentinels
# The sample is WikiExtractor output (its <doc> elements are the documents); each Multi30k line is one.
[ -d shards ] || run tokenize encode "$D/enwiki-sample/enwiki_sample.txt" "$M/train.en" --tokenizer tok -o shards \
    --no-progress --workers 1 --document-boundary line
[ -d shards-val ] || run tokenize encode "$M/val.en" --tokenizer tok -o shards-val --no-progress --workers 1 \
    --document-boundary line

pretrain() {  # objective
  [ -f "pt-$1/DONE" ] && return 0
  run pretrain --arch bart --preset bart-mini --objective "$1" --data shards \
    --tokenizer tok --eval-data shards-val --seq-len 128 --batch-size 32 --max-steps "$PT_STEPS" --lr 5e-4 \
    --warmup-steps $(( PT_STEPS / 10 )) --precision bf16 --eval-every 500 --eval-batches 20 --log-every 50 \
    --keep-last 1 --threads 1 --seed 0 --no-progress --overwrite -o "pt-$1" > "pt-$1.log" 2>&1
  touch "pt-$1/DONE"
}

finetune() {  # name, seed, checkpoint flags
  local name=$1 seed=$2; shift 2
  [ -f "ft-$name-s$seed/DONE" ] && return 0
  run finetune --task seq2seq "$@" --source-file "$M/train.en" --target-file "$M/train.de" \
    --dev-source-file "$M/val.en" --dev-target-file "$M/val.de" -o "ft-$name-s$seed" --max-len 64 --batch-size 64 \
    --lr 5e-4 --label-smoothing 0.1 --max-steps "$FT_STEPS" --eval-every 300 --precision bf16 --threads 1 \
    --seed "$seed" --no-progress --overwrite > "ft-$name-s$seed.log" 2>&1
  run eval -c "ft-$name-s$seed" --source-file "$M/test_2016_flickr.en" --target-file "$M/test_2016_flickr.de" \
    --num-beams 4 --predictions "ft-$name-s$seed/test.hyp.de" --json --threads 1 > "ft-$name-s$seed/test.json"
  touch "ft-$name-s$seed/DONE"
}
for model in $MODELS; do
  [ "$model" = random ] || pretrain "$model"
done
for seed in $SEEDS; do
  for model in $MODELS; do
    if [ "$model" = random ]; then
      # The same architecture and tokenizer from scratch: any finished pretraining's config serves.
      base=$(for done in pt-*/DONE; do [ -f "$done" ] && dirname "$done" && break; done)
      [ -n "$base" ] || { echo "random init needs one finished pretraining in $OUT for its config" >&2; exit 2; }
      finetune random "$seed" --checkpoint "$base" --from-scratch
    else
      finetune "$model" "$seed" --checkpoint "pt-$model"
    fi
  done
done

python3 - "$SEEDS" "$MODELS" <<'PY'
import json, sys
from pathlib import Path
print("| bart-mini | seed | test BLEU | test chrF |")
print("| --- | ---: | ---: | ---: |")
for name in sys.argv[2].split():
    label = "random init" if name == "random" else f"{name} on Wikipedia + Multi30k English"
    for seed in sys.argv[1].split():
        result = json.loads((Path(f"ft-{name}-s{seed}") / "test.json").read_text())
        print(f"| {label} | {seed} | {result['bleu']:.1f} | {result['chrf']:.1f} |")
PY
