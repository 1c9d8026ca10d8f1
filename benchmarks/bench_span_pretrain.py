"""Training-step throughput of SpanBERT (``--objective span+sbo``): ptm's BertForPreTraining with the span
boundary head vs transformers' BertForPreTraining at the same configuration.

transformers has no span boundary objective, so its side is what a user of it
would write: ``BertForPreTraining``'s MLM loss plus the same boundary head in
plain PyTorch over its top hidden states (boundary states and the offset
embedding through two Linear -> GELU -> LayerNorm layers into the tied word
embeddings, full logits at every masked token). Both get the same weights and
the same batch (one segment, spans of 3 tokens masked every 20 tokens, 15%),
train with AdamW (ptm: ``fused=True``, transformers: torch's default), and are
timed alternately in one process (``_timing.time_alternately``), so load from
other processes hits both alike. Reports the median step time, tokens/s and
the ratio.

    python benchmarks/bench_span_pretrain.py                      # bert-mini's shape
    python benchmarks/bench_span_pretrain.py --layers 12 --hidden 768 --heads 12   # bert-base's
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from _timing import print_ratios, time_alternately
from torch import nn

from ptmcli.models import bert as ptm_bert
from ptmcli.models.attached_heads import attach_head
from ptmcli.models.span_boundary import span_boundary_head

SPAN, EVERY = 3, 20  # 3 of every 20 tokens: 15% masked


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (median reported)")
    p.add_argument("--no-bf16", action="store_true", help="skip ptm under bf16 autocast")
    return p.parse_args()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """``[CLS] block [SEP]`` rows of random ids; spans of SPAN tokens every EVERY tokens become [MASK], and each
    masked token's boundary columns (just outside its span) and offset in it are given for the SBO head."""
    gen = torch.Generator().manual_seed(0)
    cls_id, sep_id, mask_id = 101, 102, 103
    ids = torch.randint(1000, args.vocab, (args.batch, args.seq_len), generator=gen)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    labels = torch.full_like(ids, -100)
    left, right, offset = (torch.zeros_like(ids) for _ in range(3))
    for start in range(2, args.seq_len - SPAN - 1, EVERY):
        for i in range(SPAN):
            labels[:, start + i] = ids[:, start + i]
            left[:, start + i], right[:, start + i], offset[:, start + i] = start - 1, start + SPAN, i
    inputs = torch.where(labels != -100, torch.full_like(ids, mask_id), ids)
    return {"input_ids": inputs, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids),
            "mlm_labels": labels, "sbo_left": left, "sbo_right": right, "sbo_offset": offset}


class PlainSpanBoundary(nn.Module):
    """The span boundary head as one writes it on top of transformers: gather, MLP, full logits, mean loss."""

    def __init__(self, hidden: int, vocab: int, max_offset: int):
        super().__init__()
        self.offsets = nn.Embedding(max_offset, hidden)
        self.dense1, self.norm1 = nn.Linear(3 * hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.dense2, self.norm2 = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=1e-12)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, hidden, decoder, labels, left, right, offset) -> torch.Tensor:
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        x = torch.cat([hidden[rows, left[rows, cols]], hidden[rows, right[rows, cols]], self.offsets(offset[rows, cols])], -1)
        x = self.norm2(F.gelu(self.dense2(self.norm1(F.gelu(self.dense1(x))))))
        return F.cross_entropy(F.linear(x, decoder, self.bias), labels[rows, cols])


def hf_step(model, head, optimizer, batch) -> None:
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"],
                output_hidden_states=True)
    # BertForPreTraining computes a loss only given NSP labels too; its MLM loss, as BertForMaskedLM computes it.
    mlm = F.cross_entropy(out.prediction_logits.reshape(-1, out.prediction_logits.shape[-1]), batch["mlm_labels"].reshape(-1))
    sbo = head(out.hidden_states[-1], model.bert.embeddings.word_embeddings.weight, batch["mlm_labels"],
               batch["sbo_left"], batch["sbo_right"], batch["sbo_offset"])
    (mlm + sbo).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool = False) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
    # What the span+sbo task optimises: mean MLM + mean SBO cross-entropy over the masked tokens.
    loss = (out["mlm_loss_sum"] + out["sbo_loss_sum"]) / out["mlm_count"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden)
    hf_model = transformers.BertForPreTraining(hf_config).train()
    config = ptm_bert.BertConfig(args.vocab, args.hidden, args.layers, args.heads, 4 * args.hidden)
    model = ptm_bert.BertForPreTraining(config).train()
    model.load_state_dict(ptm_bert.state_dict_from_hf(hf_model.state_dict()))
    model.tie_weights()
    attach_head(model, "sbo", span_boundary_head(model))
    hf_head = PlainSpanBoundary(args.hidden, args.vocab, model.sbo.offsets.num_embeddings).train()
    hf_head.load_state_dict(model.sbo.state_dict())  # same names and shapes: the same weights
    hf_opt = torch.optim.AdamW([*hf_model.parameters(), *hf_head.parameters()], lr=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = make_batch(args)
    tokens = args.batch * args.seq_len

    variants = {
        "transformers fp32": lambda: hf_step(hf_model, hf_head, hf_opt, batch),
        "ptm fp32": lambda: ptm_step(model, opt, batch),
    }
    if not args.no_bf16:
        variants["ptm bf16 autocast"] = lambda: ptm_step(model, opt, batch, autocast=True)
    print(f"BERT span+sbo L{args.layers} H{args.hidden} A{args.heads} I{4 * args.hidden} vocab {args.vocab}, "
          f"batch {args.batch} x seq {args.seq_len} ({int((batch['mlm_labels'] != -100).sum())} masked tokens), "
          f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print_ratios(time_alternately(variants, args.warmup, args.steps), tokens)


if __name__ == "__main__":
    main()
