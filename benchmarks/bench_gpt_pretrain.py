"""Training-step throughput: ptm's GPTForCausalLM vs transformers' GPT2LMHeadModel, same configuration.

Both models get the same weights (converted with ptm's key map) and the same
batch of full-length blocks, train with AdamW (ptm: ``fused=True``,
transformers: torch's default), and are timed alternately in one process, one
step each per round, so load from other processes hits both alike. Reports the
median step time, tokens/s, the ratio and MFU against the matmul peak measured
in the same rounds. Dropout is 0.1 everywhere, as both libraries default to.

    python benchmarks/bench_gpt_pretrain.py                  # L4 H256 A4, seq 128, batch 32, vocab 30522
    python benchmarks/bench_gpt_pretrain.py --vocab 50257    # GPT-2's vocabulary
    python benchmarks/bench_gpt_pretrain.py --device cuda --layers 12 --hidden 768 --heads 12 --vocab 50257 --seq-len 1024

On CUDA both libraries are also timed under bf16 autocast, and MFU is against
the GPU's datasheet peak for the row's precision (ptm's table of known GPUs).
"""

from __future__ import annotations

import argparse
import os

import torch
from _timing import MatmulProbe, device_setup, time_alternately, write_json

from ptmcli.models import gpt as ptm_gpt


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
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args()


def hf_step(model, optimizer, ids, autocast: bool = False, device_type: str = "cpu") -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, ids, labels, autocast: bool = False, device_type: str = "cpu") -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(ids, labels)
    (out["lm_loss_sum"] / out["lm_count"]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(vocab_size=args.vocab, n_positions=max(1024, args.seq_len), n_embd=args.hidden, n_layer=args.layers, n_head=args.heads)
    hf_model = GPT2LMHeadModel(hf_config).train()
    config = ptm_gpt.GPTConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                               intermediate_size=4 * args.hidden, max_position_embeddings=max(1024, args.seq_len))
    model = ptm_gpt.GPTForCausalLM(config).train()
    model.load_state_dict(ptm_gpt.state_dict_from_hf(hf_model.state_dict()))
    device, sync, datasheet_bf16, datasheet_fp32 = device_setup(args.device)
    hf_model.to(device)
    model.to(device)
    hf_opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    gen = torch.Generator().manual_seed(0)
    block = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=gen)
    ids, labels = block[:, :-1].contiguous().to(device), block[:, 1:].contiguous().to(device)
    tokens = args.batch * args.seq_len

    kind = device.type
    variants = {
        "transformers fp32": lambda: hf_step(hf_model, hf_opt, ids),
        "ptm fp32": lambda: ptm_step(model, opt, ids, labels, device_type=kind),
    }
    if not args.no_bf16:
        if kind == "cuda":  # on a GPU both run bf16: the comparison that matters there
            variants["transformers bf16 autocast"] = lambda: hf_step(hf_model, hf_opt, ids, autocast=True, device_type=kind)
        variants["ptm bf16 autocast"] = lambda: ptm_step(model, opt, ids, labels, autocast=True, device_type=kind)
    probe = MatmulProbe(device=args.device)
    variants["fp32 matmul 4096^3 (peak probe)"] = probe
    bf16_probe = None if args.no_bf16 else MatmulProbe(dtype=torch.bfloat16, device=args.device)
    if bf16_probe is not None:
        variants["bf16 matmul 4096^3 (peak probe)"] = bf16_probe
    print(
        f"GPT L{args.layers} H{args.hidden} A{args.heads} vocab {args.vocab}, batch {args.batch} x seq {args.seq_len}, "
        f"{args.threads} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}"
    )
    medians = time_alternately(variants, args.warmup, args.steps, sync)
    peak = probe.flops() / medians.pop("fp32 matmul 4096^3 (peak probe)")
    print(f"fp32 matmul peak (median of the probes between steps): {peak / 1e9:.1f} GFLOP/s")
    bf16_peak = None
    if bf16_probe is not None:
        bf16_peak = bf16_probe.flops() / medians.pop("bf16 matmul 4096^3 (peak probe)")
        print(f"bf16 matmul peak (same way): {bf16_peak / 1e9:.1f} GFLOP/s (MFU of the bf16 row)")
    step_flops = model.flops_per_token(args.seq_len) * tokens
    if datasheet_bf16:
        peak, bf16_peak = datasheet_fp32, datasheet_bf16
        print(f"MFU against the datasheet dense peaks: bf16 {bf16_peak / 1e12:.0f}, fp32 {peak / 1e12:.0f} TFLOP/s")
    reference = medians["transformers fp32"]
    figures = {"model": f"gpt L{args.layers} H{args.hidden} A{args.heads}", "seq_len": args.seq_len, "batch": args.batch,
               "device": str(device), "variants": {}}
    print(f"\n{'variant':28s} {'s/step':>8s} {'tokens/s':>9s} {'vs HF':>6s} {'MFU':>6s}")
    for name, seconds in medians.items():
        mfu = step_flops / seconds / (bf16_peak if "bf16" in name else peak)
        print(f"{name:28s} {seconds:8.3f} {tokens / seconds:9.0f} {reference / seconds:5.2f}x {100 * mfu:5.1f}%")
        figures["variants"][name] = {"s_per_step": seconds, "tokens_per_s": tokens / seconds, "mfu": mfu}
    write_json(args.json, figures)
    print(f"\nspeed-up ptm / transformers (fp32): {reference / medians['ptm fp32']:.2f}x")
    if "ptm bf16 autocast" in medians:
        print(f"speed-up ptm bf16 autocast / ptm fp32: {medians['ptm fp32'] / medians['ptm bf16 autocast']:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
