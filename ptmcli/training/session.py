"""One run of ``ptm pretrain`` or ``ptm finetune``, from its devices to its exit status.

A command builds what is its own (data, model, task, optimizer, loop
settings, checkpoint config); the session does the rest the same way for
both: thread settings, torchrun's process group and this rank's device, the
run directory (refused early, created once every input is checked, put right
when resumed), ``run.json`` and ``results.json`` (each replaced whole), the
``save`` the loop calls, the banner, the loop itself, and the end: a barrier,
the process group's shutdown and the exit status of a run a signal stopped.

In the order a command calls it::

    session = RunSession(cfg, resume_from)
    session.check_run_dir()        # before long work, so a bad -o fails fast
    session.start()                # threads, process group, device
    ...                            # the command's data, model, task, optimizer
    settings = session.loop_settings(max_steps=..., lr=..., ...)
    session.open_run_dir(record)   # the main rank writes; every rank waits
    save = session.save_function(checkpoint_config, tokenizer_dir, weights)
    session.announce(banner)
    state = session.train(model, optimizer, task, settings, save)

Torch is imported only once the run starts, so flag errors stay instant.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ptmcli.errors import PtmError
from ptmcli.textio.atomic import atomic_write_text, restore_retired
from ptmcli.training.launch import SINGLE
from ptmcli.training.options import TrainingOptions
from ptmcli.training.run_dir import check_run_dir, create_run_dir

if TYPE_CHECKING:
    import torch

    from ptmcli.training.loop import LoopSettings, LoopState


class RunSession:
    """One training run: ``cfg`` its options, ``resume_from`` the checkpoint it continues (None: a new run)."""

    def __init__(self, cfg: TrainingOptions, resume_from: Path | None = None) -> None:
        self.cfg = cfg
        self.resume_from = resume_from
        self.dist_info = SINGLE
        self.device: torch.device | None = None
        self.run_dir: Path | None = None
        self._train_started: float | None = None

    @property
    def resuming(self) -> bool:
        return self.resume_from is not None

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes and speaks."""
        return self.dist_info.is_main

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def check_run_dir(self) -> Path:
        """The run directory, refused early if it cannot be used; nothing is written until ``open_run_dir``."""
        self.run_dir = check_run_dir(self.cfg.out, self.cfg.overwrite, resuming=self.resuming)
        return self.run_dir

    def start(self) -> torch.device:
        """Thread settings, torchrun's process group (when launched by it) and this rank's device, which it returns."""
        import torch

        from ptmcli.runtime.device import check_precision, resolve_device
        from ptmcli.training import distributed

        if self.cfg.threads is not None:
            if self.cfg.threads <= 0:
                raise PtmError(f"--threads {self.cfg.threads}: must be positive")
            torch.set_num_threads(self.cfg.threads)
        self.dist_info = distributed.from_environment(self.cfg.device)
        self.device = distributed.device_for(self.dist_info, resolve_device(self.cfg.device))
        check_precision(self.cfg.precision, self.device)
        if self.cfg.tensorboard:
            from ptmcli.training.tensorboard_log import check_available

            check_available()  # refused before the data and model are built
        return self.device

    def announce(self, *lines: str) -> None:
        """Lines for the person running the command, on stderr, said once (by the main rank)."""
        if self.is_main:
            for line in lines:
                print(line, file=sys.stderr)

    def global_batch_text(self) -> str | None:
        """Under torchrun, how the global batch is made up (for the banner); None for one process."""
        if not self.dist_info.enabled:
            return None
        world, batch, accum = self.dist_info.world_size, self.cfg.batch_size, self.cfg.grad_accum
        return f"global batch {batch * world * accum} = {batch} per device x {world} processes x {accum} accumulation"

    def loop_settings(self, **own) -> LoopSettings:
        """``loop.LoopSettings`` from the options both commands pass on as they are, plus the command's
        ``own`` (steps, rates, evaluation, ...)."""
        from ptmcli.training.loop import LoopSettings

        cfg = self.cfg
        return LoopSettings(
            schedule=cfg.schedule, grad_accum=cfg.grad_accum, clip_norm=cfg.clip_norm, precision=cfg.precision,
            log_every=cfg.log_every, save_every=cfg.save_every, keep_last=cfg.keep_last, progress=cfg.progress,
            tensorboard=cfg.tensorboard, **own,
        )

    def open_run_dir(self, record: dict, prepare: Callable[[Path], None] | None = None) -> None:
        """Create the run directory and write ``run.json`` (the configuration, then ``record``) on the main
        rank; every rank waits for it. Called once every input has been checked.

        A resumed run's directory is put right first: an output whose replacement
        a kill cut short (finetuning's ``best/``) is put back, and what killed saves
        and prunes left behind goes. ``prepare(run_dir)`` adds what the command
        keeps beside ``run.json``.
        """
        from ptmcli import checkpoint as ckpt_io
        from ptmcli.training import distributed

        if self.is_main:
            create_run_dir(self.run_dir, resuming=self.resuming)
            if self.resuming:
                restore_retired(self.run_dir)
                ckpt_io.prune_checkpoints(self.run_dir, self.cfg.keep_last)
            if prepare is not None:
                prepare(self.run_dir)
            self._write_json("run.json", {"config": self.cfg.to_dict(), **record})
        distributed.barrier(self.dist_info)

    def write_results(self, results: dict) -> None:
        """``results.json``: the run's final scores (main rank)."""
        self._write_json("results.json", results)

    def _write_json(self, name: str, value: dict) -> None:
        atomic_write_text(self.run_dir / name, json.dumps(value, indent=2) + "\n")

    def save_function(self, checkpoint_config: dict, tokenizer_dir: str | Path, weights: Callable[[], dict], *,
                      collective: bool = False) -> Callable[[int, dict, dict], None]:
        """The ``save`` the loop calls: ``checkpoints/step-N`` written by the main rank, then older steps pruned.

        ``weights()`` gives the tensors to store; ``collective``: every rank must
        call it (FSDP gathers the shards). The trainer state records the run's
        configuration and world size, which ``--resume`` reads.
        """
        from ptmcli import checkpoint as ckpt_io

        def save(step: int, optimizer_tensors: dict, trainer_state: dict) -> None:
            gathered = weights() if collective else None
            if not self.is_main:  # one writer; every rank holds the same state
                return
            trainer_state = dict(trainer_state, run_config=self.cfg.to_dict(), world_size=self.dist_info.world_size)
            target = self.run_dir / "checkpoints" / ckpt_io.step_dir_name(step)
            ckpt_io.save_checkpoint(
                target, config=checkpoint_config, weights=gathered if collective else weights(), tokenizer_dir=tokenizer_dir,
                metrics_file=self.metrics_file, optimizer_tensors=optimizer_tensors, trainer_state=trainer_state,
            )
            ckpt_io.prune_checkpoints(self.run_dir, self.cfg.keep_last)

        return save

    def train(self, model, optimizer, task, settings: LoopSettings, save: Callable[[int, dict, dict], None],
              **loop_options) -> LoopState:
        """Run the training loop (from the checkpoint resumed, if any) and return its final state.

        Then every rank meets at a barrier, and leaves the process group whatever
        happened. A run a signal stopped exits here, on the main rank, with
        128 + the signal's number; its checkpoint is saved. ``loop_options``
        go to ``loop.train`` as they are.
        """
        from ptmcli import checkpoint as ckpt_io
        from ptmcli.training import distributed
        from ptmcli.training.loop import exit_after_signal, train

        resume = ckpt_io.read_trainer(self.resume_from) if self.resuming else None
        # Under torchrun the task hands out global micro-batches; each rank keeps its share.
        shared = distributed.GlobalBatchShare(task, self.dist_info) if self.dist_info.enabled else task
        self._train_started = time.time()
        try:
            state = train(model, optimizer, shared, settings, device=self.device, run_dir=self.run_dir, save=save,
                          resume=resume, dist_info=self.dist_info, **loop_options)
            distributed.barrier(self.dist_info)
        finally:
            distributed.shutdown(self.dist_info)
        if self.is_main:
            exit_after_signal(state)
        return state

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds since the loop started."""
        return time.time() - self._train_started
