"""Two processes under torchrun (gloo, CPU) against one, on real text: same run, and how fast.

    python benchmarks/bench_distributed.py [--arch bert] [--preset bert-mini] [--steps 30]
    python benchmarks/bench_distributed.py --data-prep [--arch bert] [--preset bert-tiny] [--hidden-size 64] [--steps 30]

The one-process run uses batch 2b and two threads; the two-process run uses
batch b per process and one thread each, so both use the whole 2-core
machine. It prints the largest weight difference after the last step, the
largest relative difference of the logged losses, and tokens/s of each
(the ratio is the figure; these machines are noisy).

``--data-prep`` measures, in one run of two processes, how much of a training
step goes to preparing its data, done two ways on the same model, in
alternating blocks of steps: the old way (every rank builds and masks the
whole global batch on the training thread, then keeps its rows) and the new
one (each rank builds only its rows, two steps ahead on a background thread;
what the training thread still spends is the wait for the next step and the
normalisers' all-reduce). It prints ratios: the build time of a rank's rows
against the whole batch's, and the data share of step time each way. On a CPU
host the model's compute holds the cores and the GIL, so the thread has
little to hide behind; ``--device-step-ms`` replaces the compute by a wait
with the CPU free, as the training thread's time looks while a GPU computes.
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
    parser.add_argument("--preset", default=None, help="default: bert-mini, or bert-tiny with --data-prep")
    parser.add_argument("--batch", type=int, default=16, help="per-process batch of the 2-process run")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--grad-accum", type=int, default=1, help="--data-prep: micro-batches per step")
    parser.add_argument("--data-prep", action="store_true", help="measure the data-preparation share of step time, old way and new")
    parser.add_argument("--device-step-ms", type=float, default=None, help="--data-prep: instead of computing on the CPU, each "
                        "step waits this long with the CPU free, as the training thread does while a GPU computes")
    parser.add_argument("--hidden-size", type=int, default=None, help="--data-prep: a narrower model (the FFN 4x, 64 per head), "
                        "so compute stands for a faster device's")
    parser.add_argument("--data-prep-worker", nargs=2, metavar=("SHARDS", "TOKENIZER"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    opts.preset = opts.preset or ("bert-tiny" if opts.data_prep or opts.data_prep_worker else "bert-mini")
    if opts.data_prep_worker:
        data_prep_worker(opts, *opts.data_prep_worker)
        return
    if not WIKI.exists():
        sys.exit(f"needs {WIKI} (the shared data folder)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "ptmcli", "tokenize", "train", str(WIKI), "--vocab-size", "8000", "-o", str(tmp / "tok")],
                       check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "ptmcli", "tokenize", "encode", str(WIKI), "--tokenizer", str(tmp / "tok"), "-o", str(tmp / "shards"),
                        "--no-progress"], check=True, capture_output=True)
        if opts.data_prep:
            data_prep(opts, tmp / "shards", tmp / "tok")
        else:
            compare_runs(opts, tmp)


def compare_runs(opts, tmp: Path) -> None:
    """The same run on one process and on two: losses, weights, tokens/s."""
    from safetensors.torch import load_file

    from ptmcli.checkpoint import list_step_checkpoints

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


def data_prep(opts, shards: Path, tokenizer: Path) -> None:
    """This script again under torchrun, two gloo processes of one thread each; rank 0 prints."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = [a for a in sys.argv[1:] if a != "--data-prep"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__, *args,
                           "--data-prep-worker", str(shards), str(tokenizer)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"the data-preparation run failed:\n{done.stderr[-3000:]}")
    print(done.stdout, end="")


