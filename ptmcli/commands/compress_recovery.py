"""Recovery finetuning after head pruning (``ptm compress --prune-heads F --recover-steps N``).

The pruned model trains for N optimizer steps on ``--data`` with its checkpoint's own task loss, through
``ptm finetune`` itself: the pruned state is written to a staging directory as a one-head multi-task
checkpoint (the encoder under its pretraining names, the head under ``task_heads.pruned.``), and
finetuning continues that head (``--head pruned``, the MT-DNN second stage), so the data is read, batched,
shuffled, optimized (AdamW, warmup then linear decay, clipping) and seeded exactly as ``ptm finetune``
does it. The trained tensors come back as a state dict; ``ptm compress`` then quantizes (if asked) and
publishes OUT in one atomic write. The staging directory is removed whatever happens.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ptmcli.errors import PtmError

HEAD = "pruned"
"""The name of the one head of the staging checkpoint."""


def _staging_config(config: dict, task: dict) -> dict:
    from ptmcli.finetuning.multitask_checkpoint import EXTRA_HEADS, MULTITASK

    staged = {k: v for k, v in config.items() if k not in ("task", "pruning", "best", "quantization")}
    staged["task"] = {"type": MULTITASK, "heads": {HEAD: dict(task)}, "input_style": task.get("input_style")}
    staged["extra_heads"] = {**(config.get("extra_heads") or {}), **EXTRA_HEADS}
    return staged


def _staging_weights(state: dict) -> dict:
    """The pruned state as a one-head multi-task checkpoint holds it."""
    from ptmcli.checkpoint.loading import HEADS_PREFIX, TASK_PARTS

    head = tuple(TASK_PARTS.values())
    return {(f"{HEADS_PREFIX}{HEAD}.{k}" if k.startswith(head) else k): v.contiguous() for k, v in state.items()}


def recover(state: dict, config: dict, tokenizer_dir: Path, *, data: str, steps: int, lr: float | None, seed: int,
            batch_size: int, threads: int | None, out: Path) -> tuple[dict, dict]:
    """``state`` (the pruned checkpoint's tensors; ``config`` its config.json, task included) after ``steps`` steps of
    finetuning on ``data``; returns (the trained state, the record of the recovery for config.json).

    The run stages beside ``out`` under the name of an interrupted write of it (``.OUT.tmp-recover-*``), which
    the next write of ``out`` clears should this process be killed before removing it."""
    from ptmcli.checkpoint import list_step_checkpoints, read_weights, save_checkpoint
    from ptmcli.commands import finetune
    from ptmcli.finetuning.config import FinetuneConfig, default_lr

    task = config["task"]
    mode = task.get("mode", "finetune")
    rate = lr if lr is not None else default_lr(mode, config["model"].get("hidden_size"))
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-recover-", dir=out.parent))
    try:
        source = save_checkpoint(staging / "pruned", config=_staging_config(config, task),
                                 weights=_staging_weights(state), tokenizer_dir=tokenizer_dir)
        columns = task.get("text_columns")
        run_cfg = FinetuneConfig(
            checkpoint=str(source), task=task["type"], train=data, head=HEAD, out=str(staging / "run"), mode=mode,
            pool=task.get("pool"), text_columns=",".join(columns) if columns else None,
            label_column=task.get("label_column"), max_len=int(task.get("max_len", 128)), max_steps=steps,
            batch_size=batch_size, lr=rate, seed=seed, threads=threads, progress=False,
            log_every=max(1, steps // 5), metric=task.get("metric"))
        try:
            finetune.run(run_cfg)
        except PtmError as err:
            raise PtmError(f"--recover-steps: {str(err).replace(f'--head {HEAD}: ', '')}") from None
        final = list_step_checkpoints(staging / "run")[-1]
        trained = read_weights(final)
        losses = [json.loads(line) for line in (staging / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    recovered = dict(state)
    for key, tensor in state.items():
        if key in trained:  # what finetuning does not hold (none for a BERT task model) stays as pruned
            if tuple(trained[key].shape) != tuple(tensor.shape):
                raise PtmError(f"--recover-steps: tensor {key!r} came back as {tuple(trained[key].shape)}, "
                               f"not {tuple(tensor.shape)}")
            recovered[key] = trained[key]
    train_losses = [m["loss"] for m in losses if "loss" in m and m.get("split", "train") == "train"]
    record = {"steps": steps, "lr": rate, "seed": seed, "batch_size": batch_size, "data": str(Path(data).resolve()),
              "schedule": run_cfg.schedule, "warmup_ratio": run_cfg.warmup_ratio}
    if train_losses:
        record["final_train_loss"] = round(float(train_losses[-1]), 6)
    return recovered, record
