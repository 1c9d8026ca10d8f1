"""Training-step throughput: ptm's AlbertForPreTraining vs transformers' at the same configuration.

Both models get the same weights and the same MLM + SOP batch (15% of tokens
masked by ptm's ``mask_tokens``, sentence-order labels), train with AdamW
(ptm: ``fused=True``, transformers: torch's default), and are timed
alternately in one process, one step each per round, so load from other
processes hits both alike (``_timing.time_alternately``). Reports the median
step time, tokens/s and the ratio.

    python benchmarks/bench_albert_pretrain.py                      # albert-mini's shape
    python benchmarks/bench_albert_pretrain.py --layers 12 --hidden 768 --heads 12   # albert-base's
"""

from __future__ import annotations

import argparse
import os

import torch
from _timing import print_ratios, time_alternately

from ptmcli.models import albert as ptm_albert
from ptmcli.objectives.mlm import mask_tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--embedding", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30000)
    p.add_argument("--share", choices=("all", "none"), default="all", help="what transformers can hold: one group or one per layer")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (median reported)")
    p.add_argument("--no-bf16", action="store_true", help="skip ptm under bf16 autocast")
    return p.parse_args()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Full-length ``[CLS] A [SEP] B [SEP]`` rows of random ids, 15% masked, random sentence-order labels."""
    gen = torch.Generator().manual_seed(0)
    pad_id, cls_id, sep_id, mask_id = 0, 2, 3, 4
    ids = torch.randint(5, args.vocab, (args.batch, args.seq_len), generator=gen)
    half = args.seq_len // 2
    ids[:, 0], ids[:, half], ids[:, -1] = cls_id, sep_id, sep_id
    special = (ids == cls_id) | (ids == sep_id)
    types = torch.zeros_like(ids)
    types[:, half + 1:] = 1
    masked, labels = mask_tokens(ids, special, args.vocab, mask_id, gen, special_ids=(pad_id, cls_id, sep_id, mask_id))
    return {"input_ids": masked, "token_type_ids": types, "attention_mask": torch.ones_like(ids), "mlm_labels": labels,
            "sop_labels": torch.randint(0, 2, (args.batch,), generator=gen)}


def hf_step(model, optimizer, batch) -> None:
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"],
                labels=batch["mlm_labels"], sentence_order_label=batch["sop_labels"])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool = False) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
    # The loss transformers computes: mean MLM cross-entropy + mean SOP cross-entropy.
    loss = out["mlm_loss_sum"] / out["mlm_count"] + out["sop_loss_sum"] / out["sop_count"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.AlbertConfig(
        vocab_size=args.vocab, embedding_size=args.embedding, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, num_hidden_groups=1 if args.share == "all" else args.layers,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    hf_model = transformers.AlbertForPreTraining(hf_config).train()
    config = ptm_albert.AlbertConfig(vocab_size=args.vocab, embedding_size=args.embedding, hidden_size=args.hidden,
                                     num_layers=args.layers, num_heads=args.heads, intermediate_size=4 * args.hidden, share=args.share)
    model = ptm_albert.AlbertForPreTraining(config).train()
    model.load_state_dict(ptm_albert.state_dict_from_hf(hf_model.state_dict()), strict=True)
    model.tie_weights()
    hf_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = make_batch(args)
    tokens = args.batch * args.seq_len

    variants = {
        "transformers fp32": lambda: hf_step(hf_model, hf_opt, batch),
        "ptm fp32": lambda: ptm_step(model, opt, batch),
    }
    if not args.no_bf16:
        variants["ptm bf16 autocast"] = lambda: ptm_step(model, opt, batch, autocast=True)
    print(f"ALBERT L{args.layers} H{args.hidden} A{args.heads} E{args.embedding} I{4 * args.hidden} share {args.share} "
          f"vocab {args.vocab}, batch {args.batch} x seq {args.seq_len} ({int((batch['mlm_labels'] != -100).sum())} masked tokens), "
          f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print_ratios(time_alternately(variants, args.warmup, args.steps), tokens)


if __name__ == "__main__":
    main()
