"""``--batch-size auto``: the largest micro-batch that fits the device's memory, found by trying it.

The candidates are the powers of two up to the global batch's share of one
process (and that share itself). A trial step is one forward and backward
pass of the run's own objective on a batch from its own data, padded to the
full ``--seq-len``, with room held for what the trial does not allocate
itself: AdamW's two moments (and DDP's gradient buckets).

- CUDA: the candidates are tried from the smallest up; the first that raises
  ``torch.cuda.OutOfMemoryError`` ends the search, and the largest that ran is
  taken.
- CPU: running out of memory gets the process killed, not an exception. So
  the peak resident memory of trial steps at a few small sizes (1, 2, 8) is
  measured and extrapolated per example, and the largest candidate whose
  predicted peak stays under ``SAFETY`` of the memory available is taken
  (``MemAvailable`` from ``/proc/meminfo``, or less when the process's
  cgroup limit leaves less). Linux only: elsewhere it is refused.

Gradient accumulation then makes up the global batch. Under torchrun every
rank probes its own device and all take the smallest size any rank found.
Torch is imported when a probe runs, so the rest stays light.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptmcli.errors import PtmError

DEFAULT_GLOBAL_BATCH = 256
SAFETY = 0.70
"""Share of the available memory a CPU run's predicted peak may use: the extrapolation is linear, and the
batches of a real run vary (the trial's are padded to --seq-len, but other processes come and go)."""
CPU_TRIAL_SIZES = (1, 2, 8)


@dataclass(frozen=True)
class Choice:
    micro: int
    """Examples per micro-batch per process."""
    accum: int
    """Micro-batches per optimizer step."""
    world: int
    reason: str
    """How ``micro`` was found, for the banner."""

    @property
    def global_batch(self) -> int:
        return self.micro * self.world * self.accum

    def banner(self, asked: int) -> str:
        per = f"{self.micro} per device x {self.world} processes" if self.world > 1 else f"{self.micro}"
        note = "" if self.global_batch == asked else f" ({asked} asked: the nearest that splits evenly)"
        return (f"ptm: batch-size auto: {self.reason}; {per} x {self.accum} accumulation = global "
                f"{self.global_batch}{note}")


# The search, on sizes and measurements alone (tested without a device).

def candidates(cap: int) -> list[int]:
    """Powers of two below ``cap``, then ``cap`` itself."""
    sizes, size = [], 1
    while size < cap:
        sizes.append(size)
        size *= 2
    return [*sizes, cap]


def per_process_cap(global_batch: int, world: int) -> int:
    if global_batch < world:
        raise PtmError(f"--global-batch {global_batch}: fewer examples than the {world} processes sharing each step")
    return math.ceil(global_batch / world)


def accumulation(fit: int, global_batch: int, world: int) -> tuple[int, int]:
    """(micro-batch, accumulation) reaching ``global_batch`` with micro-batches of at most ``fit``: the fewest
    micro-batches, then the smallest micro-batch that still makes up the global batch (64 fits, global 100:
    2 x 50 rather than 2 x 64)."""
    share = per_process_cap(global_batch, world)
    accum = math.ceil(share / fit)
    return math.ceil(share / accum), accum


def largest_that_runs(sizes: list[int], trial: Callable[[int], None], out_of_memory: type[BaseException],
                      recover: Callable[[], None] = lambda: None) -> tuple[int, int | None]:
    """Try ``sizes`` from the smallest; (the largest that ran or 0, the first that ran out of memory or None).

    ``recover`` runs after every trial, outside the handler, so the failed step's tensors (held by the
    traceback inside it) are gone when it frees the cache.
    """
    fit = 0
    for size in sizes:
        failed = False
        try:
            trial(size)
        except out_of_memory:
            failed = True
        recover()
        if failed:
            return fit, size
        fit = size
    return fit, None


def predict_peak(measured: dict[int, int], size: int) -> float:
    """Peak bytes at ``size`` examples, on the line through the smallest and largest measurements."""
    small, large = min(measured), max(measured)
    if small == large:
        return float(measured[small])
    per_example = max(0.0, (measured[large] - measured[small]) / (large - small))
    return measured[small] + per_example * (size - small)


def largest_predicted(sizes: list[int], measured: dict[int, int], limit: float) -> tuple[int, int | None]:
    """(the largest of ``sizes`` predicted to stay under ``limit`` bytes or 0, the first predicted over it or None)."""
    fit = 0
    for size in sizes:
        if predict_peak(measured, size) > limit:
            return fit, size
        fit = size
    return fit, None


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


# Reading this process's memory (Linux).

def _meminfo_kb(field: str, text: str) -> int | None:
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def available_memory() -> int | None:
    """Bytes this process may still take: ``MemAvailable``, or less if its cgroup's limit leaves less; None
    where ``/proc/meminfo`` has no ``MemAvailable`` (not Linux, or a kernel before 3.14)."""
    try:
        available = _meminfo_kb("MemAvailable", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    if available is None:
        return None
    # A container's limit is its cgroup's, which /proc/meminfo (the host's) does not show.
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit():
            available = min(available, max(0, int(limit) - int(usage)))
        break
    return available


def _resident_bytes(field: str) -> int:
    return _meminfo_kb(field, Path("/proc/self/status").read_text()) or 0


def peak_resident(step: Callable[[], None]) -> int:
    """Peak resident bytes of this process while ``step`` runs: the kernel's high-water mark, reset first."""
    Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current resident size
    step()
    return _resident_bytes("VmHWM")


def can_measure() -> bool:
    try:
        return available_memory() is not None and _resident_bytes("VmRSS") > 0 and Path("/proc/self/clear_refs").exists()
    except OSError:
        return False


# The probe.

def choose(model, make_batch: Callable[[int], tuple], global_batch: int, *, precision: str, device, dist_info,
           fsdp: bool = False) -> Choice:
    """The micro-batch and accumulation for ``global_batch`` examples per step on ``device``.

    ``make_batch(size)`` returns ``(task, micro_batches)``: a task built for ``size`` examples and one
    micro-batch drawn from it. The model's weights, gradients and the global RNG states are as they were
    when it returns.
    """
    import torch

    from ptmcli.training import distributed

    world = dist_info.world_size
    sizes = candidates(per_process_cap(global_batch, world))
    params = [p for p in model.parameters() if p.requires_grad]
    # AdamW keeps two fp32 moments per parameter (sharded under FSDP); DDP adds gradient buckets the size of the gradients.
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    held = 2 * param_bytes // (world if fsdp else 1) + (param_bytes if dist_info.enabled and not fsdp else 0)

    def step(size: int) -> None:
        task, batches = make_batch(size)
        norms = task.normalizers(batches)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches[0].items()}
        from ptmcli.runtime.device import autocast

        with autocast(precision, device):
            loss, _ = task.loss(model, batch, norms)
        loss.backward()

    def clear() -> None:
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    distributed.barrier(dist_info)  # CPU ranks share the host's memory: read it before any of them probes
    was_training = model.training
    model.train()
    rng_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):  # the trials' dropout draws leave the run's seed stream alone
        if device.type == "cuda":
            fit, reason = _probe_cuda(sizes, step, clear, held, device)
        else:
            fit, reason = _probe_cpu(sizes, step, clear, held, dist_info)
    model.train(was_training)
    clear()
    if dist_info.enabled:
        agreed = int(-distributed.all_reduce_values([-float(fit)], dist_info, device, op="max")[0])
        if agreed != fit:
            reason = f"{agreed}, the smallest any process found (here: {reason})"
        fit = agreed
    if fit == 0:
        raise PtmError(f"--batch-size auto: not even 1 example per micro-batch fits ({reason}); use a smaller "
                       "model or --seq-len, --precision bf16, or free the device")
    micro, accum = accumulation(fit, global_batch, world)
    return Choice(micro, accum, world, reason)


