#!/usr/bin/env bash
# The family tree on two tasks (docs/results.md, "The family tree on SST-2 and CoNLL-2003"): static GloVe vectors
# under a BiLSTM, [GloVe; CoVe] features, ELMo features and a finetuned BERT, every one pretrained by ptm on the
# Wikipedia sample (CoVe's encoder on Multi30k English->German over those GloVe vectors, as CoVe is defined).
#
#   bash examples/family-tree.sh [OUT_DIR]                                  e.g. runs/tree
#   BERT=runs/cram/pt-mask-0.3 bash examples/family-tree.sh runs/tree         reuse a pretrained bert-mini
#
# SST-2: the same 8,000 training sentences as the other SST-2 tables, the 872 dev sentences. CoNLL-2003: all of
# train, best epoch on valid, F1 on test. Each family gets its usual head: a BiLSTM over frozen static vectors;
# the frozen contextual features (a learned scalar mix) for CoVe and ELMo, under an MLP and under the same
# BiLSTM as the static vectors (--encoder bilstm, the papers' recipe); BERT finetuned whole
# (examples/budget-recipe.sh's rates), and from random init. SST-2 5 epochs, CoNLL 3, for every row. Every
# run is step-based, so a busy machine changes only the wall time.
# Env: DATA (../shared/data), BERT (a pretrained bert checkpoint; default: pretrain one with --budget 30m),
# ELMO_STEPS (500: about 30 minutes of one core for elmo-small).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=${DATA:-../shared/data}
OUT=${1:-runs/tree}
ELMO_STEPS=${ELMO_STEPS:-500}
BERT=${BERT:-}
[ -n "$BERT" ] && BERT=$(cd "$(dirname "$BERT")" && pwd)/$(basename "$BERT")
mkdir -p "$OUT"
cd "$OUT"
D=$(cd "$OLDPWD" && cd "$D" && pwd)
T=$D/enwiki-sample/enwiki_sample.txt
M=$D/multi30k
FT="--threads 1 --no-progress --log-every 100 --overwrite --seed 0"
SST="--task classification --train sst2-train-8k.tsv --dev $D/sst2/dev.tsv"
CONLL="--task token-classification --train $D/conll2003/train.txt --dev $D/conll2003/valid.txt"
conll_test() { ptm eval -c "$1/best" --data "$D/conll2003/test.txt" --json --threads 1 > "$1/test.json"; }

[ -f sst2-train-8k.tsv ] || python3 "$HERE/sst2_subset.py" "$D/sst2/train.tsv" sst2-train-8k.tsv

# Static: a word-level tokenizer and GloVe on the Wikipedia sample.
[ -d tok-words ] || ptm tokenize train "$T" --model word --min-count 5 --max-vocab 50000 -o tok-words
[ -d shards-words ] || ptm tokenize encode "$T" --tokenizer tok-words -o shards-words --no-progress
[ -d glove ] || ptm pretrain --arch glove --data shards-words -o glove --dim 100 --epochs 15 --workers 1
G=$(ls -d glove/checkpoints/step-* | tail -1)
[ -f glove-sst2/DONE ] || { ptm finetune --checkpoint "$G" $SST --epochs 5 $FT -o glove-sst2 > glove-sst2.log 2>&1 && touch glove-sst2/DONE; }
[ -f glove-conll/DONE ] || { ptm finetune --checkpoint "$G" $CONLL --epochs 3 $FT -o glove-conll > glove-conll.log 2>&1 \
    && conll_test glove-conll && touch glove-conll/DONE; }

