"""Two processes under torchrun (gloo, CPU) against one, on real text: same run, and how fast.

    python benchmarks/bench_distributed.py [--arch bert] [--preset bert-mini] [--steps 30]

The one-process run uses batch 2b and two threads; the two-process run uses
batch b per process and one thread each, so both use the whole 2-core
machine. It prints the largest weight difference after the last step, the
largest relative difference of the logged losses, and tokens/s of each
(the ratio is the figure; these machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WIKI = REPO.parent / "shared" / "data" / "enwiki-sample" / "enwiki_sample.txt"


def ptm(args: list[str], procs: int, threads: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = [sys.executable, "-m", "ptmcli"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", "-m", "ptmcli"]
    done = subprocess.run(launcher + args + ["--threads", str(threads)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"ptm {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="bert")
    parser.add_argument("--objective", default=None)
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--batch", type=int, default=16, help="per-process batch of the 2-process run")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    opts = parser.parse_args()
    if not WIKI.exists():
        sys.exit(f"needs {WIKI} (the shared data folder)")

    from safetensors.torch import load_file

    from ptmcli.checkpoint import list_step_checkpoints

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "ptmcli", "tokenize", "train", str(WIKI), "--vocab-size", "8000", "-o", str(tmp / "tok")],
                       check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "ptmcli", "tokenize", "encode", str(WIKI), "--tokenizer", str(tmp / "tok"), "-o", str(tmp / "shards"),
                        "--no-progress"], check=True, capture_output=True)
        common = ["pretrain", "--arch", opts.arch, "--preset", opts.preset, "--data", str(tmp / "shards"), "--tokenizer", str(tmp / "tok"),
                  "--seq-len", str(opts.seq_len), "--max-steps", str(opts.steps), "--log-every", "5", "--no-progress",
                  "--hidden-dropout", "0", "--attention-dropout", "0", "--lr", "5e-4", "--warmup-steps", "5", "--precision", "fp32"]
        if opts.objective:
            common += ["--objective", opts.objective]
        runs = {}
        for name, procs, threads, batch in (("1 process, batch 2b, 2 threads", 1, 2, 2 * opts.batch),
                                            ("2 processes, batch b each, 1 thread each", 2, 1, opts.batch)):
            out = tmp / f"run{procs}"
            ptm(common + ["--batch-size", str(batch), "-o", str(out)], procs, threads)
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            logged = [r for r in records if "loss" in r]
            runs[name] = {
                "weights": load_file(str(list_step_checkpoints(out)[-1] / "model.safetensors")),
                "losses": [r["loss"] for r in logged],
                # The first window includes start-up; take the steady ones.
                "tokens_per_s": sum(r["tokens_per_s"] for r in logged[1:]) / max(1, len(logged) - 1),
            }
        (one_name, one), (two_name, two) = runs.items()
        weight_diff = max(float((one["weights"][k] - two["weights"][k]).abs().max()) for k in one["weights"])
        loss_diff = max(abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"]))
        print(f"{opts.arch} {opts.preset}, seq {opts.seq_len}, global batch {2 * opts.batch}, {opts.steps} steps, fp32, no dropout, enwiki-sample")
        print(f"logged losses ({len(one['losses'])} windows): {' '.join(f'{x:.4f}' for x in one['losses'])}")
        print(f"max |loss 1-proc - loss 2-proc| / loss: {loss_diff:.2e}")
        print(f"max |weight 1-proc - weight 2-proc| after step {opts.steps}: {weight_diff:.2e}")
        for name, run in runs.items():
            print(f"{name}: {run['tokens_per_s']:,.0f} tokens/s")
        print(f"ratio 2-proc / 1-proc: {two['tokens_per_s'] / one['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