def _probe_cuda(sizes, step, clear, held, device) -> tuple[int, str]:
    import torch

    reserve = torch.empty(held, dtype=torch.uint8, device=device)
    try:
        fit, failed = largest_that_runs(sizes, step, torch.cuda.OutOfMemoryError, clear)
    finally:
        del reserve
    if fit == 0:
        return 0, "1 ran out of memory"
    if failed is None:
        return fit, f"{fit} fits (the largest tried: the global batch's share of this process)"
    return fit, f"{fit} fits ({failed} did not: out of memory)"


def _probe_cpu(sizes, step, clear, held, dist_info) -> tuple[int, str]:
    import os

    if not can_measure():
        raise PtmError("--batch-size auto on CPU reads the memory available and the process's peak from /proc "
                       "(Linux), which this system lacks; give --batch-size N")
    # Processes on this host share its memory (torchrun sets LOCAL_WORLD_SIZE).
    local = int(os.environ.get("LOCAL_WORLD_SIZE", dist_info.world_size) or 1) if dist_info.enabled else 1
    step(1)  # once unmeasured: first-call allocations (kernels, thread pools) belong to the base
    clear()
    # The base is read after that collection, as the trials' peaks are: garbage the process held before it
    # (freed by clear) would otherwise count as room for the batch.
    available = available_memory() or 0
    limit = _resident_bytes("VmRSS") + SAFETY * available / local
    measured: dict[int, int] = {}
    for size in [s for s in CPU_TRIAL_SIZES if s <= sizes[-1]] or [sizes[-1]]:
        # A size predicted over the limit is not run: on CPU running out means being killed.
        if len(measured) >= 2 and predict_peak(measured, size) + held > limit:
            break
        measured[size] = peak_resident(lambda size=size: step(size))
        clear()
    fit, failed = largest_predicted(sizes, {k: v + held for k, v in measured.items()}, limit)
    share = f"{SAFETY:.0%} of the {_gb(available / local)} available" + (" per process" if local > 1 else "")
    tried = ", ".join(map(str, measured))
    if fit == 0:
        return 0, f"1 is predicted to need {_gb(predict_peak(measured, 1) + held)} at peak, over {share}"
    if failed is None:
        return fit, (f"{fit} fits (the global batch's share of this process; predicted peak "
                     f"{_gb(predict_peak(measured, fit) + held)}, under {share}; measured at {tried})")
    return fit, (f"{fit} fits ({failed} would not: predicted peak {_gb(predict_peak(measured, failed) + held)}, over "
                 f"{share}; measured at {tried})")
