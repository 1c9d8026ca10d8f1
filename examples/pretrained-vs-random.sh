#!/usr/bin/env bash
# Pretrain a small GPT (ARCH=gpt, the default) or BERT (ARCH=bert) on the Wikipedia sample, then finetune it
# and the same architecture from random initialisation on SST-2, RTE, STS-B, COPA and CoNLL-2003 with one
# budget per task (docs/results.md). ChnSentiCorp gets its own character-level tokenizer and task-adaptive
# pretraining on its training texts.
#
#   bash examples/pretrained-vs-random.sh [OUT_DIR] [PRETRAIN_TIME]     e.g. runs/compare 100m
#   ARCH=bert bash examples/pretrained-vs-random.sh runs/compare-bert 80m
#
# Everything goes under OUT_DIR (default runs/compare). PRETRAIN_TIME bounds each pretraining run. At this
# budget the causal LM pays off and BERT's MLM does not yet: see docs/results.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${DATA:-../shared/data}
OUT=${1:-runs/compare}
TIME=${2:-100m}
THREADS=${THREADS:-1}
ARCH=${ARCH:-gpt}
case "$ARCH" in
  # Every token is a CLM target, so a causal LM learns from context far sooner than a masked LM.
  gpt) EN_STEPS=5000; ZH_STEPS=1100; ZH_WARMUP=100; PRETRAIN="--arch gpt --objective clm --preset gpt-mini --schedule cosine --lr 1e-3" ;;
  bert) EN_STEPS=3000; ZH_STEPS=1500; ZH_WARMUP=200; PRETRAIN="--arch bert --objective mlm --preset bert-mini --lr 1e-3" ;;
  *) echo "ARCH must be gpt or bert, not $ARCH" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
cd "$OUT"
D=$(cd "$OLDPWD" && cd "$D" && pwd)

# English: an 8k WordPiece vocabulary suits a small budget.
ptm tokenize train -m wordpiece --vocab-size 8192 "$D/enwiki-sample/enwiki_sample.txt" -o tok-enwiki-8k --overwrite
ptm tokenize encode --tokenizer tok-enwiki-8k "$D/enwiki-sample/enwiki_sample.txt" -o shards-enwiki-8k --overwrite --no-progress
ptm pretrain $PRETRAIN --data shards-enwiki-8k --tokenizer tok-enwiki-8k -o $ARCH-mini-8k --overwrite \
    --seq-len 128 --batch-size 32 --warmup-steps 300 --max-steps $EN_STEPS --max-time "$TIME" \
    --save-every 250 --keep-last 2 --log-every 50 --precision bf16 --threads "$THREADS" --seed 0 --no-progress

# Chinese: one token per ideograph needs an alphabet of thousands of characters.
ptm tokenize train -m wordpiece --vocab-size 8000 --limit-alphabet 6000 --tsv-column text_a "$D/chinese/train.tsv" -o tok-chnsenti --overwrite
ptm tokenize encode --tokenizer tok-chnsenti --tsv-column text_a "$D/chinese/train.tsv" -o shards-chnsenti --overwrite --no-progress
ptm pretrain $PRETRAIN --data shards-chnsenti --tokenizer tok-chnsenti -o $ARCH-mini-chnsenti --overwrite \
    --seq-len 128 --batch-size 32 --warmup-steps $ZH_WARMUP --max-steps $ZH_STEPS --max-time "$TIME" \
    --save-every 250 --keep-last 2 --log-every 50 --precision bf16 --threads "$THREADS" --seed 0 --no-progress

# 8,000 SST-2 training sentences (seed 0), to fit a CPU budget.
python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" sst2-train-8k.tsv

COMMON="--threads $THREADS --no-progress --log-every 50 --precision bf16 --batch-size 32 --overwrite"
for init in pretrained scratch; do
  FLAG=""; [ "$init" = scratch ] && FLAG="--from-scratch"
  ptm finetune --checkpoint $ARCH-mini-8k $FLAG --task classification --train sst2-train-8k.tsv --dev "$D/sst2/dev.tsv" -o ft/sst2-$init --epochs 3 --lr 1e-4 --max-len 64 $COMMON
  ptm finetune --checkpoint $ARCH-mini-8k $FLAG --task pair-classification --train "$D/rte/train.tsv" --dev "$D/rte/dev.tsv" -o ft/rte-$init --epochs 4 --lr 1e-4 --max-len 128 $COMMON
  ptm finetune --checkpoint $ARCH-mini-chnsenti $FLAG --task classification --train "$D/chinese/train.tsv" --dev "$D/chinese/dev.tsv" -o ft/chnsenti-$init --epochs 3 --lr 1e-4 --max-len 128 $COMMON
  ptm finetune --checkpoint $ARCH-mini-8k $FLAG --task regression --train "$D/stsb/train.tsv" --dev "$D/stsb/dev.tsv" -o ft/stsb-$init --epochs 4 --lr 1e-4 --max-len 128 $COMMON
  ptm finetune --checkpoint $ARCH-mini-8k $FLAG --task multiple-choice --train "$D/copa/train.jsonl" --dev "$D/copa/val.jsonl" -o ft/copa-$init --epochs 8 --lr 1e-4 --max-len 64 $COMMON
  ptm finetune --checkpoint $ARCH-mini-8k $FLAG --task token-classification --train "$D/conll2003/train.txt" --dev "$D/conll2003/valid.txt" -o ft/conll-$init --epochs 2 --lr 3e-4 --max-len 128 $COMMON
  ptm eval -c ft/conll-$init/best --data "$D/conll2003/test.txt" --json --threads "$THREADS" > ft/conll-$init-test.json
done

# ULMFiT's methods, the auxiliary LM and feature-based use, on SST-2 with the pretrained model.
ptm finetune --checkpoint $ARCH-mini-8k -o ft/sst2-features --mode features --lr 1e-3 --task classification --train sst2-train-8k.tsv --dev "$D/sst2/dev.tsv" --epochs 3 --max-len 64 $COMMON
for method in "stlr:--lr 1e-4 --schedule stlr" "discr:--lr 4e-4 --discriminative-lr 2.6" "gradual:--lr 1e-4 --gradual-unfreeze" \
              "ulmfit:--lr 4e-4 --schedule stlr --discriminative-lr 2.6 --gradual-unfreeze" "auxlm:--lr 1e-4 --aux-lm-weight 0.5"; do
  ptm finetune --checkpoint $ARCH-mini-8k -o "ft/sst2-${method%%:*}" ${method#*:} --task classification --train sst2-train-8k.tsv --dev "$D/sst2/dev.tsv" --epochs 3 --max-len 64 $COMMON
done

for r in ft/*/results.json; do printf '%s\t' "$r"; python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['metric'], r['best'][r['metric']] if r['best'] else None)" "$r"; done
