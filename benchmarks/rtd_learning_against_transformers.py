"""Does ELECTRA learn the same way in ptm and in transformers? Both pairs trained on the same real-text
batches with the same schedule, their generator accuracy and discriminator loss printed side by side.

    python3 benchmarks/rtd_learning_against_transformers.py --shards runs/e18/shards-enwiki-8k --steps 300

ptm: ``ElectraForPreTraining`` (generator and discriminator in one module). transformers:
``ElectraForMaskedLM`` + ``ElectraForPreTraining`` with the embeddings shared and the generator's decoder
tied to them, as the reference trains them. Each step: 15% of a batch of 128-token windows become
``[MASK]``, the generator's softmax is sampled there (no gradient through the draw), the discriminator
labels every token, loss = generator MLM + ``--disc-weight`` x discriminator BCE, AdamW, clip 1.0, linear
warmup and decay. fp32; dropout as both libraries default (0.1). A learning discriminator takes its loss
below the prior's entropy and catches replaced tokens; one that has learned nothing sits at the prior.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from _text_windows import MASK, shard_tokens, windows

from ptmcli.models import electra


def build(side: str, config: electra.ElectraConfig):
    """(forward(inputs, labels) -> (loss, generator hits, masked count, disc loss, caught, replaced), parameters)."""
    if side == "ptm":
        model = electra.ElectraForPreTraining(config).train()

        def ptm_forward(inputs, labels, weight):
            out = model(inputs, None, torch.ones_like(inputs), mlm_labels=labels)
            loss = electra.replaced_token_loss(out, out["mlm_count"], out["disc_count"], weight)
            disc = out["disc_loss_sum"].detach() / out["disc_count"]
            return (loss, int(out["mlm_correct"]), int(out["mlm_count"]), float(disc),
                    int(out["disc_correct_replaced"]), int(out["replaced_count"]))
        return ptm_forward, list(model.parameters())
    import transformers

    common = {"vocab_size": config.vocab_size, "embedding_size": config.embedding_size, "num_hidden_layers": config.num_layers}
    discriminator = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        **common, hidden_size=config.hidden_size, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size)).train()
    generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        **common, hidden_size=config.generator_hidden_size, num_attention_heads=config.generator_heads,
        intermediate_size=config.generator_intermediate_size)).train()
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight

    def hf_forward(inputs, labels, weight):
        attention = torch.ones_like(inputs)
        masked = labels != -100
        gen = generator(input_ids=inputs, attention_mask=attention, labels=labels)
        with torch.no_grad():
            sampled = torch.multinomial(gen.logits[masked].float().softmax(-1), 1).squeeze(1)
        corrupted = inputs.clone()
        corrupted[masked] = sampled
        replaced = corrupted != torch.where(masked, labels, inputs)
        disc = discriminator(input_ids=corrupted, attention_mask=attention, labels=replaced.long())
        hits = int((gen.logits[masked].argmax(-1) == labels[masked]).sum())
        caught = int(((disc.logits.detach() > 0) & replaced).sum())
        return (gen.loss + weight * disc.loss, hits, int(masked.sum()), float(disc.loss.detach()), caught, int(replaced.sum()))
    unique = {id(p): p for p in [*generator.parameters(), *discriminator.parameters()]}
    return hf_forward, list(unique.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--preset", default="electra-tiny")
    parser.add_argument("--generator-size", type=float, default=None)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--disc-weight", type=float, default=50.0)
    parser.add_argument("--report-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokens, vocab = shard_tokens(args.shards)
    overrides = {"vocab_size": vocab}
    if args.generator_size is not None:
        overrides["generator_size"] = args.generator_size
    config = electra.preset_config(args.preset, **overrides)
    sides = {}
    for side in ("ptm", "transformers"):
        torch.manual_seed(0)
        forward, parameters = build(side, config)
        optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01, eps=1e-6)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
            (s + 1) / args.warmup, max(0.0, (args.steps - s) / max(1, args.steps - args.warmup))))
        sides[side] = (forward, parameters, optimizer, schedule, dict.fromkeys(("hits", "masked", "disc", "caught", "replaced", "n"), 0))
    rng = np.random.default_rng(0)
    print(f"{args.preset} (generator {config.generator_hidden_size} wide), vocab {config.vocab_size}, lr {args.lr}, "
          f"warmup {args.warmup}, disc weight {args.disc_weight}, batch {args.batch} x 128; per side over the last "
          f"{args.report_every} steps:")
    print("step\tside\tgenerator acc\tdisc loss\tprior entropy\treplaced caught")
    for step in range(1, args.steps + 1):
        ids = windows(tokens, rng, args.batch, 128)
        chosen = torch.from_numpy(rng.random(ids.shape) < 0.15)
        chosen[:, 0] = chosen[:, -1] = False
        inputs, labels = torch.where(chosen, MASK, ids), torch.where(chosen, ids, -100)
        for side, (forward, parameters, optimizer, schedule, sums) in sides.items():
            loss, hits, masked, disc, caught, replaced = forward(inputs, labels, args.disc_weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            for key, value in zip(("hits", "masked", "disc", "caught", "replaced", "n"), (hits, masked, disc, caught, replaced, 1)):
                sums[key] += value
            if step % args.report_every == 0:
                share = sums["replaced"] / (sums["n"] * ids.numel())
                prior = -(share * math.log(share) + (1 - share) * math.log(1 - share)) if 0 < share < 1 else 0.0
                print(f"{step}\t{side}\t{sums['hits'] / sums['masked']:.4f}\t{sums['disc'] / sums['n']:.4f}\t{prior:.4f}\t"
                      f"{sums['caught'] / max(1, sums['replaced']):.4f}", flush=True)
                sums.update(dict.fromkeys(sums, 0))


if __name__ == "__main__":
    main()
