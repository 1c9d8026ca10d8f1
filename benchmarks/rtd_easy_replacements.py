"""Can the ELECTRA discriminator learn at all? Replaced-token detection with the generator's samples or
with uniform random tokens (detectable by their rarity alone), from the same random init.

    python3 benchmarks/rtd_easy_replacements.py --shards runs/budget/shards-enwiki-8k --replacements uniform
    python3 benchmarks/rtd_easy_replacements.py --shards runs/budget/shards-enwiki-8k --replacements generator

Prints the discriminator's loss beside the entropy of the replaced fraction (what predicting the prior
everywhere scores): a loss below it means the discriminator has learned something.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pyarrow as pa
import torch

from ptmcli.models.electra import ElectraForPreTraining, preset_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--replacements", choices=("uniform", "generator"), default="uniform")
    parser.add_argument("--preset", default="electra-mini")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--mask-id", type=int, default=4, help="[MASK]'s id in the shards' tokenizer")
    parser.add_argument("--cls-id", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = sorted(Path(args.shards).glob("part-*.arrow"))  # every shard file: passages are drawn from all the text
    ids = torch.tensor([i for part in parts for row in pa.ipc.open_stream(str(part)).read_all().column("input_ids").to_pylist()
                        for i in row])
    manifest_vocab = int(ids.max()) + 1
    model = ElectraForPreTraining(preset_config(args.preset, vocab_size=manifest_vocab))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    draws = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        starts = torch.randint(0, len(ids) - 130, (32,), generator=draws)
        tokens = torch.stack([ids[s:s + 128] for s in starts])
        tokens[:, 0] = args.cls_id
        chosen = torch.rand(tokens.shape, generator=draws) < 0.15
        chosen[:, 0] = False
        labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
        inputs = tokens.clone()
        inputs[chosen] = args.mask_id
        extra = {}
        if args.replacements == "uniform":
            extra["replacements"] = torch.randint(5, manifest_vocab, (int(chosen.sum()),), generator=draws)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(inputs, None, torch.ones_like(inputs), labels, **extra)
        disc = out["disc_loss_sum"] / out["disc_count"]
        loss = out["mlm_loss_sum"] / out["mlm_count"] + 50 * disc
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            p = float(out["replaced_count"] / out["disc_count"])
            prior = -(p * math.log(p) + (1 - p) * math.log(1 - p))
            print(f"step {step}\tdisc_loss {disc.item():.3f}\tprior entropy {prior:.3f}\t"
                  f"generator acc {float(out['mlm_correct'] / out['mlm_count']):.3f}", flush=True)


if __name__ == "__main__":
    main()
