"""Finetuning a Hugging Face BERT: ``ptm finetune`` against the plain ``transformers`` loop people write.

Both sides start from the same weights (an HF model directory; ptm reads it
converted with ``ptm convert``), see the same sentences (the first
``--train-size`` SST-2 training sentences), and train one epoch at lr 1e-4,
batch 32, max length 128, for each seed; the score is accuracy on all of
SST-2 dev after the epoch.

  (a) plain loop: ``AutoTokenizer`` / ``AutoModel``; a linear head (PyTorch's
      default init, no dropout) on the last layer's [CLS] state without the
      pooler (``cls``) or on its mean over the attention mask (``mean``);
      ``torch.optim.AdamW`` with its defaults (weight decay 0.01 on every
      weight, eps 1e-8) over the encoder and head; transformers' linear
      schedule without warmup; no gradient clipping; batches from a
      ``DataLoader`` shuffled by a generator seeded with the seed; dev
      accuracy in eval mode under ``torch.no_grad``.
  (b) ptm: ``ptm finetune --task classification --epochs 1 --lr 1e-4
      --batch-size 32 --max-len 128 --seed S`` with ptm's defaults otherwise,
      and ``--pool cls|mean`` for the matching comparison (``default``: no
      --pool, ptm's own choice); the dev accuracy is read from the run's
      results.json.

Before training, the two tokenizers are checked to give the same ids for every
sentence (a difference there would be a gap of its own). Prints per-seed and
mean +- std dev accuracy for each side and the difference of the means.

    python3 benchmarks/bench_finetune_hf.py --model hf-bert --pools default,cls,mean --threads 1
    python3 benchmarks/bench_finetune_hf.py --model hf-bert --pools mean --sides ptm --tag nowarmup -- --warmup-ratio 0

Arguments after ``--`` go to every ``ptm finetune`` run (ablations);
``--ptm-patch NAME=VALUE`` changes what no flag reaches (the head's dropout and
init, AdamW's eps) inside the ptm process; the ``--plain-*`` options change the
plain loop one factor at a time, and ``--plain-order ptm`` feeds it the rows in
ptm's order for each seed, which takes the data order out of a seed-for-seed
comparison (it alone moves a short run by a point or two).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # an installed ptm (or PYTHONPATH) comes first
SST2 = REPO.parent / "shared" / "data" / "sst2"


def read_tsv(path: Path) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["sentence"], int(row["label"])) for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def write_subset(source: Path, target: Path, rows: int) -> Path:
    """The header and the first ``rows`` lines of ``source``, byte for byte."""
    with open(source, encoding="utf-8", newline="") as handle:
        lines = handle.readlines()[: rows + 1]
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_text(encoding="utf-8") != "".join(lines):
        target.write_text("".join(lines), encoding="utf-8")
    return target


def check_tokenization(model_dir: Path, checkpoint: Path, files: list[Path], max_len: int) -> int:
    """Rows whose ids differ between transformers' tokenizer and ptm's encoding of the labeled file."""
    from transformers import AutoTokenizer

    from ptmcli.tasks.labeled_shards import prepare_labeled
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ptm_tokenizer = PtmTokenizer.load(checkpoint)
    differing = 0
    for path in files:
        texts = [text for text, _ in read_tsv(path)]
        rows = prepare_labeled(str(path), ptm_tokenizer, "classification", "bert", max_len, cache=False)
        hf_ids = hf_tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
        differing += sum(list(rows[i]["input_ids"]) != hf_ids[i] for i in range(len(texts)))
    return differing


# -- (a) the plain loop --------------------------------------------------------------------------


def plain_loop(model_dir: Path, train: list[tuple[str, int]], dev: list[tuple[str, int]], *, pool: str, seed: int, epochs: float,
               lr: float, batch_size: int, max_len: int, warmup_ratio: float, clip_norm: float, head_dropout: float,
               head_init: str, order: str) -> dict:
    from torch.utils.data import DataLoader
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused pooler's "newly initialized" warning
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoder = AutoModel.from_pretrained(str(model_dir))
    labels = sorted({label for _, label in train})
    head = nn.Linear(encoder.config.hidden_size, len(labels))
    if head_init == "bert":
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    dropout = nn.Dropout(head_dropout)

    def collate(rows):
        batch = tokenizer([text for text, _ in rows], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        batch["labels"] = torch.tensor([labels.index(label) for _, label in rows])
        return batch

    def logits_of(batch):
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch.get("token_type_ids")).last_hidden_state
        if pool == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return head(dropout(pooled))

    if order == "ptm":  # ptm's own row order for this seed (ShuffledOrder's first epoch)
        import numpy as np

        sampler = [int(i) for i in np.random.default_rng([seed, 0]).permutation(len(train))]
        loader = DataLoader(train, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    else:
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    steps = math.ceil(epochs * len(loader))
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, round(warmup_ratio * steps), steps)
    encoder.train()
    head.train()
    dropout.train()
    started, step = time.time(), 0
    while step < steps:
        for batch in loader:
            loss = F.cross_entropy(logits_of(batch), batch["labels"])
            loss.backward()
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step == steps:
                break
    seconds = time.time() - started
    encoder.eval()
    dropout.eval()
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(dev, batch_size=64, collate_fn=collate):
            correct += int((logits_of(batch).argmax(-1) == batch["labels"]).sum())
    return {"accuracy": correct / len(dev), "steps": steps, "train_seconds": round(seconds, 1)}


# -- (b) ptm finetune ----------------------------------------------------------------------------


# Ablations of what no flag reaches: each replaces one piece of ptm's finetuning in the ptm process.
PATCHES = {
    "head_dropout": "dropout probability before the classifier [ptm: the model's hidden dropout]",
    "head_init": "torch: nn.Linear's own init for the classifier [ptm: N(0, 0.02), zero bias]",
    "adam_eps": "AdamW's eps [ptm: 1e-6]",
}


def run_patched_ptm(patches: dict[str, str], argv: list[str]) -> None:
    """``ptm ARGV`` in this process with ``patches`` applied (see PATCHES)."""
    from ptmcli.cli.main import main as ptm_main
    from ptmcli.finetuning import task_model

    unknown = set(patches) - set(PATCHES)
    if unknown:
        raise SystemExit(f"unknown patch {sorted(unknown)[0]!r}; known: {', '.join(PATCHES)}")
    original_init = task_model.TaskModel.__init__

    def patched_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        if "head_dropout" in patches:
            self.dropout.p = float(patches["head_dropout"])
        if patches.get("head_init") == "torch":
            self.classifier.reset_parameters()

    task_model.TaskModel.__init__ = patched_init
    if "adam_eps" in patches:
        adamw = torch.optim.AdamW

        class PatchedAdamW(adamw):
            def __init__(self, params, **kwargs):
                super().__init__(params, **{**kwargs, "eps": float(patches["adam_eps"])})

        torch.optim.AdamW = PatchedAdamW
    ptm_main(argv)


def ptm_run(checkpoint: Path, train: Path, dev: Path, run_dir: Path, *, pool: str, seed: int, epochs: float, lr: float,
            batch_size: int, max_len: int, threads: int, extra: list[str], patches: dict[str, str]) -> dict:
    prefix = [sys.executable, __file__, "--patched-ptm", json.dumps(patches)] if patches else ["ptm"]
    command = [*prefix, "finetune", "--checkpoint", str(checkpoint), "--task", "classification", "--train", str(train),
               "--dev", str(dev), "-o", str(run_dir), "--overwrite", "--epochs", f"{epochs:g}", "--lr", f"{lr:g}",
               "--batch-size", str(batch_size), "--max-len", str(max_len), "--seed", str(seed), "--threads", str(threads),
               "--no-progress", *([] if pool == "default" else ["--pool", pool]), *extra]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ptm finetune failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    pooling = [line for line in done.stderr.splitlines() if line.startswith("ptm: pooling")]
    return {"accuracy": results["best"]["accuracy"], "steps": results["step"], "train_seconds": results["train_seconds"],
            "wall_seconds": round(time.time() - started, 1), "note": pooling[0] if pooling else None}


# -- the comparison ------------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} +- {100 * spread:.2f}"


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--patched-ptm"]:
        run_patched_ptm(json.loads(argv[1]), argv[2:])
        return
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="HF model directory (e.g. ptm convert CKPT DIR --to hf)")
    parser.add_argument("--ptm-checkpoint", type=Path, help="ptm checkpoint of the same weights [default: --model converted with ptm convert]")
    parser.add_argument("--train", type=Path, default=SST2 / "train.tsv")
    parser.add_argument("--dev", type=Path, default=SST2 / "dev.tsv")
    parser.add_argument("--train-size", type=int, default=3000, help="first N training sentences")
    parser.add_argument("--pools", default="default,cls,mean", help="comma-separated: default (ptm's own; no plain-loop run), cls, mean")
    parser.add_argument("--sides", default="plain,ptm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plain-warmup-ratio", type=float, default=0.0)
    parser.add_argument("--plain-clip-norm", type=float, default=0.0)
    parser.add_argument("--plain-head-dropout", type=float, default=0.0)
    parser.add_argument("--plain-head-init", choices=("torch", "bert"), default="torch", help="torch: nn.Linear's own; bert: N(0, 0.02), zero bias")
    parser.add_argument("--ptm-patch", action="append", default=[], metavar="NAME=VALUE",
                        help="ablate a piece of ptm no flag reaches: " + "; ".join(f"{k}: {v}" for k, v in PATCHES.items()))
    parser.add_argument("--plain-order", choices=("torch", "ptm"), default="torch",
                        help="torch: a DataLoader shuffled by a generator seeded with the seed; ptm: the order ptm finetune visits for that seed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-finetune-hf"))
    parser.add_argument("--tag", default="", help="names this configuration in the run directories and --json")
    parser.add_argument("--json", type=Path, help="append the results as one JSON line")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    patches = dict(item.split("=", 1) for item in args.ptm_patch)
    pools = args.pools.split(",")
    sides = args.sides.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    train_file = write_subset(args.train, args.work / f"train-{args.train_size}.tsv", args.train_size)
    checkpoint = args.ptm_checkpoint
    if checkpoint is None and "ptm" in sides:
        checkpoint = args.work / "ptm-checkpoint"
        subprocess.run(["ptm", "convert", str(args.model), str(checkpoint), "--to", "ptm", "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
    train_rows, dev_rows = read_tsv(train_file), read_tsv(args.dev)
    if checkpoint is not None and "plain" in sides:
        differing = check_tokenization(args.model, checkpoint, [train_file, args.dev], args.max_len)
        print(f"tokenization: {differing} of {len(train_rows) + len(dev_rows)} sentences get different ids on the two sides")
    print(f"{len(train_rows):,} train / {len(dev_rows):,} dev sentences; {args.epochs:g} epoch(s), lr {args.lr:g}, batch {args.batch_size}, "
          f"max_len {args.max_len}, seeds {seeds}, {args.threads} thread(s)" + (f"; ptm flags {' '.join(extra)}" if extra else "")
          + (f"; ptm patched: {patches}" if patches else ""))

    results: dict[str, dict[str, list[dict]]] = {}
    for pool in pools:
        for side in sides:
            if side == "plain" and pool == "default":
                continue
            runs = []
            for seed in seeds:
                if side == "plain":
                    run = plain_loop(args.model, train_rows, dev_rows, pool=pool, seed=seed, epochs=args.epochs, lr=args.lr,
                                     batch_size=args.batch_size, max_len=args.max_len, warmup_ratio=args.plain_warmup_ratio,
                                     clip_norm=args.plain_clip_norm, head_dropout=args.plain_head_dropout, head_init=args.plain_head_init,
                                     order=args.plain_order)
                else:
                    run_dir = args.work / "runs" / f"ptm-{pool}-{args.tag or 'base'}-s{seed}"
                    run = ptm_run(checkpoint, train_file, args.dev, run_dir, pool=pool, seed=seed, epochs=args.epochs, lr=args.lr,
                                  batch_size=args.batch_size, max_len=args.max_len, threads=args.threads, extra=extra, patches=patches)
                runs.append(run)
                print(f"  {side:5} pool {pool:7} seed {seed}: dev accuracy {100 * run['accuracy']:.2f}% "
                      f"({run['steps']} steps, {run['train_seconds']} s)" + (f"  [{run['note']}]" if run.get("note") else ""), flush=True)
            results.setdefault(pool, {})[side] = runs

    print(f"\n| pool | side | {' | '.join(f'seed {s}' for s in seeds)} | mean +- std |")
    print(f"| --- | --- | {' | '.join('---' for _ in seeds)} | --- |")
    for pool, by_side in results.items():
        for side, runs in by_side.items():
            cells = " | ".join(f"{100 * r['accuracy']:.2f}" for r in runs)
            print(f"| {pool} | {side} | {cells} | {summary([r['accuracy'] for r in runs])} |")
    if "plain" in sides and "ptm" in sides:
        plain_by_pool = {pool: statistics.mean(r["accuracy"] for r in by_side["plain"]) for pool, by_side in results.items() if "plain" in by_side}
        for pool, by_side in results.items():
            mine = statistics.mean(r["accuracy"] for r in by_side["ptm"])
            for against, theirs in plain_by_pool.items():
                if pool in (against, "default"):
                    print(f"ptm ({pool}) - plain ({against}): {100 * (mine - theirs):+.2f} points")
    if args.json:
        record = {"tag": args.tag, "model": str(args.model), "ptm_flags": extra, "ptm_patches": patches, "train_size": args.train_size, "seeds": seeds,
                  "plain": {"warmup_ratio": args.plain_warmup_ratio, "clip_norm": args.plain_clip_norm,
                            "head_dropout": args.plain_head_dropout, "head_init": args.plain_head_init, "order": args.plain_order},
                  "results": results}
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
