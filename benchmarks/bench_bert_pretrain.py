"""Training-step throughput: ptm's BertForPreTraining vs transformers' at the same configuration.

Both models get the same weights and the same batch (15% of tokens masked by
ptm's ``mask_tokens``, NSP labels), train with AdamW (ptm: ``fused=True``,
transformers: torch's default), and are timed alternately in one process, one
step each per round, so load from other processes hits both alike. Reports the
median step time, tokens/s, the ratio, and MFU against this machine's fp32
matmul peak measured here.

    python benchmarks/bench_bert_pretrain.py                 # the headline figure
    python benchmarks/bench_bert_pretrain.py --ablations     # what each choice buys
    python benchmarks/bench_bert_pretrain.py --compile       # torch.compile as well
    python benchmarks/bench_bert_pretrain.py --device cuda --layers 12 --hidden 768 --heads 12 --json bert.json

On CUDA both libraries are also timed under bf16 autocast, and MFU is against
the GPU's datasheet peak for the row's precision (ptm's table of known GPUs).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from unittest import mock

import torch
import torch.nn.functional as F
from _timing import MatmulProbe, device_setup, time_alternately, write_json

from ptmcli.models import bert as ptm_bert
from ptmcli.models import layers as ptm_layers
from ptmcli.objectives.mlm import mask_tokens


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
    p.add_argument("--ablations", action="store_true", help="also time ptm with each optimisation undone")
    p.add_argument("--compile", action="store_true", help="also time ptm under torch.compile")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args()


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Full-length ``[CLS] A [SEP] B [SEP]`` rows of random ids, 15% masked, random NSP labels."""
    gen = torch.Generator().manual_seed(0)
    cls_id, sep_id, mask_id = 101, 102, 103
    ids = torch.randint(1000, args.vocab, (args.batch, args.seq_len), generator=gen)
    half = args.seq_len // 2
    ids[:, 0], ids[:, half], ids[:, -1] = cls_id, sep_id, sep_id
    special = (ids == cls_id) | (ids == sep_id)
    types = torch.zeros_like(ids)
    types[:, half + 1 :] = 1
    masked, labels = mask_tokens(ids, special, args.vocab, mask_id, gen, special_ids=(0, 100, 101, 102, 103))
    return {
        "input_ids": masked,
        "token_type_ids": types,
        "attention_mask": torch.ones_like(ids),
        "mlm_labels": labels,
        "nsp_labels": torch.randint(0, 2, (args.batch,), generator=gen),
    }