def data_prep_worker(opts, shards: str, tokenizer_dir: str) -> None:
    """One rank: old-way and new-way steps on one DDP model, in alternating blocks; rank 0 prints the ratios."""
    import contextlib
    import statistics
    import time
    from types import SimpleNamespace

    import numpy as np
    import torch

    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import default_objective, get_objective
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training import distributed
    from ptmcli.training.prefetch import BatchPrefetcher

    torch.set_num_threads(1)
    dist_info = distributed.from_environment("cpu")
    world = dist_info.world_size
    tokenizer, dataset, family = PtmTokenizer.load(tokenizer_dir), ShardDataset.open(shards), get_family(opts.arch)
    objective_name = opts.objective or default_objective(opts.arch)
    objective = get_objective(objective_name, opts.arch)
    global_batch = opts.batch * world
    cfg = SimpleNamespace(objective=objective_name, seq_len=opts.seq_len, seed=0, short_seq_prob=0.1, whole_word_mask=False,
                          batch_size=global_batch, mask_prob=0.15, eval_batches=0, compile=False)

    def new_task():
        return objective.build(ObjectiveContext(cfg, tokenizer, dataset, np.arange(len(dataset)), [], family))

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    narrower = {} if opts.hidden_size is None else {
        "hidden_size": opts.hidden_size, "intermediate_size": 4 * opts.hidden_size, "num_heads": max(1, opts.hidden_size // 64)}
    model = family.build(family.model_config(opts.preset, tokenizer, **narrower), tokenizer)
    ddp = distributed.wrap_ddp(model, cpu, find_unused=objective.find_unused_parameters)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    whole, share = new_task(), distributed.GlobalBatchShare(new_task(), dist_info)
    rows = distributed.share_of(global_batch, dist_info)
    block, warmup = 5, 5
    blocks = -(-opts.steps // block)
    total = warmup + blocks * block

    # The work itself, both ways on the training thread, nothing else running: separate streams.
    build_whole, build_share = new_task(), distributed.GlobalBatchShare(new_task(), dist_info)
    build_s = {"whole": [], "rows": []}
    for index in range(warmup + opts.steps):
        for name, make in (("whole", lambda: build_whole.next_micro_batches(opts.grad_accum)),
                           ("rows", lambda: build_share.next_micro_batches(opts.grad_accum))):
            start = time.perf_counter()
            make()
            if index >= warmup:
                build_s[name].append(time.perf_counter() - start)

    def old_way():
        # What every rank did before: agree to go on, then build (and mask) the whole global batch and keep its rows.
        agreed = time.perf_counter()
        distributed.all_reduce_values([0.0, 0.0], dist_info, cpu, op="max")
        start = time.perf_counter()
        batches = whole.next_micro_batches(opts.grad_accum)
        norms = dict(whole.normalizers(batches), ranks=float(world))
        return [distributed.slice_batch(b, rows, global_batch) for b in batches], norms, start - agreed

    def new_way(ahead):
        # As the loop does now: wait for the step made ahead, agree to go on and sum the normalisers' counts at once.
        counts = share.shared_counts(ahead.peek())
        agreed = time.perf_counter()
        totals = distributed.all_reduce_values([0.0, 0.0, *counts.values()], dist_info, cpu)
        reduced = time.perf_counter()
        batches = ahead.next()
        return batches, share.normalizers(batches, dict(zip(counts, totals[2:]))), reduced - agreed

    def train_step(batches, norms, before_backward) -> None:
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            with ddp.no_sync() if not last else contextlib.nullcontext():
                loss, _stats = whole.loss(ddp, batch, norms)
                if index == 0:
                    before_backward()
                (loss * world).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    spent = {way: {"data": [], "reduce": [], "step": []} for way in ("old", "new")}
    with BatchPrefetcher(lambda: share.next_micro_batches(opts.grad_accum), share.state_dict, planned=total) as ahead:
        taken = 0

        def step(way: str, record: bool) -> None:
            nonlocal taken
            start = time.perf_counter()
            if way == "old":
                batches, norms, agreeing = old_way()
            else:
                batches, norms, agreeing = new_way(ahead)
                taken += 1
            ready = time.perf_counter()
            # As the loop does, the producer starts on the next steps when backward starts.
            make_ahead = (lambda: ahead.make_ahead(total - taken)) if way == "new" else (lambda: None)
            if opts.device_step_ms is None:
                train_step(batches, norms, make_ahead)
            else:
                make_ahead()
                time.sleep(opts.device_step_ms / 1000)  # sleeping frees the GIL, as waiting on a GPU does
            if record:
                for key, seconds in (("data", ready - start - agreeing), ("reduce", agreeing), ("step", time.perf_counter() - start)):
                    spent[way][key].append(seconds)

        for _ in range(warmup):
            for way in ("old", "new"):
                step(way, record=False)
        for _ in range(blocks):
            for way in ("old", "new"):
                for _ in range(block):
                    step(way, record=True)
    if dist_info.is_main:
        median = statistics.median
        fraction = {way: {key: sum(t[key]) / sum(t["step"]) for key in ("data", "reduce")} for way, t in spent.items()}
        width = f" (hidden {opts.hidden_size})" if opts.hidden_size else ""
        stand_in = "" if opts.device_step_ms is None else f", no CPU compute: a {opts.device_step_ms:g} ms device step stands in"
        print(f"{opts.arch} {opts.preset}{width} ({objective_name}){stand_in}, seq {opts.seq_len}, global batch {global_batch} = {opts.batch} x {world} "
              f"processes x {opts.grad_accum} accumulation, {len(spent['new']['step'])} steps each way, gloo/CPU, 1 thread per process")
        print(f"build time of a step's data (training thread alone): this rank's rows / the whole global batch = "
              f"{median(build_s['rows']) / median(build_s['whole']):.2f}x")
        print(f"data share of step time on the training thread: old way (build the whole batch) {fraction['old']['data']:.2%}, "
              f"new way (wait for the step made ahead) {fraction['new']['data']:.2%} "
              f"(new/old {fraction['new']['data'] / fraction['old']['data']:.2f}x)")
        print(f"the all-reduce that starts a step (ranks agree to go on; new: with the normalisers' counts), share of step time: "
              f"old {fraction['old']['reduce']:.2%}, new {fraction['new']['reduce']:.2%} (it also absorbs the ranks' skew)")
        print(f"median step time new / old: {median(spent['new']['step']) / median(spent['old']['step']):.2f}x")
    distributed.shutdown(dist_info)

if __name__ == "__main__":
    main()
