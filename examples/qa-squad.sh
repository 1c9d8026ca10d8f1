#!/usr/bin/env bash
# Extractive QA on SQuAD v1.1 (docs/finetune.md, "Extractive question answering"): the bundled dev set split
# by article (the first 38 articles train, the last 10 test), a pretrained encoder finetuned on the training
# part against the same encoder from random initialisation, both scored (exact match, F1) on the test part.
#
#   PRETRAINED=runs/cram/pt-mask-0.3 bash examples/qa-squad.sh runs/qa
#
# PRETRAINED (required). EPOCHS (2), LR (3e-4), MAX_LEN (256), STRIDE (128), THREADS (1).
set -euo pipefail
D=$(cd "${DATA:-../shared/data}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-runs/qa}
PRETRAINED=${PRETRAINED:?set PRETRAINED to a pretrained encoder checkpoint}
EPOCHS=${EPOCHS:-2}
LR=${LR:-3e-4}
MAX_LEN=${MAX_LEN:-256}
STRIDE=${STRIDE:-128}
THREADS=${THREADS:-1}
mkdir -p "$OUT"
[ -f "$OUT/split/test.json" ] || python3 "$HERE/squad_split.py" "$D/squad-v1.1/dev-v1.1.json" -o "$OUT/split" --test-articles 10

FT="--task qa --train $OUT/split/train.json --max-len $MAX_LEN --doc-stride $STRIDE --batch-size 32 --epochs $EPOCHS
    --lr $LR --precision bf16 --threads $THREADS --seed 0 --no-progress --log-every 50 --overwrite"
for init in pretrained random; do
  run="$OUT/$init"
  [ -f "$run/test.json" ] && continue
  extra=""
  [ "$init" = random ] && extra="--from-scratch"
  ptm finetune --checkpoint "$PRETRAINED" $extra $FT -o "$run" > "$run.log" 2>&1
  ptm eval -c "$run" --data "$OUT/split/test.json" --json --threads "$THREADS" > "$run/test.json"
done

python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| initialisation | test exact match | test F1 |")
print("| --- | ---: | ---: |")
for init in ("pretrained", "random"):
    path = out / init / "test.json"
    if path.exists():
        r = json.loads(path.read_text())
        print(f"| {init} | {r['exact_match']:.1f} | {r['f1']:.1f} |")
PY
