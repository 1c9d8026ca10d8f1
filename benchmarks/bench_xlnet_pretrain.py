"""Training-step throughput of permutation LM: ptm's XLNetForPermutationLM vs transformers' XLNetLMHeadModel.

Both models get the same weights (transformers' random init, loaded into ptm with its key
map) and the same batch: random blocks of ids with the factorisation order that
``--objective plm`` builds (``permutation_lm.PermutationSampler``: about 1/K of the
tokens predicted, in spans, the targets last in the order), passed to both as
``perm_mask`` ``[B, T, T]`` and ``target_mapping`` ``[B, P, T]`` with labels
``[B, P]``. Dropout 0.1 everywhere. Both train with AdamW (ptm: ``fused=True``,
transformers: torch's default) and are timed alternately in one process, one step
each per round (``_timing.time_alternately``). Reports the median step time,
tokens/s and the ratio ptm / transformers (above 1: ptm is faster); ``--profile``
adds torch.profiler's top ops of each side.

    python benchmarks/bench_xlnet_pretrain.py                   # xlnet-mini, seq 128, batch 16
    python benchmarks/bench_xlnet_pretrain.py --profile         # and where each side's time goes
    python benchmarks/bench_xlnet_pretrain.py --preset xlnet-base --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np
import torch
from _timing import add_step_timing_args, device_setup, profile_table, time_alternately, write_json

from ptmcli.models import xlnet as ptm_xlnet
from ptmcli.pretraining.permutation_lm import PermutationSampler


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="xlnet-mini")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--plm-k", type=int, default=6, help="1/K of the tokens predicted, as --plm-k")
    add_step_timing_args(p)
    return p.parse_args()


def make_pair(preset: str):
    import transformers

    cfg = ptm_xlnet.preset_config(preset)
    hf_config = transformers.XLNetConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        d_inner=cfg.intermediate_size, ff_activation="gelu", dropout=cfg.hidden_dropout, layer_norm_eps=cfg.layer_norm_eps,
        mem_len=None, clamp_len=cfg.clamp_len, pad_token_id=5, bos_token_id=1, eos_token_id=2)
    hf = transformers.XLNetLMHeadModel(hf_config)
    ours = ptm_xlnet.XLNetForPermutationLM(cfg)
    ours.load_state_dict(ptm_xlnet.state_dict_from_hf(hf.state_dict()), strict=True)
    return hf.train(), ours.train(), cfg


def make_batch(vocab: int, batch: int, seq_len: int, k: int) -> dict[str, torch.Tensor]:
    """Random blocks with plm's masks (seed 0, examples 0 .. batch - 1)."""
    gen = np.random.default_rng(0)
    blocks = gen.integers(10, vocab, (batch, seq_len), dtype=np.int64)
    return PermutationSampler(k, seq_len)(blocks, np.arange(batch), seed=0)


def hf_step(model, optimizer, batch, autocast: bool, device_type: str) -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=batch["input_ids"], perm_mask=batch["hf_perm_mask"],
                     target_mapping=batch["target_mapping"], labels=batch["labels"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool, device_type: str) -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(batch["input_ids"], batch["perm_mask"], batch["target_mapping"], batch["labels"])
    (out["lm_loss_sum"] / out["lm_count"]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, sync, _, _ = device_setup(args.device)
    hf, ours, cfg = make_pair(args.preset)
    hf.to(device)
    ours.to(device)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    batch = make_batch(cfg.vocab_size, args.batch, args.seq_len, args.plm_k)
    batch["hf_perm_mask"] = batch["perm_mask"].float()  # transformers takes it as floats
    batch = {k: v.to(device) for k, v in batch.items()}
    predicted = int((batch["labels"] != -100).sum())
    kind = device.type
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16 autocast")
    variants: dict[str, Callable[[], None]] = {}
    for precision in precisions:
        bf16 = precision != "fp32"
        variants[f"transformers {precision}"] = lambda bf16=bf16: hf_step(hf, hf_opt, batch, bf16, kind)
        variants[f"ptm {precision}"] = lambda bf16=bf16: ptm_step(ours, opt, batch, bf16, kind)
    tokens = args.batch * args.seq_len
    print(f"{args.preset}: L{cfg.num_layers} H{cfg.hidden_size} A{cfg.num_heads} I{cfg.intermediate_size} vocab {cfg.vocab_size}, "
          f"batch {args.batch} x seq {args.seq_len}, {batch['target_mapping'].shape[1]} target rows per example "
          f"({predicted} predicted tokens), {args.threads} threads, torch {torch.__version__}, device {device}, "
          f"load average {os.getloadavg()[0]:.2f}")
    medians = time_alternately(variants, args.warmup, args.steps, sync)
    print(f"\n{'variant':28s} {'s/step':>8s} {'tokens/s':>9s}")
    for variant, seconds in medians.items():
        print(f"{variant:28s} {seconds:8.3f} {tokens / seconds:9.0f}")
    figures = {"model": args.preset, "seq_len": args.seq_len, "batch": args.batch, "device": str(device),
               "variants": {v: {"s_per_step": s, "tokens_per_s": tokens / s} for v, s in medians.items()}, "ratios": {}}
    for precision in precisions:
        ratio = medians[f"transformers {precision}"] / medians[f"ptm {precision}"]
        figures["ratios"][precision] = ratio
        print(f"speed-up ptm / transformers ({precision}): {ratio:.2f}x")
    if args.profile:
        for side in ("transformers", "ptm"):
            print(f"\n{side} fp32: top ops by self time over {args.profile_steps} steps")
            print(profile_table(variants[f"{side} fp32"], args.profile_steps, sync=sync))
    write_json(args.json, figures)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
