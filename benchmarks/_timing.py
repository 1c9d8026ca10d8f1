"""Timing helpers shared by the training benchmarks: interleaved steps and a matmul peak probe."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch


class MatmulProbe:
    """One large fp32 matmul, timed among the training steps as the machine's peak.

    Timing it in the same rounds as the models means load from other processes
    lowers the peak and the step rates alike, so MFU stays meaningful.
    """

    def __init__(self, size: int = 4096, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        self.size = size
        self.a, self.b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
        self.out = torch.empty(size, size, dtype=dtype, device=device)

    def __call__(self) -> None:
        torch.mm(self.a, self.b, out=self.out)

    def flops(self) -> float:
        return 2.0 * self.size**3


def add_step_timing_args(parser) -> None:
    """The flags every training-step benchmark against transformers takes: threads, warm-up and timed steps,
    precision rows, profiling, device and a JSON copy of the figures."""
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--no-bf16", action="store_true", help="fp32 rows only")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops for each side (fp32)")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def time_alternately(variants: dict[str, Callable[[], None]], warmup: int, steps: int,
                     sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per step of each variant, the variants interleaved step by step.

    ``sync`` waits for queued device work (``torch.cuda.synchronize``), so a GPU step is timed whole.
    """
    for step in variants.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(steps):
        for name, step in variants.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def device_setup(device: str) -> tuple[torch.device, Callable[[], None], float | None, float | None]:
    """(device, its sync, datasheet bf16 peak, datasheet fp32 peak): the peaks for known GPUs, else None
    (the benchmarks then use the matmul probe's)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev, lambda: None, None, None
    from ptmcli.runtime.device import peak_flops

    return dev, lambda: torch.cuda.synchronize(dev), peak_flops(dev, "bf16"), peak_flops(dev, "fp32")


def write_json(path: str | None, figures: dict) -> None:
    """The benchmark's figures as JSON, for scripts (benchmarks/gpu.sh) that gather them."""
    if path:
        import json

        with open(path, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


def print_ratios(medians: dict[str, float], tokens_per_step: int) -> None:
    """The table of s/step, tokens/s and speed against ``transformers fp32`` (the reference variant)."""
    reference = medians["transformers fp32"]
    print(f"\n{'variant':24s} {'s/step':>8s} {'tokens/s':>9s} {'vs HF':>6s}")
    for name, seconds in medians.items():
        print(f"{name:24s} {seconds:8.3f} {tokens_per_step / seconds:9.0f} {reference / seconds:5.2f}x")
    print(f"speed-up ptm / transformers (fp32): {reference / medians['ptm fp32']:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def profile_table(step: Callable[[], None], steps: int = 3, rows: int = 15, sync: Callable[[], None] = lambda: None) -> str:
    """torch.profiler's table of the ops that take most self time over ``steps`` calls of ``step``
    (CPU time; CUDA time too on a GPU), to show where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    key = "self_cuda_time_total" if len(activities) > 1 else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
