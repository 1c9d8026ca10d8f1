#!/usr/bin/env bash
# The CUDA path end to end, on one GPU in under 5 minutes: ptm's own commands and small Python
# snippets check bf16 autocast, flash attention in SDPA, fused AdamW, --compile, DDP, a torchrun
# launch, the fp16 loss scaler and --batch-size auto; then bert-base and gpt2-124m training
# throughput and MFU (against the GPU's datasheet peak) are measured beside transformers'
# BertForPreTraining / GPT2LMHeadModel at the same configuration, in the same process.
#
#   bash benchmarks/gpu.sh                   # on a CUDA machine
#   PTM_GPU_SMOKE=1 bash benchmarks/gpu.sh   # anywhere: everything shrunk to seconds, on CPU;
#                                            # the CUDA-only checks say "skipped: no CUDA"
#
# Prints one line per check and a table; with $OUT set, writes $OUT/gpu_results.json (every check
# and figure) and the logs to $OUT/gpu_logs/. Exit status 1 when any check failed, 2 when there is
# no CUDA and no PTM_GPU_SMOKE.
set -u
cd "$(dirname "$0")/.."
SMOKE=${PTM_GPU_SMOKE:-0}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEV=cuda
elif [ "$SMOKE" = 1 ]; then
    DEV=cpu
else
    echo "gpu.sh: no CUDA device here; PTM_GPU_SMOKE=1 runs the script's CPU side in seconds" >&2
    exit 2
fi
export PTM_CHECK_DEVICE=$DEV PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}"

# Sizes: the real ones, or small enough for seconds on a CPU.
if [ "$SMOKE" = 1 ]; then
    STEPS=3; SEQ=32; RUN_PRESET=bert-tiny; AUTO=(--preset bert-tiny --seq-len 32 --global-batch 16)
    BERT=(--layers 1 --hidden 64 --heads 2 --vocab 2000 --seq-len 32 --batch 2 --warmup 1 --steps 2)
    GPT=(--layers 1 --hidden 64 --heads 2 --vocab 1000 --seq-len 32 --batch 2 --warmup 1 --steps 2)
    LIMIT=300
else
    STEPS=30; SEQ=128; RUN_PRESET=bert-mini
    # bert-base at 512 tokens runs out of memory below 4096 examples even on 141 GB: the search meets an OOM.
    AUTO=(--preset bert-base --seq-len 512 --precision bf16 --global-batch 4096)  # --global-batch last: read below
    BERT=(--layers 12 --hidden 768 --heads 12 --vocab 30522 --seq-len 512 --batch 32 --warmup 3 --steps 10)
    GPT=(--layers 12 --hidden 768 --heads 12 --vocab 50257 --seq-len 1024 --batch 16 --warmup 3 --steps 10)
    LIMIT=150
fi
RUN=(--preset "$RUN_PRESET" --seq-len "$SEQ" --max-steps "$STEPS" --log-every 5 --eval-batches 2 --no-progress --device "$DEV")

# py ARGS...: Python, stopped after $LIMIT s (exit 124), so one stuck check cannot hold the machine.
py() { timeout "$LIMIT" "$PY" "$@"; }

# check NAME COMMAND...: run it; exit 0 passes, 77 skips, anything else fails. Its last output line is
# the detail shown.
check() {
    local name=$1 start=$SECONDS status rc
    shift
    "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    case $rc in 0) status=pass ;; 77) status=skipped ;; 124) status=FAIL; echo "timed out after ${LIMIT}s" >>"$WORK/$name.log" ;; *) status=FAIL ;; esac
    local detail
    detail=$(grep -v '^[[:space:]]*$' "$WORK/$name.log" | tail -n 1 | cut -c1-160)
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$detail" >>"$RESULTS"
    printf '%-16s %-8s %4ss  %s\n' "$name" "$status" "$((SECONDS - start))" "$detail"
}

# run_ok DIR: the run ended and logged a finite loss that fell (over its logged steps).
run_ok() {
    py - "$1" <<'EOF'
import json, math, sys
records = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl") if '"loss"' in line]
losses = [r["loss"] for r in records]
assert losses and all(math.isfinite(x) for x in losses), f"losses {losses}"
print(f"{len(records)} logged steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, tokens/s {records[-1]['tokens_per_s']:,.0f}"
      + (f", mfu {records[-1]['mfu']:.1%}" if "mfu" in records[-1] else ""))
assert len(losses) == 1 or losses[-1] < losses[0], "the loss did not fall"
EOF
}

# pretrain NAME ARGS...: ptm pretrain on the bundled sample into $WORK/NAME, then run_ok.
pretrain() {
    local name=$1
    shift
    py -m ptmcli pretrain "${RUN[@]}" "$@" -o "$WORK/$name" && run_ok "$WORK/$name"
}

cuda_only() {
    if [ "$DEV" != cuda ]; then echo "skipped: no CUDA"; return 77; fi
    "$@"
}

