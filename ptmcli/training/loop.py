"""The one training loop, shared by pretraining and finetuning.

What is trained, and on what, is a ``TrainTask``: it hands out micro-batches,
says how to normalise their losses across gradient accumulation, computes the
loss and evaluates. The loop owns everything else: precision, accumulation,
clipping, the schedule, logging, checkpoints, resuming and signals.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ptmcli.errors import PtmError
from ptmcli.runtime.device import autocast
from ptmcli.runtime.rng import rng_state_from_text, rng_state_to_text
from ptmcli.training import tensorboard_log
from ptmcli.training.budget import BudgetTooShort, StepClock, budget_multiplier, ramp_accumulation
from ptmcli.training.distributed import SINGLE, Distributed, all_reduce_values, full_tensor
from ptmcli.training.distributed import average_gradients as average_rank_gradients
from ptmcli.training.optim import load_optimizer_state, optimizer_state_tensors
from ptmcli.training.prefetch import BatchPrefetcher
from ptmcli.training.running_sums import RunningSums
from ptmcli.training.schedule import lr_multiplier

# Prefix of the task's tensors in the optimizer file; no parameter name starts with it.
TASK_TENSORS = "task/"


class TrainTask(Protocol):
    """What the loop trains on. ``next_micro_batches`` runs on the loop's batch thread, ahead of training,
    and ``state_dict`` right after it on that thread: the data state to save with the step those batches
    make. A task that also keeps state on the training side (what ``loss`` or ``after_evaluate`` change)
    returns it from ``training_state_dict()`` and takes it back in ``load_training_state_dict(state)``;
    tensors of that state (XLNet's memory) from ``training_tensors()``, taken back in
    ``load_training_tensors(tensors)``: saved as safetensors beside the optimizer's, and every rank calls it.
    ``loss`` may return its statistics as tensors: the loop sums them where they are and reads them
    when it logs."""

    def next_micro_batches(self, count: int) -> list[dict[str, torch.Tensor]]: ...
    def normalizers(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]: ...
    def loss(self, model, batch: dict[str, torch.Tensor], norms: dict[str, float]) -> tuple[torch.Tensor, dict[str, Any]]: ...
    def summarize(self, sums: dict[str, float]) -> dict[str, float]: ...
    def tokens(self, batch: dict[str, torch.Tensor]) -> int: ...
    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class LoopSettings:
    max_steps: int
    lr: float
    warmup_steps: int = 0
    schedule: str = "linear"
    grad_accum: int = 1
    clip_norm: float = 1.0
    precision: str = "fp32"
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    keep_last: int = 3
    max_time_s: float | None = None
    progress: bool | None = None
    peak_flops: float | None = None
    flops_per_token: float | None = None
    max_bad_steps: int = 5
    tensorboard: bool = False
    budget_s: float | None = None
    """Plan the schedule over this much wall-clock time and stop when it is spent (``training/budget.py``)."""
    warmup_fraction: float = 0.0
    """With a budget: the share of it spent warming up (``warmup_steps`` is not used)."""
    batch_ramp: float = 0.0
    """With a budget: the share of it over which the accumulation grows from 1 to ``grad_accum``."""


@dataclass
class LoopState:
    step: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    skipped_steps: int = 0
    last_metrics: dict = field(default_factory=dict)


def capture_rng(device: torch.device, dist_info: Distributed = SINGLE) -> dict:
    """Global RNG states (dropout draws from them), as JSON-safe base64 strings.

    Under torchrun every rank's states are gathered (as uint8 tensors, not
    objects), so a resume at the same world size continues each rank exactly.
    """
    state = {"torch": rng_state_to_text(torch.get_rng_state())}
    if device.type == "cuda":
        state["cuda"] = rng_state_to_text(torch.cuda.get_rng_state(device))
    if dist_info.enabled:
        state["ranks"] = [{k: rng_state_to_text(t) for k, t in zip(state, tensors)} for tensors in _gather_rng(device, dist_info)]
    return state


def _gather_rng(device: torch.device, dist_info: Distributed) -> list[list[torch.Tensor]]:
    import torch.distributed as dist

    local = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])
    gathered = []
    for tensor in local:
        where = tensor.to(device) if device.type == "cuda" else tensor
        parts = [torch.empty_like(where) for _ in range(dist_info.world_size)]
        dist.all_gather(parts, where)
        gathered.append([part.cpu() for part in parts])
    return [list(per_rank) for per_rank in zip(*gathered)]


def restore_rng(state: dict, device: torch.device, dist_info: Distributed = SINGLE) -> None:
    ranks = state.get("ranks")
    if dist_info.enabled and ranks and len(ranks) == dist_info.world_size:
        state = ranks[dist_info.rank]
    if "torch" in state:
        torch.set_rng_state(rng_state_from_text(state["torch"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(rng_state_from_text(state["cuda"]), device)
    if dist_info.enabled and dist_info.rank > 0 and not (ranks and len(ranks) == dist_info.world_size):
        # Resumed at another world size: give the new ranks their own dropout streams.
        separate_rank_rng(dist_info, int(torch.randint(0, 2**31 - 1, ()).item()))


def separate_rank_rng(dist_info: Distributed, seed: int) -> None:
    """Ranks other than 0 draw dropout from their own streams; rank 0 keeps the one-process stream."""
    if dist_info.enabled and dist_info.rank > 0:
        torch.manual_seed(seed + 1_000_003 * dist_info.rank)


class _StopSignals:
    """SIGINT/SIGTERM ask the loop to save and stop at the next step boundary."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        if self.received is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.received = signum
        print(f"\nptm: received {signal.Signals(signum).name}; saving a checkpoint and stopping after this step", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """``metrics.jsonl`` in the run directory: one JSON object per logged step or evaluation."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            # Drop history written after the checkpoint we resume from, so the file tells one story.
            # A line cut short by a kill or a full disk is dropped too. Rewritten beside and renamed,
            # so a kill here cannot lose the history.
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = [line for line, step in zip(lines, map(_step_of, lines)) if step is not None and step <= resume_step]
            staging = path.with_name(path.name + ".tmp")
            staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(staging, path)
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise PtmError(f"cannot append to {self.path}: {err.strerror}; the last checkpoint in {self.path.parent / 'checkpoints'} is intact") from None


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return int(record.get("step", 0)) if isinstance(record, dict) else None


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool, quiet: bool = False, unit: str = "step") -> None:
        self.bar = None
        self.quiet = quiet  # ranks other than 0 print nothing
        if enabled:
            from tqdm import tqdm

            # With a budget the bar counts seconds of it, so its remaining time is the budget's.
            self.bar = tqdm(total=total, initial=initial, file=sys.stderr, dynamic_ncols=True, unit=unit, smoothing=0.1,
                            bar_format=None if unit == "step" else "{l_bar}{bar}| {n:.0f}/{total:.0f} s budget, {remaining} left{postfix}")

    def update(self, n: int, postfix: dict[str, str] | None) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        elif not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(record: dict) -> str:
    parts = []
    for key, value in record.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task: TrainTask,
    settings: LoopSettings,
    *,
    device: torch.device,
    run_dir: Path,
    save: Callable[[int, dict, dict], None],
    resume: tuple[dict, dict] | None = None,
    dist_info: Distributed = SINGLE,
    average_gradients: bool = False,
) -> LoopState:
    """Train until ``max_steps`` (or the time budget, or a signal); returns the final state.

    ``save(step, optimizer_tensors, trainer_state)`` writes a checkpoint (every
    rank calls it; the caller writes on rank 0 only). ``resume`` is
    ``(optimizer_tensors, trainer_state)`` read from one. Under torchrun,
    ``model`` is the DDP-wrapped model and ``task`` hands out this rank's share
    (``GlobalBatchShare``); the ranks agree on every decision (stop, skip, log)
    through small all-reduces. ``average_gradients``: the model is not wrapped,
    and the loop averages gradients itself after the backward passes (see
    ``distributed.average_gradients``).

    Batches are prepared on a background thread, two steps ahead
    (``prefetch.BatchPrefetcher``). The statistics of every micro-batch stay on
    the device; the loop reads one value per step (whether the step's loss is
    finite, which decides the update) and the sums once per log line.
    """
    state = LoopState()
    if resume is not None:
        tensors, saved = resume
        state = LoopState(**{k: v for k, v in saved["loop"].items() if k in LoopState.__dataclass_fields__})
        load_optimizer_state(optimizer, tensors, saved["optimizer_groups"], "resume checkpoint")
        task.load_state_dict(saved["data"])
        load_training_state = getattr(task, "load_training_state_dict", None)
        if load_training_state is not None:
            # Checkpoints from before the split kept this state with the data.
            load_training_state(saved.get("task", saved["data"]))
        load_training_tensors = getattr(task, "load_training_tensors", None)
        if load_training_tensors is not None:
            load_training_tensors({k[len(TASK_TENSORS):]: v for k, v in tensors.items() if k.startswith(TASK_TENSORS)})
        restore_rng(saved["rng"], device, dist_info)
    main = dist_info.is_main
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=state.step if resume is not None else None) if main else None
    metrics = tensorboard_log.wrap(metrics, settings.tensorboard, run_dir, state.step if resume is not None else None)

    scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
    interactive = sys.stderr.isatty() if settings.progress is None else settings.progress
    budget = settings.budget_s
    if budget is not None:
        progress = _Progress(round(budget), min(round(state.elapsed_s), round(budget)), interactive and main, quiet=not main, unit="s")
    else:
        progress = _Progress(settings.max_steps, state.step, interactive and main, quiet=not main)
    clock = StepClock()
    learning_rate_of = _LossPerMinute()
    peak_lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    for group, peak in zip(optimizer.param_groups, peak_lrs):
        group["initial_lr"] = peak

    training_state = getattr(task, "training_state_dict", None)
    training_tensors = getattr(task, "training_tensors", None)

    def snapshot() -> tuple[dict, dict]:
        tensors, groups = optimizer_state_tensors(optimizer)
        if training_tensors is not None:
            tensors.update({TASK_TENSORS + k: v for k, v in training_tensors().items()})
        trainer_state = {
            "loop": asdict(state),
            "optimizer_groups": groups,
            # Batches are made ahead: the data state saved is the one recorded with the last step trained.
            "data": batches_ahead.consumed_state,
            "rng": capture_rng(device, dist_info),
            "settings": asdict(settings),
        }
        if training_state is not None:
            trainer_state["task"] = training_state()
        return tensors, trainer_state

    def checkpoint() -> None:
        tensors, trainer_state = snapshot()
        save(state.step, tensors, trainer_state)

    window_tokens, window_time, window_sums, window_steps = 0, 0.0, RunningSums(), 0
    bad_in_a_row = 0
    saved_at = state.step if resume is not None else -1
    started = time.perf_counter() - state.elapsed_s
    model.train()
    stop_reason = "max-steps"
    sync_grads = getattr(model, "no_sync", None)

    def accumulation() -> int:
        # Read on the batch thread, a step or two ahead: the ramp lags by as much, which it can afford.
        if budget is None or not settings.batch_ramp:
            return settings.grad_accum
        return ramp_accumulation(state.elapsed_s / budget, settings.batch_ramp, settings.grad_accum)

    steps_here = 0
    batches_ahead = BatchPrefetcher(lambda: task.next_micro_batches(accumulation()), task.state_dict,
                                    planned=settings.max_steps - state.step, pin_for=device)
    with _StopSignals() as signals, batches_ahead:
        while state.step < settings.max_steps:
            step_start = time.perf_counter()  # waiting for data counts in the step
            now = step_start - started
            late = settings.max_time_s is not None and state.elapsed_s >= settings.max_time_s
            # A process always takes one step: that is how long a step is known to take.
            spent = budget is not None and steps_here > 0 and now + clock.next_step_s() > budget
            signalled = signals.received is not None
            shared_counts = getattr(task, "shared_counts", None) if dist_info.enabled else None
            counts = shared_counts(batches_ahead.peek()) if shared_counts is not None else {}
            if dist_info.enabled:
                # Ranks see the clock and signals at different moments; stop together or not at all. The same
                # all-reduce sums the counts of each rank's rows that the loss normalisers need, and averages
                # the clocks, so every rank sets the same budget-planned rate.
                agreed = all_reduce_values([float(late), float(spent), float(signalled), now, *counts.values()], dist_info, device)
                late, spent, signalled = agreed[0] > 0, agreed[1] > 0, agreed[2] > 0
                now = agreed[3] / dist_info.world_size
                counts = dict(zip(counts, agreed[4:]))
            if late:
                stop_reason = "time budget"
                break
            if spent:
                stop_reason = "budget"
                break
            if signalled:
                stop_reason = signal.Signals(signals.received).name if signals.received is not None else "signal on another rank"
                break
            if budget is not None:
                factor = budget_multiplier(now / budget, settings.warmup_fraction, settings.schedule)
            else:
                factor = lr_multiplier(state.step, warmup_steps=settings.warmup_steps, max_steps=settings.max_steps, schedule=settings.schedule)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

            batches = batches_ahead.next()
            norms = task.normalizers(batches, counts) if counts else task.normalizers(batches)
            # Counted on the host copies, so no device value is read for them.
            step_tokens = sum(task.tokens(batch) for batch in batches)
            step_sums = RunningSums()
            for index, batch in enumerate(batches):
                batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                # DDP averages gradients across ranks; each rank's loss is its part of the global
                # sum, so scale by the world size to get the one-process gradient. Gradients
                # are exchanged once per optimizer step, on the last micro-batch.
                last = index == len(batches) - 1
                with (sync_grads() if sync_grads is not None and not last else contextlib.nullcontext()):
                    with autocast(settings.precision, device):
                        loss, stats = task.loss(model, batch, norms)
                    scaled = loss * dist_info.world_size if dist_info.enabled else loss
                    if index == 0:
                        # The next steps are made while backward runs without the GIL, not while this
                        # thread launches the forward pass.
                        batches_ahead.make_ahead(settings.max_steps - state.step - 1)
                    (scaler.scale(scaled) if scaler else scaled).backward()
                step_sums.add("loss", loss)
                step_sums.add_all(stats)
            loss_total = step_sums.pop("loss")  # the one value read every step
            if dist_info.enabled:
                if average_gradients:
                    average_rank_gradients(model, dist_info)
                loss_total, tokens_total = all_reduce_values([loss_total, float(step_tokens)], dist_info, device)
                step_tokens = int(tokens_total)

            if not math.isfinite(loss_total):
                optimizer.zero_grad(set_to_none=True)
                state.skipped_steps += 1
                bad_in_a_row += 1
                progress.write(f"ptm: step {state.step + 1}: non-finite loss, update skipped ({bad_in_a_row} in a row)")
                if bad_in_a_row >= settings.max_bad_steps:
                    checkpoint()
                    raise PtmError(
                        f"training diverged: {bad_in_a_row} non-finite losses in a row at step {state.step + 1}; "
                        f"checkpoint saved in {run_dir / 'checkpoints'} (try a lower --lr or --precision fp32)"
                    )
                continue
            bad_in_a_row = 0
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = None
            if settings.clip_norm and settings.clip_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
                if dist_info.enabled:
                    grad_norm = full_tensor(grad_norm)  # under FSDP the norm is a DTensor
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            state.step += 1
            steps_here += 1
            state.tokens_seen += step_tokens
            step_time = time.perf_counter() - step_start
            state.elapsed_s = time.perf_counter() - started
            clock.add(step_time)
            if budget is not None and steps_here == 1 and resume is None and state.elapsed_s > budget:
                raise BudgetTooShort(f"--budget of {budget:g} s is shorter than one training step, which took {step_time:.1f} s "
                               "here; give a longer budget (or a smaller --batch-size)")
            window_tokens += step_tokens
            window_time += step_time
            window_steps += 1
            window_sums.add_sums(step_sums)
            window_sums.add("loss", loss_total)
            if grad_norm is not None:
                window_sums.add("grad_norm", grad_norm)

            postfix = None
            if state.step % settings.log_every == 0 or state.step == settings.max_steps:
                sums = window_sums.read()
                if dist_info.enabled:
                    # Per-rank sums of the task's statistics; loss and tokens are already global.
                    keys = sorted(k for k in sums if k not in ("loss", "grad_norm"))
                    for key, value in zip(keys, all_reduce_values([sums[k] for k in keys], dist_info, device)):
                        sums[key] = value
                tps = window_tokens / max(window_time, 1e-9)
                record = {"step": state.step, "loss": sums["loss"] / window_steps}
                record.update(task.summarize(sums))
                record["lr"] = optimizer.param_groups[0]["lr"]
                if "grad_norm" in sums:
                    record["grad_norm"] = sums["grad_norm"] / window_steps
                record["tokens_per_s"] = tps
                if settings.peak_flops and settings.flops_per_token:
                    record["mfu"] = settings.flops_per_token * tps / settings.peak_flops
                record["tokens_seen"] = state.tokens_seen
                record["elapsed_s"] = round(state.elapsed_s, 2)
                if budget is not None:
                    record["budget_left_s"] = round(max(0.0, budget - state.elapsed_s), 2)
                    if settings.batch_ramp:
                        record["grad_accum"] = len(batches)
                if metrics is not None:
                    metrics.write(record)
                state.last_metrics = record
                postfix = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}", "tok/s": f"{tps:,.0f}"}
                per_minute = learning_rate_of.update(record["loss"], state.elapsed_s)
                if budget is not None and per_minute is not None:
                    postfix["loss/min"] = f"{per_minute:+.3f}"
                if not interactive:
                    progress.write(_fmt({k: v for k, v in record.items() if k not in ("tokens_seen",)}))
                window_tokens, window_time, window_sums, window_steps = 0, 0.0, RunningSums(), 0
            if budget is not None:
                progress.update(min(round(state.elapsed_s), round(budget)) - (progress.bar.n if progress.bar else 0), postfix)
            else:
                progress.update(1, postfix)

            if settings.eval_every and state.step % settings.eval_every == 0:
                if _evaluate(model, task, settings, device, state, metrics, progress):
                    stop_reason = "early stopping"
                    break
            if settings.save_every and state.step % settings.save_every == 0:
                checkpoint()
                saved_at = state.step

    progress.close()
    # A run that ends by plan or by its time budget gets a final evaluation; a signal wants out now.
    if stop_reason in ("max-steps", "time budget", "budget") and (not settings.eval_every or state.step % settings.eval_every != 0):
        _evaluate(model, task, settings, device, state, metrics, progress)
    if saved_at != state.step:
        checkpoint()
    if stop_reason not in ("max-steps", "early stopping", "budget") and main:
        print(f"ptm: stopped at step {state.step} ({stop_reason}); resume with --resume {run_dir}", file=sys.stderr)
    state.last_metrics = dict(state.last_metrics, stop_reason=stop_reason)
    return state


class _LossPerMinute:
    """How fast the loss is falling: its change per minute between the last two logged windows,
    smoothed, for the progress bar of a budgeted run."""

    def __init__(self) -> None:
        self.previous: tuple[float, float] | None = None
        self.rate: float | None = None

    def update(self, loss: float, elapsed_s: float) -> float | None:
        if self.previous is not None and elapsed_s > self.previous[1]:
            rate = (loss - self.previous[0]) / ((elapsed_s - self.previous[1]) / 60.0)
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        self.previous = (loss, elapsed_s)
        return self.rate


def exit_after_signal(state: LoopState) -> None:
    """A run a signal stopped exits 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as shells
    and schedulers expect of a terminated job; its checkpoint is already saved."""
    reason = state.last_metrics.get("stop_reason")
    if reason in signal.Signals.__members__:
        sys.exit(128 + signal.Signals[reason].value)


def _evaluate(model, task: TrainTask, settings: LoopSettings, device, state: LoopState, metrics: MetricsLog | None, progress: _Progress) -> bool:
    """Evaluate and log; True when the task asks to stop (a task may define ``after_evaluate(step, results)``)."""
    model.eval()
    # Evaluation draws no randomness from the global RNG, so it cannot perturb a resumed run.
    with torch.no_grad():
        results = task.evaluate(model, settings.precision, device)
    model.train()
    if results and metrics is not None:
        record = {"step": state.step, **{f"eval_{k}": v for k, v in results.items()}}
        metrics.write(record)
        progress.write(_fmt(record))
    after = getattr(task, "after_evaluate", None)
    return bool(after(state.step, results)) if after is not None else False
