"""Training-step throughput of the encoder-decoders: ptm's BART and T5 against transformers' at the same configuration.

Each pair is built from one random-init transformers model (``BartForConditionalGeneration``,
``T5ForConditionalGeneration``) whose weights ptm loads through its converters, so both
start equal. The batch is what ``--objective denoise`` / ``span-corruption`` give the
loop: a source and a target, here full-length rows of random ids (BART: source 128,
target 128; T5: source 128, target 32, span corruption's short target of sentinels and
spans). Both train with AdamW (ptm: ``fused=True``, transformers: torch's default) and
dropout 0.1 everywhere (BART's attention and activation dropout included: ptm's preset
values, given to transformers too), and are timed alternately in one process, one step
each per round (``_timing.time_alternately``), so load from other processes hits both
alike. Reports the median step time, (source + target) tokens/s and the speed ratio
ptm / transformers at each precision (above 1: ptm is faster).

    python benchmarks/bench_seq2seq_pretrain.py                      # bart-mini and t5-mini shapes
    python benchmarks/bench_seq2seq_pretrain.py --model t5 --profile # plus the top ops of each side
    python benchmarks/bench_seq2seq_pretrain.py --device cuda --batch 32

On CPU and CUDA both libraries are timed in fp32 and under bf16 autocast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from _timing import add_step_timing_args, device_setup, profile_table, time_alternately, write_json

from ptmcli.convert.hf_bart import state_dict_from_hf as bart_from_hf
from ptmcli.convert.hf_t5 import state_dict_from_hf as t5_from_hf
from ptmcli.models import bart as ptm_bart
from ptmcli.models import t5 as ptm_t5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("bart", "t5", "both"), default="both")
    p.add_argument("--bart-preset", default="bart-mini")
    p.add_argument("--t5-preset", default="t5-mini")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--source-len", type=int, default=128)
    p.add_argument("--bart-target-len", type=int, default=128)
    p.add_argument("--t5-target-len", type=int, default=32)
    add_step_timing_args(p)
    return p.parse_args()


def bart_pair(preset: str):
    import transformers

    cfg = ptm_bart.preset_config(preset)
    hf_config = transformers.BartConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, encoder_layers=cfg.num_layers, decoder_layers=cfg.decoder_layers,
        encoder_attention_heads=cfg.num_heads, decoder_attention_heads=cfg.num_heads, encoder_ffn_dim=cfg.intermediate_size,
        decoder_ffn_dim=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings,
        dropout=cfg.hidden_dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        pad_token_id=cfg.pad_token_id, bos_token_id=0, eos_token_id=2, decoder_start_token_id=cfg.decoder_start_token_id,
        forced_bos_token_id=None, forced_eos_token_id=None)
    hf = transformers.BartForConditionalGeneration(hf_config)
    ours = ptm_bart.BartForConditionalGeneration(cfg)
    ours.load_state_dict(bart_from_hf(hf.state_dict()), strict=True)
    return hf.train(), ours.train(), cfg


def t5_pair(preset: str):
    import transformers

    cfg = ptm_t5.preset_config(preset)
    hf_config = transformers.T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, d_kv=cfg.head_size, d_ff=cfg.intermediate_size,
        num_layers=cfg.num_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance, dropout_rate=cfg.hidden_dropout,
        feed_forward_proj=cfg.feed_forward, tie_word_embeddings=cfg.tie_word_embeddings, pad_token_id=cfg.pad_token_id,
        eos_token_id=1, decoder_start_token_id=cfg.decoder_start_token_id)
    hf = transformers.T5ForConditionalGeneration(hf_config)
    ours = ptm_t5.T5ForConditionalGeneration(cfg)
    ours.load_state_dict(t5_from_hf(hf.state_dict()), strict=True)
    return hf.train(), ours.train(), cfg


def make_batch(vocab: int, batch: int, source_len: int, target_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-length sources and targets of random ids above the special ones (no padding)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, source_len), generator=gen)
    labels = torch.randint(3, vocab, (batch, target_len), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def hf_step(model, optimizer, batch, autocast: bool, device_type: str) -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss  # transformers shifts the labels right into decoder_input_ids
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def ptm_step(model, optimizer, batch, autocast: bool, device_type: str) -> None:
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = model(**batch)  # ptm shifts the labels right the same way
    (out["lm_loss_sum"] / out["lm_count"]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run(name: str, pair, target_len: int, args: argparse.Namespace, device, sync) -> dict:
    hf, ours, cfg = pair
    hf.to(device)
    ours.to(device)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    batch = {k: v.to(device) for k, v in make_batch(cfg.vocab_size, args.batch, args.source_len, target_len).items()}
    kind = device.type
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16 autocast")
    variants: dict[str, Callable[[], None]] = {}
    for precision in precisions:
        bf16 = precision != "fp32"
        variants[f"transformers {precision}"] = lambda bf16=bf16: hf_step(hf, hf_opt, batch, bf16, kind)
        variants[f"ptm {precision}"] = lambda bf16=bf16: ptm_step(ours, opt, batch, bf16, kind)
    tokens = args.batch * (args.source_len + target_len)
    print(f"\n{name}: L{cfg.num_layers}+{cfg.decoder_layers} H{cfg.hidden_size} A{cfg.num_heads} I{cfg.intermediate_size} "
          f"vocab {cfg.vocab_size}, batch {args.batch} x (source {args.source_len} + target {target_len}), "
          f"transformers attention: {hf.config._attn_implementation}, load average {os.getloadavg()[0]:.2f}")
    medians = time_alternately(variants, args.warmup, args.steps, sync)
    print(f"{'variant':28s} {'s/step':>8s} {'tokens/s':>9s}")
    for variant, seconds in medians.items():
        print(f"{variant:28s} {seconds:8.3f} {tokens / seconds:9.0f}")
    figures = {"variants": {v: {"s_per_step": s, "tokens_per_s": tokens / s} for v, s in medians.items()}, "ratios": {}}
    for precision in precisions:
        ratio = medians[f"transformers {precision}"] / medians[f"ptm {precision}"]
        figures["ratios"][precision] = ratio
        print(f"{name} speed-up ptm / transformers ({precision}): {ratio:.2f}x")
    if args.profile:
        for side, step in (("transformers", variants["transformers fp32"]), ("ptm", variants["ptm fp32"])):
            print(f"\n{name} {side} fp32: top ops by self time over {args.profile_steps} steps")
            print(profile_table(step, args.profile_steps, sync=sync))
    return figures


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, sync, _, _ = device_setup(args.device)
    print(f"{args.threads} threads, torch {torch.__version__}, device {device}")
    figures = {}
    if args.model in ("bart", "both"):
        figures["bart"] = run(args.bart_preset, bart_pair(args.bart_preset), args.bart_target_len, args, device, sync)
    if args.model in ("t5", "both"):
        figures["t5"] = run(args.t5_preset, t5_pair(args.t5_preset), args.t5_target_len, args, device, sync)
    write_json(args.json, figures)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
