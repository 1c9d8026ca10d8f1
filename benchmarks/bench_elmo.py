"""ELMo training throughput: ptm's ElmoBiLM at elmo-small and elmo-original, fp32 and bf16.

Each preset trains (forward, backward, fused AdamW) on the same batch of real
text: the bundled Wikipedia sample, tokenized with the 30,000-piece WordPiece
tokenizer under benchmarks/results, packed into full rows. Variants are timed
alternately, one step each per round, with a large matmul probe among them, so
load from other processes lowers the peak and the step rates alike. Reports
the median step time, tokens/s and MFU (``flops_per_token`` against the probe's
fp32 or bf16 rate).

There is no reference ELMo to run here (allennlp does not install on this
Python); instead the biLSTM stack alone (both directions, residuals, dropout
and the within-length reversal) is compared with two bare ``nn.LSTM``
(``num_layers=L, proj_size=P``) over the same inputs: the ratio is what ptm's
layer-by-layer stack costs over the library's own multi-layer LSTM.

    python benchmarks/bench_elmo.py                        # both presets
    python benchmarks/bench_elmo.py --presets elmo-small --seq-len 128 --batch 32
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import MatmulProbe, time_alternately
from torch import nn

from ptmcli.models.elmo import (
    ElmoBiLM,
    char_table_for_tokenizer,
    preset_config,
    sentence_boundary_ids,
)
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.tokenization.tokenizer import PtmTokenizer

TOKENIZER = Path(__file__).resolve().parent / "results" / "encode-wordpiece-30000-enwiki_sample"
BATCHES = {"elmo-small": 32, "elmo-mini": 32, "elmo-original": 8}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["elmo-small", "elmo-original"])
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="rows per step [default: 32, 8 for elmo-original]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (median reported)")
    p.add_argument("--no-bare", action="store_true", help="skip the comparison with bare nn.LSTM stacks")
    return p.parse_args()


def real_batch(tokenizer: PtmTokenizer, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full rows of ``<begin> text <end>`` from the bundled sample."""
    begin, end = sentence_boundary_ids(tokenizer)
    needed = batch * (seq_len - 2)
    ids: list[int] = []
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("<"):
                ids.extend(tokenizer.encode_batch([line])[0])
            if len(ids) >= needed:
                break
    body = torch.tensor(ids[:needed]).view(batch, seq_len - 2)
    rows = torch.cat([torch.full((batch, 1), begin), body, torch.full((batch, 1), end)], dim=1)
    return rows, torch.ones_like(rows)


def train_step(model: ElmoBiLM, optimizer, ids, mask, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, mask)
    loss = (out["fwd_loss_sum"] + out["bwd_loss_sum"]) / (out["fwd_count"] + out["bwd_count"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def stack_step(model: ElmoBiLM, tokens: torch.Tensor, mask: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of ptm's two LSTM stacks alone (no token encoder, no softmax)."""
    from ptmcli.models import elmo

    def run() -> None:
        lengths = mask.sum(1)
        reverse = elmo._reverse_within_length(lengths, tokens.shape[1])
        fwd = model._run_stack(model.forward_layers, tokens)[-1]
        bwd = model._run_stack(model.backward_layers, elmo._gather_time(tokens, reverse))[-1]
        (fwd.sum() + elmo._gather_time(bwd, reverse).sum()).backward()

    return run


def bare_step(config, tokens: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of two bare multi-layer ``nn.LSTM`` (one per direction)."""
    P = config.projection_dim
    lstms = [nn.LSTM(P, config.lstm_dim, num_layers=config.num_layers, proj_size=P, batch_first=True) for _ in range(2)]

    def run() -> None:
        fwd, _ = lstms[0](tokens)
        bwd, _ = lstms[1](tokens.flip(1))
        (fwd.sum() + bwd.sum()).backward()

    return run


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    tokenizer = PtmTokenizer.load(TOKENIZER)
    variants: dict[str, Callable[[], None]] = {}
    work: dict[str, tuple[int, float]] = {}  # variant -> (tokens per step, flops per token)
    for preset in args.presets:
        batch = args.batch or BATCHES.get(preset, 8)
        torch.manual_seed(0)
        config = preset_config(preset, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
        model = ElmoBiLM(config).train()
        model.set_char_table(char_table_for_tokenizer(tokenizer, config.max_chars_per_token))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        ids, mask = real_batch(tokenizer, batch, args.seq_len)
        flops = model.flops_per_token(args.seq_len)
        tokens = ids.numel()
        distinct = int(torch.unique(ids).numel())
        print(f"{preset}: {model.num_parameters() / 1e6:.1f}M parameters ({model.num_parameters(True) / 1e6:.1f}M without softmax), "
              f"{flops / 1e6:.0f} MFLOP/token, batch {batch} x {args.seq_len} ({distinct} distinct tokens)")
        for precision in ("fp32", "bf16"):
            name = f"{preset} {precision}"
            variants[name] = lambda m=model, o=optimizer, i=ids, k=mask, b=precision == "bf16": train_step(m, o, i, k, b)
            work[name] = (tokens, flops)
        if not args.no_bare:
            inputs = torch.randn(batch, args.seq_len, config.projection_dim, requires_grad=True)
            variants[f"{preset} ptm biLSTM stack fp32"] = stack_step(model, inputs, mask)
            variants[f"{preset} bare nn.LSTM x2 fp32"] = bare_step(config, inputs)

    probe, bf16_probe = MatmulProbe(), MatmulProbe(dtype=torch.bfloat16)
    variants["fp32 matmul probe"] = probe
    variants["bf16 matmul probe"] = bf16_probe
    print(f"{args.threads} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    medians = time_alternately(variants, args.warmup, args.steps)
    peak = probe.flops() / medians.pop("fp32 matmul probe")
    bf16_peak = bf16_probe.flops() / medians.pop("bf16 matmul probe")
    print(f"matmul peak (median of probes between steps): fp32 {peak / 1e9:.0f} GFLOP/s, bf16 {bf16_peak / 1e9:.0f} GFLOP/s\n")

    print(f"{'variant':34s} {'s/step':>8s} {'tokens/s':>9s} {'MFU':>6s}")
    for name, seconds in medians.items():
        if name in work:
            tokens, flops = work[name]
            mfu = flops * tokens / seconds / (bf16_peak if "bf16" in name else peak)
            print(f"{name:34s} {seconds:8.3f} {tokens / seconds:9.0f} {100 * mfu:5.1f}%")
    for preset in args.presets:
        ours, bare = medians.get(f"{preset} ptm biLSTM stack fp32"), medians.get(f"{preset} bare nn.LSTM x2 fp32")
        if ours and bare:
            print(f"{preset}: ptm biLSTM stack {ours:.3f} s vs bare nn.LSTM x2 {bare:.3f} s per step: {ours / bare:.2f}x the time")


if __name__ == "__main__":
    main()