# --- snippets -------------------------------------------------------------------------------
read -r -d '' AUTOCAST_PY <<'EOF'
# bf16 autocast reaches ptm's layers: the attention and feed-forward matmuls produce bf16, the loss is finite.
import os, torch
from ptmcli.models import bert
device = torch.device(os.environ["PTM_CHECK_DEVICE"])
model = bert.BertForPreTraining(bert.BertConfig(1000, 64, 2, 2, 256)).to(device).train()
dtypes = set()
for module in model.modules():
    if isinstance(module, torch.nn.Linear):
        module.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
ids = torch.randint(5, 1000, (4, 32), device=device)
labels = torch.where(torch.rand(ids.shape, device=device) < 0.15, ids, torch.full_like(ids, -100))
with torch.autocast(device.type, dtype=torch.bfloat16):
    out = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids), mlm_labels=labels,
                nsp_labels=torch.zeros(4, dtype=torch.long, device=device))
loss = bert.pretraining_loss(out, out["mlm_count"], out["nsp_count"])
loss.backward()
assert dtypes == {torch.bfloat16}, f"Linear outputs under autocast: {dtypes}"
assert torch.isfinite(loss), loss
print(f"Linear outputs {sorted(map(str, dtypes))}, loss {loss.item():.3f} on {device.type}")
EOF

read -r -d '' FLASH_PY <<'EOF'
# SDPA picks the flash kernel for ptm's training attention (BERT unpadded, GPT causal), seen in the profiler.
import torch
from torch.profiler import ProfilerActivity, profile
from ptmcli.models import bert, gpt
assert torch.backends.cuda.flash_sdp_enabled(), "flash SDPA is disabled in this torch"
device = torch.device("cuda")
found = {}
for name, model, call in (
    ("bert", bert.BertForPreTraining(bert.BertConfig(30522, 768, 2, 12, 3072)),
     lambda m, ids: bert.pretraining_loss(o := m(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids),
                                                 mlm_labels=ids, nsp_labels=torch.zeros(ids.shape[0], dtype=torch.long, device=device)),
                                          o["mlm_count"], o["nsp_count"])),
    ("gpt", gpt.GPTForCausalLM(gpt.GPTConfig(vocab_size=30522, hidden_size=768, num_layers=2, num_heads=12, intermediate_size=3072,
                                       max_position_embeddings=512)),
     lambda m, ids: (lambda o: o["lm_loss_sum"] / o["lm_count"])(m(ids, ids))),
):
    model = model.to(device).train()
    ids = torch.randint(1000, 30000, (8, 512), device=device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = call(model, ids)
        loss.backward()
        torch.cuda.synchronize()
    kernels = {e.key for e in prof.key_averages()}
    found[name] = sorted(k for k in kernels if "flash" in k.lower())[:2]
    others = sorted(k for k in kernels if "efficient_attention" in k or "_scaled_dot_product_attention_math" in k)
    assert found[name], f"{name}: no flash kernel; attention ran as {others or 'something else'}"
print("flash kernels: " + "; ".join(f"{n}: {', '.join(k)}" for n, k in found.items()))
EOF

read -r -d '' FUSED_PY <<'EOF'
# ptm's optimizer is torch's fused AdamW on this device, and a step of it changes the weights.
import os, torch
from ptmcli.models import bert
from ptmcli.training.optim import build_adamw
device = torch.device(os.environ["PTM_CHECK_DEVICE"])
model = bert.BertForPreTraining(bert.BertConfig(1000, 64, 2, 2, 256)).to(device)
optimizer = build_adamw(model, 1e-3, 0.01, device=device.type)
assert optimizer.defaults.get("fused"), f"not fused: {optimizer.defaults}"
before = next(model.parameters()).detach().clone()
for p in model.parameters():
    p.grad = torch.ones_like(p)
optimizer.step()
assert not torch.equal(before, next(model.parameters()).detach()), "the step changed nothing"
print(f"fused AdamW on {device.type}: {len(optimizer.param_groups)} groups, one step taken")
EOF

read -r -d '' DDP_PY <<'EOF'
# ptm's DDP wrapping in a one-process group (NCCL on CUDA, gloo on CPU): the gradients match the bare model's.
import copy, os, torch, torch.distributed as dist
from ptmcli.models import bert
from ptmcli.training.distributed import wrap_ddp
device = torch.device(os.environ["PTM_CHECK_DEVICE"])
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29533")
dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
config = bert.BertConfig(1000, 64, 2, 2, 256, hidden_dropout=0.0, attention_dropout=0.0)
bare = bert.BertForPreTraining(config).to(device).train()
wrapped = wrap_ddp(copy.deepcopy(bare), device)
ids = torch.randint(5, 1000, (4, 32), device=device)
inputs = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids), mlm_labels=ids,
              nsp_labels=torch.zeros(4, dtype=torch.long, device=device))
for model in (bare, wrapped):
    out = model(**inputs)
    bert.pretraining_loss(out, out["mlm_count"], out["nsp_count"]).backward()