# CoVe: the biLSTM encoder of an English->German translation model over those GloVe vectors.
[ -d tok-de ] || ptm tokenize train "$M/train.de" --model wordpiece --vocab-size 8000 --special-tokens bert -o tok-de
for split in train:train val:val test:test_2016_flickr; do
  name=${split%%:*}; file=${split#*:}
  [ -d "$name-pairs" ] && continue
  python3 -c "import json, sys
for a, b in zip(open(sys.argv[1], encoding='utf-8').read().splitlines(), open(sys.argv[2], encoding='utf-8').read().splitlines()):
    print(json.dumps({'source': a, 'target': b}, ensure_ascii=False))" "$M/$file.en" "$M/$file.de" > "$name.jsonl"
  ptm tokenize encode "$name.jsonl" --pairs --tokenizer "$G" --target-tokenizer tok-de -o "$name-pairs" --no-progress
done
[ -f cove/DONE ] || { ptm pretrain --arch cove --objective translation --preset cove-small --init-vectors "$G" \
    --data train-pairs --eval-data test-pairs --eval-rows 0 --batch-size 64 --seq-len 50 --lr 2e-3 --warmup-steps 50 \
    --max-steps 1000 --eval-every 500 --eval-batches 16 --log-every 50 --threads 1 --seed 0 --no-progress \
    --overwrite -o cove > cove.log 2>&1 && touch cove/DONE; }
[ -f cove-sst2/DONE ] || { ptm finetune --checkpoint cove --mode features $SST --epochs 5 --lr 1e-3 $FT -o cove-sst2 \
    > cove-sst2.log 2>&1 && touch cove-sst2/DONE; }
[ -f cove-conll/DONE ] || { ptm finetune --checkpoint cove --mode features $CONLL --epochs 3 --lr 1e-3 $FT -o cove-conll \
    > cove-conll.log 2>&1 && conll_test cove-conll && touch cove-conll/DONE; }
# The same frozen features under the GloVe row's BiLSTM, as the CoVe and ELMo papers used them (--encoder bilstm).
[ -f cove-bilstm-sst2/DONE ] || { ptm finetune --checkpoint cove --mode features --encoder bilstm $SST --epochs 5 --lr 1e-3 \
    $FT -o cove-bilstm-sst2 > cove-bilstm-sst2.log 2>&1 && touch cove-bilstm-sst2/DONE; }
[ -f cove-bilstm-conll/DONE ] || { ptm finetune --checkpoint cove --mode features --encoder bilstm $CONLL --epochs 3 --lr 1e-3 \
    $FT -o cove-bilstm-conll > cove-bilstm-conll.log 2>&1 && conll_test cove-bilstm-conll && touch cove-bilstm-conll/DONE; }

# ELMo and BERT share an 8k word-piece vocabulary of the Wikipedia sample.
[ -d tok-8k ] || ptm tokenize train -m wordpiece --vocab-size 8192 "$T" -o tok-8k
[ -d shards-8k ] || ptm tokenize encode --tokenizer tok-8k "$T" -o shards-8k --no-progress
[ -d shards-wt2-valid-8k ] || ptm tokenize encode --tokenizer tok-8k "$D/wikitext-2-raw/wiki.valid.raw" -o shards-wt2-valid-8k --no-progress
[ -f elmo/DONE ] || { ptm pretrain --arch elmo --objective bilm --preset elmo-small --data shards-8k --tokenizer tok-8k \
    --eval-data shards-wt2-valid-8k --seq-len 128 --batch-size 32 --lr 1e-3 --warmup-steps 50 --max-steps "$ELMO_STEPS" \
    --precision bf16 --threads 1 --seed 0 --eval-every 250 --eval-batches 10 --log-every 25 --keep-last 1 \
    --no-progress --overwrite -o elmo > elmo.log 2>&1 && touch elmo/DONE; }
[ -f elmo-sst2/DONE ] || { ptm finetune --checkpoint elmo --mode features $SST --epochs 5 --lr 1e-3 --precision bf16 $FT \
    -o elmo-sst2 > elmo-sst2.log 2>&1 && touch elmo-sst2/DONE; }
[ -f elmo-conll/DONE ] || { ptm finetune --checkpoint elmo --mode features $CONLL --epochs 3 --lr 1e-3 --precision bf16 $FT \
    -o elmo-conll > elmo-conll.log 2>&1 && conll_test elmo-conll && touch elmo-conll/DONE; }
[ -f elmo-bilstm-sst2/DONE ] || { ptm finetune --checkpoint elmo --mode features --encoder bilstm $SST --epochs 5 --lr 1e-3 \
    --precision bf16 $FT -o elmo-bilstm-sst2 > elmo-bilstm-sst2.log 2>&1 && touch elmo-bilstm-sst2/DONE; }
[ -f elmo-bilstm-conll/DONE ] || { ptm finetune --checkpoint elmo --mode features --encoder bilstm $CONLL --epochs 3 --lr 1e-3 \
    --precision bf16 $FT -o elmo-bilstm-conll > elmo-bilstm-conll.log 2>&1 && conll_test elmo-bilstm-conll \
    && touch elmo-bilstm-conll/DONE; }

if [ -z "$BERT" ]; then
  [ -f bert/DONE ] || { ptm pretrain --arch bert --objective mlm --preset bert-mini --budget 30m --data shards-8k \
      --tokenizer tok-8k --eval-data shards-wt2-valid-8k --seq-len 128 --batch-size 32 --precision bf16 --threads 1 \
      --seed 0 --no-progress --overwrite --eval-every 500 --eval-batches 40 --log-every 50 --keep-last 1 -o bert \
      > bert.log 2>&1 && touch bert/DONE; }
  BERT=bert
fi
BFT="--precision bf16 --batch-size 32 $FT"
# The same epochs as the other rows; the encoder from random initialisation as the floor.
for init in bert random; do
  src="$BERT"; [ "$init" = random ] && src="$BERT --from-scratch"
  [ -f $init-sst2/DONE ] || { ptm finetune --checkpoint $src $SST --epochs 5 --lr 1e-4 --max-len 64 $BFT -o $init-sst2 \
      > $init-sst2.log 2>&1 && touch $init-sst2/DONE; }
  [ -f $init-conll/DONE ] || { ptm finetune --checkpoint $src $CONLL --epochs 3 --lr 3e-4 --max-len 128 $BFT -o $init-conll \
      > $init-conll.log 2>&1 && conll_test $init-conll && touch $init-conll/DONE; }
done

python3 - <<'PY'
import json
from pathlib import Path
def best(run, key):
    lines = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return max(line[key] for line in lines if key in line)
print("| family | SST-2 dev acc | CoNLL-2003 test F1 (dev F1) |")
print("| --- | ---: | ---: |")
for name, label in (("glove", "GloVe + BiLSTM"), ("cove", "[GloVe; CoVe] features + MLP"),
                    ("cove-bilstm", "[GloVe; CoVe] features + BiLSTM"), ("elmo", "ELMo features + MLP"),
                    ("elmo-bilstm", "ELMo features + BiLSTM"),
                    ("bert", "BERT, finetuned"), ("random", "the same BERT from random init, finetuned")):
    sst = f"{100 * best(f'{name}-sst2', 'eval_accuracy'):.1f}" if Path(f"{name}-sst2/DONE").exists() else "–"
    conll = "–"
    if Path(f"{name}-conll/DONE").exists():
        test = json.loads(Path(f"{name}-conll/test.json").read_text())["f1"]
        conll = f"{100 * test:.1f} ({100 * best(f'{name}-conll', 'eval_f1'):.1f})"
    print(f"| {label} | {sst} | {conll} |")
PY