def hf_step(model, optimizer, batch, autocast: bool = False, device_type: str = "cpu") -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["mlm_labels"],
            next_sentence_label=batch["nsp_labels"],
        )
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool = False, device_type: str = "cpu") -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)
    loss = ptm_bert.pretraining_loss(out, out["mlm_count"], out["nsp_count"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# --- ablations: each undoes one optimisation for the duration of a step ---------------------


def reference_linear_cross_entropy(hidden, weight, bias, targets):
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.float(), targets, reduction="sum"), (logits.argmax(-1) == targets).sum()


def sdpa_with_dropout(q, k, v, mask, p):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def stock_dropout(x, p, training):
    return F.dropout(x, p, training)


def patched(step: Callable[[], None], *patches) -> Callable[[], None]:
    def run() -> None:
        with ExitStack() as stack:
            for target, name, value in patches:
                stack.enter_context(mock.patch.object(target, name, value))
            step()

    return run


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from transformers import BertConfig as HFBertConfig
    from transformers import BertForPreTraining as HFBertForPreTraining

    torch.manual_seed(0)
    config = ptm_bert.BertConfig(args.vocab, args.hidden, args.layers, args.heads, 4 * args.hidden)
    hf_config = HFBertConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
    )
    device, sync, datasheet_bf16, datasheet_fp32 = device_setup(args.device)
    hf_model = HFBertForPreTraining(hf_config).train()
    model = ptm_bert.BertForPreTraining(config).train()
    model.load_state_dict(ptm_bert.state_dict_from_hf(hf_model.state_dict()))
    hf_model.to(device)
    model.to(device)
    hf_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = {k: v.to(device) for k, v in make_batch(args).items()}
    tokens = args.batch * args.seq_len
    masked = int((batch["mlm_labels"] != -100).sum())

    kind = device.type
    variants: dict[str, Callable[[], None]] = {
        "transformers fp32": lambda: hf_step(hf_model, hf_opt, batch),
        "ptm fp32": lambda: ptm_step(model, opt, batch, device_type=kind),
    }
    if not args.no_bf16:
        if kind == "cuda":  # on a GPU both run bf16: the comparison that matters there
            variants["transformers bf16 autocast"] = lambda: hf_step(hf_model, hf_opt, batch, autocast=True, device_type=kind)
        variants["ptm bf16 autocast"] = lambda: ptm_step(model, opt, batch, autocast=True, device_type=kind)
    if args.ablations:
        base = variants["ptm fp32"]
        plain_opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        padded = dict(batch, attention_mask=batch["attention_mask"].clone())
        padded["attention_mask"][0, -1] = 0
        every_position = dict(batch, mlm_labels=torch.where(batch["mlm_labels"] == -100, batch["input_ids"], batch["mlm_labels"]))
        variants.update(
            {
                "ptm - F.dropout (stock CPU dropout)": patched(base, (ptm_layers, "dropout", stock_dropout)),
                "ptm - SDPA for attention dropout": patched(base, (ptm_layers, "attention_with_dropout", sdpa_with_dropout)),
                "ptm - unfused MLM loss": patched(base, (ptm_bert, "linear_cross_entropy", reference_linear_cross_entropy)),
                "ptm - AdamW default (not fused)": lambda: ptm_step(model, plain_opt, batch),
                "ptm - padding mask in attention": lambda: ptm_step(model, opt, padded),
                "ptm - MLM head on every position": lambda: ptm_step(model, opt, every_position),
            }
        )
    if args.compile:
        compiled = ptm_bert.BertForPreTraining(config).train().to(device)
        compiled.load_state_dict(model.state_dict())
        compiled_opt = torch.optim.AdamW(compiled.parameters(), lr=1e-4, fused=True)
        compiled.compile()
        start = time.perf_counter()
        ptm_step(compiled, compiled_opt, batch)
        print(f"torch.compile: first step (compilation) took {time.perf_counter() - start:.1f} s")
        variants["ptm fp32 torch.compile"] = lambda: ptm_step(compiled, compiled_opt, batch)

    probe = MatmulProbe(device=args.device)
    variants["fp32 matmul 4096^3 (peak probe)"] = probe
    bf16_probe = None if args.no_bf16 else MatmulProbe(dtype=torch.bfloat16, device=args.device)
    if bf16_probe is not None:
        variants["bf16 matmul 4096^3 (peak probe)"] = bf16_probe
    print(
        f"BERT L{args.layers} H{args.hidden} A{args.heads} I{4 * args.hidden} vocab {args.vocab}, "
        f"batch {args.batch} x seq {args.seq_len} ({masked} masked tokens), {args.threads} threads, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}"
    )

    medians = time_alternately(variants, args.warmup, args.steps, sync)
    peak = probe.flops() / medians.pop("fp32 matmul 4096^3 (peak probe)")
    print(f"fp32 matmul peak (median of the probes between steps): {peak / 1e9:.1f} GFLOP/s")
    bf16_peak = None
    if bf16_probe is not None:
        bf16_peak = bf16_probe.flops() / medians.pop("bf16 matmul 4096^3 (peak probe)")
        print(f"bf16 matmul peak (same way): {bf16_peak / 1e9:.1f} GFLOP/s (MFU of the bf16 row)")

    model_flops = model.flops_per_token(args.seq_len, mask_fraction=masked / tokens) * tokens
    hf_executed = model.flops_per_token(args.seq_len, mask_fraction=1.0) * tokens
    if datasheet_bf16:
        peak, bf16_peak = datasheet_fp32, datasheet_bf16
        print(f"MFU against the datasheet dense peaks: bf16 {bf16_peak / 1e12:.0f}, fp32 {peak / 1e12:.0f} TFLOP/s")
    reference = medians["transformers fp32"]
    figures = {"model": f"bert L{args.layers} H{args.hidden} A{args.heads}", "seq_len": args.seq_len, "batch": args.batch,
               "device": str(device), "variants": {}}
    print(f"\n{'variant':40s} {'s/step':>8s} {'tokens/s':>9s} {'vs HF':>6s} {'MFU':>6s}")
    for name, seconds in medians.items():
        mfu = model_flops / seconds / (bf16_peak if "bf16" in name else peak)
        print(f"{name:40s} {seconds:8.3f} {tokens / seconds:9.0f} {reference / seconds:5.2f}x {100 * mfu:5.1f}%")
        figures["variants"][name] = {"s_per_step": seconds, "tokens_per_s": tokens / seconds, "mfu": mfu}
    write_json(args.json, figures)
    print(
        f"\nMFU counts model flops ({model_flops / 1e9:.1f} GFLOP/step: MLM head on the masked tokens only). "
        f"transformers executes {hf_executed / 1e9:.1f} GFLOP/step (MLM head on every token): "
        f"{100 * hf_executed / reference / peak:.1f}% of peak."
    )
    print(f"speed-up ptm / transformers (fp32): {reference / medians['ptm fp32']:.2f}x")
    if "ptm bf16 autocast" in medians:
        print(f"speed-up ptm bf16 autocast / ptm fp32: {medians['ptm fp32'] / medians['ptm bf16 autocast']:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