worst = max((a.grad - b.grad).abs().max().item() for a, b in zip(bare.parameters(), wrapped.module.parameters()) if a.grad is not None)
dist.destroy_process_group()
assert worst < 1e-4, f"DDP gradients differ by {worst}"
print(f"DDP ({'nccl' if device.type == 'cuda' else 'gloo'}, 1 process): gradients match the bare model's (max diff {worst:.1e})")
EOF

read -r -d '' AUTO_PY <<'EOF'
# --batch-size auto recorded plain numbers that make up the global batch asked; its banner says how.
import json, sys
config = json.load(open(f"{sys.argv[1]}/run.json"))["config"]
b, a = config["batch_size"], config["grad_accum"]
assert type(b) is int and type(a) is int and b * a >= int(sys.argv[2]), config
banner = next(line for line in open(sys.argv[3]) if line.startswith("ptm: batch-size auto: "))
print(f"recorded {b} x {a}: " + banner.strip().removeprefix("ptm: batch-size auto: "))
EOF

# --- checks ---------------------------------------------------------------------------------
echo "gpu.sh: device $DEV$([ "$SMOKE" = 1 ] && echo ', smoke sizes')"
check autocast-bf16  py -c "$AUTOCAST_PY"
check sdpa-flash     cuda_only py -c "$FLASH_PY"
check fused-adamw    py -c "$FUSED_PY"
check ddp-1-process  py -c "$DDP_PY"
check pretrain-bf16  pretrain bf16 --precision bf16
check pretrain-fp16  cuda_only pretrain fp16 --precision fp16
check compile        cuda_only pretrain compile --compile --precision bf16
# World size 1: ptm runs it as one process (DDP itself is the snippet above); this checks the launch.
torchrun_1() {
    py -m torch.distributed.run --standalone --nproc_per_node 1 -m ptmcli pretrain "${RUN[@]}" -o "$WORK/torchrun" &&
        run_ok "$WORK/torchrun"
}
check torchrun-1     torchrun_1
auto_batch() {
    py -m ptmcli pretrain "${AUTO[@]}" --batch-size auto --max-steps 1 --eval-batches 1 --no-progress --device "$DEV" \
        -o "$WORK/auto" >"$WORK/auto.out" 2>&1 || { tail -n 5 "$WORK/auto.out"; return 1; }
    if [ "$DEV" = cuda ] && ! grep -q "did not: out of memory" "$WORK/auto.out"; then
        grep "batch-size auto" "$WORK/auto.out"; echo "the search met no out-of-memory"; return 1
    fi
    py -c "$AUTO_PY" "$WORK/auto" "${AUTO[-1]}" "$WORK/auto.out"
}
check batch-auto     auto_batch
check bench-bert     py benchmarks/bench_bert_pretrain.py --device "$DEV" --threads "$(nproc)" "${BERT[@]}" --json "$WORK/bert.json"
check bench-gpt2     py benchmarks/bench_gpt_pretrain.py --device "$DEV" --threads "$(nproc)" "${GPT[@]}" --json "$WORK/gpt2.json"

# --- summary --------------------------------------------------------------------------------
"$PY" - "$WORK" "$DEV" "$SMOKE" "${OUT:-}" <<'EOF'
import json, os, shutil, sys
from pathlib import Path
work, device, smoke, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
checks = [dict(zip(("name", "status", "seconds", "detail"), line.split("\t", 3))) for line in (work / "results.tsv").read_text().splitlines()]
throughput = {}
for name, label in (("bert", "bert-base" if not smoke else "bert (smoke)"), ("gpt2", "gpt2-124m" if not smoke else "gpt2 (smoke)")):
    path = work / f"{name}.json"
    if path.exists():
        throughput[label] = json.loads(path.read_text())
print(f"\n{'model':14s} {'variant':28s} {'tokens/s':>10s} {'MFU':>6s} {'vs HF same precision':>21s}")
for label, figures in throughput.items():
    rows = figures["variants"]
    for variant, row in rows.items():
        precision = "bf16 autocast" if "bf16" in variant else "fp32"
        hf = rows.get(f"transformers {precision}")
        ratio = f"{row['tokens_per_s'] / hf['tokens_per_s']:.2f}x" if hf else "-"
        print(f"{label:14s} {variant:28s} {row['tokens_per_s']:10,.0f} {row['mfu']:6.1%} {ratio:>21s}")
failed = [c["name"] for c in checks if c["status"] == "FAIL"]
summary = {"device": device, "smoke": smoke, "checks": checks, "throughput": throughput}
try:
    import torch
    summary["torch"] = torch.__version__
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(0)
except ImportError:
    pass
if out:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "gpu_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    logs = Path(out) / "gpu_logs"
    logs.mkdir(exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copy(log, logs / log.name)
    print(f"\nfigures: {Path(out) / 'gpu_results.json'}")
passed = sum(c["status"] == "pass" for c in checks)
skipped = sum(c["status"] == "skipped" for c in checks)
print(f"\n{passed} passed, {skipped} skipped, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
sys.exit(1 if failed else 0)
EOF
