"""``ptm finetune --tasks tasks.toml``: multi-task finetuning, from the file to results.json.

The model, the batches and the checkpoint are ``ptmcli/finetuning/multitask.py``'s;
this module checks the flags and the file, builds them, and runs the loop the way
``commands/finetune.py`` does for one task.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.finetuning.multitask import (
    MEAN_METRIC,
    MultiTaskModel,
    MultiTaskTrainTask,
    build_checkpoint_config,
    head_config,
    mean_main_metric,
)
from ptmcli.tasks.task_spec import MultiTaskSpec, read_tasks, sampling_probabilities

# Single-task flags that a tasks.toml sets per task, or that multi-task runs do not take (yet).
PER_TASK_FLAGS = ("task", "train", "dev", "text_columns", "label_column", "metric")
REFUSED_FLAGS = {
    "train_features": "stored features serve one task", "dev_features": "stored features serve one task",
    "head": "--head chooses the head of a multi-task checkpoint to continue single-task finetuning from",
    "gradual_unfreeze": "gradual unfreezing is not supported in multi-task runs",
    "aux_lm_weight": "the auxiliary LM loss is not supported in multi-task runs",
    "from_scratch": "--from-scratch is not supported in multi-task runs",
    "cvt_unlabeled": "cross-view training is not supported in multi-task runs",
    **{name: "each head of a multi-task run reads the shared encoder's output itself (no task encoder)"
       for name in ("encoder", "encoder_hidden", "encoder_layers", "freeze_embeddings")},
}


def _check_resumed(saved_heads: dict, spec: MultiTaskSpec, labels: dict[str, list[str]]) -> None:
    """A resumed run's tasks file must still describe the heads it saved: names, types and labels."""
    same = list(saved_heads) == [t.name for t in spec.tasks] and all(
        saved_heads[t.name]["type"] == t.type and list(saved_heads[t.name].get("labels") or []) == labels[t.name] for t in spec.tasks)
    if not same:
        trained = ", ".join(f"{name} ({head['type']})" for name, head in saved_heads.items())
        raise PtmError(f"{spec.path}: its tasks are not the ones the resumed run trained ({trained})")


def _check_flags(cfg, explicit: set[str]) -> None:
    for name in PER_TASK_FLAGS:
        if name in explicit and getattr(cfg, name) is not None:
            raise PtmError(f"--{name.replace('_', '-')} is set per task in --tasks {cfg.tasks} ([[task]] tables)")
    for name, why in REFUSED_FLAGS.items():
        value = getattr(cfg, name, None)
        if value not in (None, False, 0, 0.0):
            raise PtmError(f"--{name.replace('_', '-')} with --tasks: {why}")
    if cfg.checkpoint is None or cfg.out is None:
        raise PtmError("--checkpoint is required" if cfg.checkpoint is None else "-o/--out is required")
    for name in ("batch_size", "grad_accum", "max_len", "log_every"):
        if getattr(cfg, name) <= 0:
            raise PtmError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be positive")
    if cfg.lr is not None and cfg.lr <= 0:
        raise PtmError(f"--lr {cfg.lr}: must be positive")
    for name in ("patience", "eval_every", "save_every", "keep_last"):
        if getattr(cfg, name) < 0:
            raise PtmError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must not be negative")


def run_length(cfg, spec: MultiTaskSpec, explicit: set[str], per_epoch: int) -> int:
    """Optimizer steps: --max-steps or --epochs given on the command line, else the file's steps or epochs, else --epochs."""
    if "max_steps" in explicit and cfg.max_steps:
        return cfg.max_steps
    if "epochs" not in explicit:
        if spec.steps is not None:
            return spec.steps
        if spec.epochs is not None:
            return max(1, math.ceil(spec.epochs * per_epoch))
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * per_epoch))


