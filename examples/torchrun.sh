#!/usr/bin/env bash
# The same pretraining on 2 processes (gloo on CPU, NCCL on GPUs): per-device batch 16 x 2 = global batch 32.
# A checkpoint resumes at any world size; see docs/distributed.md.
set -euo pipefail
D=${DATA:-../shared/data}
OUT=${1:-runs/torchrun}
mkdir -p "$OUT"
ptm tokenize train -m wordpiece --vocab-size 8192 "$D/enwiki-sample/enwiki_sample.txt" -o "$OUT/tok" --overwrite
torchrun --standalone --nproc-per-node 2 -m ptmcli tokenize encode "$D/enwiki-sample/enwiki_sample.txt" --tokenizer "$OUT/tok" -o "$OUT/shards" --overwrite
torchrun --standalone --nproc-per-node 2 -m ptmcli pretrain --data "$OUT/shards" --preset bert-mini --objective mlm \
    --batch-size 16 --max-steps 200 --save-every 100 --precision bf16 --threads 1 -o "$OUT/bert" --overwrite
# Continue on one process: the global batch of 32 is kept (batch 32 per device).
ptm pretrain --resume "$OUT/bert" --max-steps 300
