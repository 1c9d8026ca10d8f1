"""Device and precision choices shared by every command that runs a model."""

from __future__ import annotations

import contextlib

import torch

from ptmcli.errors import PtmError

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtmError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PtmError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise PtmError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise PtmError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise PtmError("--precision fp16 needs a CUDA device; on CPU use bf16 (autocast) or fp32")


def autocast(precision: str, device: torch.device):
    """Mixed-precision context: weights stay fp32, matmuls run in bf16/fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Dense peak FLOP/s of known accelerators (None if unknown: give --peak-tflops)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    dense_bf16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40": 181e12, "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}
    for key, value in dense_bf16.items():
        if key in name:
            # fp32 without TF32 is far lower; report MFU against the precision actually used.
            return value if precision != "fp32" else value / (16 if key in ("H100", "H200", "A100") else 2)
    return None


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                        trials: int = 7) -> float:
    """Achievable matmul FLOP/s here, at ``dtype``: the CPU has no datasheet peak worth trusting.

    The fastest of several single products counts: another process busy at start-up
    slows some of them, and an average would understate the peak and overstate MFU.
    Small matrices under-report the peak (1024^3 read about a third of 4096^3 on a
    2-core AVX-512 machine); 2048^3 is close and quick.
    """
    import time

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
