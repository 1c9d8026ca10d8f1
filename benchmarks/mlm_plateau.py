"""Has a masked LM left the unigram stage? Its accuracy split by what the input showed at each predicted
position: ``[MASK]``, a random token, or the original token kept.

BERT's 80/10/10 masking leaves 10% of the predicted tokens visible in the input, so a model that has only
learned to copy its input there and to predict the most frequent token elsewhere already scores about
0.1 + 0.9 x (the share of that token) overall: more than the unigram stage's accuracy, without using any
context. Accuracy at the ``[MASK]`` positions alone is what says whether the model predicts from context;
ELECTRA's generator, which sees only ``[MASK]`` there, is scored on exactly those.

    python3 benchmarks/mlm_plateau.py --shards runs/e18/shards-enwiki-8k --preset bert-tiny --steps 4000
    python3 benchmarks/mlm_plateau.py --shards runs/e18/shards-enwiki-8k --preset bert-tiny --all-mask

Trains ptm's BERT (MLM only, AdamW, linear warmup and decay, clip 1.0, bf16 autocast) on random
128-token windows of the shards and prints, every ``--eval-every`` steps, the accuracy at each kind of
position over a fixed set of held-out windows (from the shards' last 10%), with dropout off.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _text_windows import FIRST_WORD, MASK, shard_tokens, windows

from ptmcli.models.bert import BertForPreTraining, preset_config


def mask(ids: torch.Tensor, rng: np.random.Generator, vocab: int, all_mask: bool):
    """(inputs, labels, kind of each predicted row: 0 [MASK], 1 random, 2 kept), BERT's 15% and 80/10/10."""
    chosen = torch.from_numpy(rng.random(ids.shape) < 0.15)
    chosen[:, 0] = chosen[:, -1] = False
    action = torch.zeros(ids.shape) if all_mask else torch.from_numpy(rng.random(ids.shape))
    random_ids = torch.from_numpy(rng.integers(FIRST_WORD, vocab, ids.shape))
    inputs = torch.where(chosen & (action < 0.8), MASK, torch.where(chosen & (action < 0.9), random_ids, ids))
    kind = torch.where(action < 0.8, 0, torch.where(action < 0.9, 1, 2))[chosen]
    return inputs, torch.where(chosen, ids, -100), kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--preset", default="bert-tiny")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=None, help="default: a tenth of --steps")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--all-mask", action="store_true", help="every chosen token becomes [MASK] (as ELECTRA's generator)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    tokens, vocab = shard_tokens(args.shards)
    split = int(len(tokens) * 0.9)
    train, held_out = tokens[:split], tokens[split:]
    rng, eval_rng = np.random.default_rng(0), np.random.default_rng(1)
    evaluation = [mask(windows(held_out, eval_rng, args.batch, 128), eval_rng, vocab, args.all_mask)
                  for _ in range(args.eval_batches)]
    model = BertForPreTraining(preset_config(args.preset, vocab_size=vocab)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, eps=1e-6)
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / max(1, args.steps - warmup))))
    print(f"{args.preset}, vocab {vocab}, {'all [MASK]' if args.all_mask else '80/10/10'} masking, lr {args.lr}, "
          f"warmup {warmup}, batch {args.batch} x 128")
    commonest = int(np.bincount(train[train >= FIRST_WORD]).argmax())
    targets = torch.cat([labels[labels != -100] for _, labels, _ in evaluation])
    print(f"the unigram stage (always predicting token {commonest}, the commonest): "
          f"{float((targets == commonest).float().mean()):.4f} of the held-out targets")
    print("step\tacc [MASK]\tacc random\tacc kept\tacc overall")
    for step in range(1, args.steps + 1):
        inputs, labels, _ = mask(windows(train, rng, args.batch, 128), rng, vocab, args.all_mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(inputs, None, torch.ones_like(inputs), mlm_labels=labels)
        loss = out["mlm_loss_sum"] / out["mlm_count"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            hits, kinds = [], []
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                for inputs, labels, kind in evaluation:
                    logits = model(inputs, None, torch.ones_like(inputs), mlm_labels=labels)["mlm_logits"]
                    hits.append(logits.argmax(-1) == labels[labels != -100])
                    kinds.append(kind)
            model.train()
            hit, kind = torch.cat(hits).float(), torch.cat(kinds)
            shares = [f"{float(hit[kind == k].mean()):.4f}" if bool((kind == k).any()) else "-" for k in (0, 1, 2)]
            print(f"{step}\t" + "\t".join(shares) + f"\t{float(hit.mean()):.4f}", flush=True)


if __name__ == "__main__":
    main()
