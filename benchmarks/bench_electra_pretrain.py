"""Training-step throughput of ELECTRA (``--objective rtd``): ptm's ElectraForPreTraining (generator and
discriminator in one module) vs transformers' ElectraForMaskedLM (generator) + ElectraForPreTraining
(discriminator) sharing their embeddings, at the same configuration.

Each step does the same work on both sides: the batch's masked tokens (15%,
all [MASK], as the reference) go through the generator, a token is sampled from
its softmax at each masked position (no gradient through the draw), the
discriminator labels every token replaced or original, and the loss
``generator MLM + 50 x discriminator BCE`` is back-propagated into one AdamW
step over both networks (ptm: ``fused=True``, transformers: torch's default).
The two sides are timed alternately in one process (``_timing.time_alternately``),
so load from other processes hits both alike. Reports the median step time,
tokens/s and the ratio.

    python benchmarks/bench_electra_pretrain.py                   # electra-small's shape
    python benchmarks/bench_electra_pretrain.py --layers 12 --hidden 768 --heads 12 --embedding 768 --generator-size 0.333
"""

from __future__ import annotations

import argparse
import os

import torch
from _timing import print_ratios, time_alternately

from ptmcli.models import electra as ptm_electra
from ptmcli.objectives.mlm import mask_tokens

DISC_WEIGHT = 50.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--embedding", type=int, default=128)
    p.add_argument("--generator-size", type=float, default=0.25)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (median reported)")
    p.add_argument("--no-bf16", action="store_true", help="skip ptm under bf16 autocast")
    return p.parse_args()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Full-length ``[CLS] block [SEP]`` rows of random ids, 15% of them [MASK]."""
    gen = torch.Generator().manual_seed(0)
    cls_id, sep_id, mask_id = 101, 102, 103
    ids = torch.randint(1000, args.vocab, (args.batch, args.seq_len), generator=gen)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    special = (ids == cls_id) | (ids == sep_id)
    masked, labels = mask_tokens(ids, special, args.vocab, mask_id, gen, replace_prob=1.0, random_prob=0.0,
                                 special_ids=(0, 100, 101, 102, 103))
    return {"input_ids": masked, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
            "mlm_labels": labels}


def hf_step(generator, discriminator, optimizer, batch) -> None:
    inputs, labels, mask = batch["input_ids"], batch["mlm_labels"], batch["attention_mask"]
    gen = generator(input_ids=inputs, token_type_ids=batch["token_type_ids"], attention_mask=mask, labels=labels)
    masked = labels != -100
    with torch.no_grad():
        sampled = torch.multinomial(gen.logits[masked].float().softmax(-1), 1).squeeze(1)
    corrupted = inputs.clone()
    corrupted[masked] = sampled
    original = torch.where(masked, labels, inputs)
    disc = discriminator(input_ids=corrupted, token_type_ids=batch["token_type_ids"], attention_mask=mask,
                         labels=(corrupted != original).long())
    (gen.loss + DISC_WEIGHT * disc.loss).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool = False) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
    ptm_electra.replaced_token_loss(out, out["mlm_count"], out["disc_count"], DISC_WEIGHT).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    config = ptm_electra.ElectraConfig(vocab_size=args.vocab, embedding_size=args.embedding, hidden_size=args.hidden,
                                       num_layers=args.layers, num_heads=args.heads, intermediate_size=4 * args.hidden,
                                       generator_size=args.generator_size)
    model = ptm_electra.ElectraForPreTraining(config).train()
    common = {"vocab_size": args.vocab, "embedding_size": args.embedding, "num_hidden_layers": args.layers,
              "max_position_embeddings": config.max_position_embeddings}
    disc_config = transformers.ElectraConfig(**common, hidden_size=args.hidden, num_attention_heads=args.heads,
                                             intermediate_size=4 * args.hidden)
    gen_config = transformers.ElectraConfig(**common, hidden_size=config.generator_hidden_size,
                                            num_attention_heads=config.generator_heads,
                                            intermediate_size=config.generator_intermediate_size)
    discriminator = transformers.ElectraForPreTraining(disc_config).train()
    generator = transformers.ElectraForMaskedLM(gen_config).train()
    # Shared embeddings, as the reference: the generator reads the discriminator's, its decoder tied to them.
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
    parameters = list({id(p): p for p in [*generator.parameters(), *discriminator.parameters()]}.values())
    hf_opt = torch.optim.AdamW(parameters, lr=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = make_batch(args)
    tokens = args.batch * args.seq_len
    ptm_count = sum(p.numel() for p in model.parameters())
    hf_count = sum(p.numel() for p in parameters)

    variants = {
        "transformers fp32": lambda: hf_step(generator, discriminator, hf_opt, batch),
        "ptm fp32": lambda: ptm_step(model, opt, batch),
    }
    if not args.no_bf16:
        variants["ptm bf16 autocast"] = lambda: ptm_step(model, opt, batch, autocast=True)
    print(f"ELECTRA L{args.layers} H{args.hidden} A{args.heads} E{args.embedding} generator H{config.generator_hidden_size} "
          f"A{config.generator_heads} vocab {args.vocab} ({ptm_count / 1e6:.2f}M parameters in ptm, {hf_count / 1e6:.2f}M in "
          f"transformers), batch {args.batch} x seq {args.seq_len} ({int((batch['mlm_labels'] != -100).sum())} masked tokens), "
          f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print_ratios(time_alternately(variants, args.warmup, args.steps), tokens)


if __name__ == "__main__":
    main()