def run_multitask(cfg, explicit: set[str], ckpt_to_resume: Path | None = None) -> dict:
    """``ptm finetune --tasks FILE``: train one head per task on a shared encoder; returns results.json's content.
    ``ckpt_to_resume``: the step checkpoint ``--resume`` continues (its run configuration is ``cfg``)."""
    import torch

    from ptmcli import checkpoint as ckpt_io
    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.commands.finetune import _keep_tokenizer, report_results
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.finetuning.config import default_lr
    from ptmcli.finetuning.evaluate import DEFAULT_METRIC, predict, scalar_metrics, score
    from ptmcli.finetuning.methods import discriminative_groups
    from ptmcli.finetuning.task import steps_per_epoch
    from ptmcli.finetuning.task_model import TaskModel, checkpoint_pool
    from ptmcli.tasks.collate import collate
    from ptmcli.tasks.labeled_shards import prepare_labeled
    from ptmcli.tasks.labels import output_size
    from ptmcli.tasks.readers import read_labeled
    from ptmcli.training.optim import adamw_for_groups
    from ptmcli.training.session import RunSession

    _check_flags(cfg, explicit)
    spec = read_tasks(cfg.tasks)  # every mistake in the file fails here, before any model loads
    if cfg.patience and not any(t.dev for t in spec.tasks):
        raise PtmError(f"--patience needs a task with a dev file in {spec.path} to watch")
    cfg = replace(cfg, tasks=os.path.abspath(cfg.tasks))  # so that --resume finds it from anywhere
    session = RunSession(cfg, ckpt_to_resume)
    saved_heads = ckpt_io.read_config(ckpt_to_resume)["task"]["heads"] if ckpt_to_resume is not None else None
    device = session.start()
    if session.dist_info.enabled:
        raise PtmError("--tasks runs in one process; run it without torchrun")
    source = load_checkpoint(open_checkpoint(cfg.checkpoint))
    if source.config.get("task"):
        raise PtmError(f"--checkpoint {cfg.checkpoint}: already finetuned for {source.config['task'].get('type')}; "
                       "start from a pretrained checkpoint")
    if cfg.mode != "features":
        from ptmcli.compress.quantize import refuse_training

        refuse_training(source.config, f"--checkpoint {cfg.checkpoint} (--mode {cfg.mode})")
    arch, family, tokenizer = source.arch, source.family, source.tokenizer
    if family.task_encoder is not None:
        raise PtmError(f"--checkpoint {cfg.checkpoint}: {family.title} vectors have no contextual encoder to share; "
                       "multi-task runs need a contextual model (bert, gpt, elmo, ...)")
    positions = family.position_limit(source.model_config)
    for task in spec.tasks:
        length = task.max_len or cfg.max_len
        if positions is not None and length > positions:
            raise PtmError(f"{spec.path}: task {task.name!r}: max_len {length} exceeds the model's {positions} positions")
    run_dir = session.check_run_dir()

    names = [t.name for t in spec.tasks]
    train, dev, dev_examples, labels = [], {}, {}, {}
    for task in spec.tasks:
        length = task.max_len or cfg.max_len
        rows = prepare_labeled(task.train, tokenizer, task.type, arch, length, text_columns=task.text_columns, label_column=task.label_column)
        if len(rows) == 0:
            raise PtmError(f"{spec.path}: task {task.name!r}: train {task.train}: no examples")
        train.append(rows)
        labels[task.name] = list(rows.labels)
        if task.dev:
            dev[task.name] = prepare_labeled(task.dev, tokenizer, task.type, arch, length, labels=rows.labels or None,
                                             text_columns=task.text_columns, label_column=task.label_column)
            if task.type == "token-classification":
                dev_examples[task.name] = read_labeled(task.dev, task.type).examples
    probabilities = sampling_probabilities([len(r) for r in train], spec.temperature)
    metrics = {t.name: t.metric or DEFAULT_METRIC[t.type] for t in spec.tasks}

    if saved_heads is not None:
        _check_resumed(saved_heads, spec, labels)
    torch.manual_seed(cfg.seed)
    lm = source.model
    heads, head_configs = {}, {}
    for task in spec.tasks:
        pool = task.pool or cfg.pool
        if saved_heads is not None:
            pool = saved_heads[task.name].get("pool")
        elif pool is None:
            pool, why = checkpoint_pool(family, task.type, cfg.mode, source.config, source.initialised, str(source.path / "config.json"))
            if why:
                session.announce(f"ptm: task {task.name}: pooling {pool}, {why} (pool = ... in {spec.path} to change)")
        head = TaskModel(arch, lm, task.type, output_size(task.type, labels[task.name]), cfg.mode, pool=pool, normed_top=True)
        head.set_mask_id(tokenizer.mask_id)
        heads[task.name] = head
        head_configs[task.name] = head_config(task, labels[task.name], cfg.mode, arch, task.max_len or cfg.max_len,
                                              metrics[task.name], pool)
    model = MultiTaskModel(lm, heads)
    if saved_heads is not None:
        model.load_checkpoint_state(ckpt_io.read_weights(ckpt_to_resume), str(ckpt_to_resume))
    model.to(device)
    model.train()

    num_layers = family.num_layers(source.model_config)
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.mode, getattr(source.model_config, "hidden_size", None))
    optimizer = adamw_for_groups(discriminative_groups(model, lr, cfg.weight_decay, cfg.discriminative_lr, num_layers), lr,
                                 betas=(0.9, 0.999), eps=1e-6, device=device.type)
    pad_ids = [rows.pad_id for rows in train]
    per_epoch = steps_per_epoch(sum(len(r) for r in train), cfg.batch_size, cfg.grad_accum)
    max_steps = run_length(cfg, spec, explicit, per_epoch)
    checkpoint_config = build_checkpoint_config(source, head_configs, sampling=spec.sampling, temperature=spec.temperature,
                                                probabilities=dict(zip(names, probabilities)), mode=cfg.mode)
    task_config = checkpoint_config["task"]

    def evaluate_dev(m, precision, dev_device):
        results, out = {}, {}
        for name, rows in dev.items():
            logits = predict(m.heads[name], rows, batch_size=max(cfg.batch_size, 64), device=dev_device, precision=precision,
                             pad_id=rows.pad_id, max_length=positions)
            result, _ = score(heads[name].task_type, labels[name], logits, rows, dev_examples.get(name))
            results[name] = scalar_metrics(result)
            out.update({f"{name}/{key}": value for key, value in results[name].items()})
        out[MEAN_METRIC] = mean_main_metric(results, metrics)
        return out

    best_dir = run_dir / "best"
    tokenizer_copy = run_dir / "tokenizer"

    def save_best(step: int, results: dict) -> None:
        ckpt_io.save_checkpoint(best_dir, config=dict(checkpoint_config, best={"step": step, **results}),
                                weights=model.checkpoint_state(), tokenizer_dir=tokenizer_copy, metrics_file=session.metrics_file)

    task = MultiTaskTrainTask(names, train, probabilities,
                              lambda which, rows: collate(rows, pad_ids[which], max_length=positions),
                              batch_size=cfg.batch_size, seed=cfg.seed, evaluate_dev=evaluate_dev if dev else None,
                              patience=cfg.patience, on_best=save_best)
    settings = session.loop_settings(max_steps=max_steps, lr=lr, warmup_steps=round(cfg.warmup_ratio * max_steps),
                                     eval_every=(cfg.eval_every or per_epoch) if dev else 0)
    save = session.save_function(checkpoint_config, tokenizer_copy, model.checkpoint_state)
    session.open_run_dir({"task": task_config, "source": str(source.path), "tasks": spec.to_dict()},
                         prepare=lambda _: _keep_tokenizer(source.path, tokenizer_copy))
    shares = ", ".join(f"{t.name} ({t.type}, {len(r):,} train, p {p:.3f})" for t, r, p in zip(spec.tasks, train, probabilities))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sampling = "proportional" if spec.sampling == "proportional" else f"temperature {spec.temperature:g}"
    session.announce(f"ptm: multi-task finetuning {arch} ({source.path}), mode {cfg.mode}, {len(names)} tasks sampled "
                     f"{sampling}: {shares}; {max_steps:,} steps ({per_epoch:,}/epoch), lr {lr:g}, "
                     f"{trainable / 1e6:.2f}M trainable parameters, {device.type} {cfg.precision} -> {run_dir}")
    state = session.train(model, optimizer, task, settings, save)
    return report_results(session, state, task, MEAN_METRIC, best_dir, run_dir, [], lr)
