"""``ptm distill``: a finetuned teacher + a student (checkpoint or preset) + labeled data -> a finetuned student.

Built from finetuning's parts: its data reading, task model, task (``DistillTask`` changes only the
loss), evaluation and best-checkpoint rule, and the shared run session and loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.finetuning.distill_config import DistillConfig
from ptmcli.training import resume
from ptmcli.training.session import RunSession

# Beside a step checkpoint's optimizer state: the hidden-state projections, which are not part of the student.
PROJECTIONS = "projections.safetensors"
# Config fields that give a model its shape; a preset student takes the teacher's values of the others.
SHAPE_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "heads_per_layer")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _validate(cfg: DistillConfig) -> None:
    for name in ("teacher", "student", "task", "train", "out"):
        if getattr(cfg, name) is None:
            # Without a task the teacher would be a pretrained one: that is pretraining's distillation.
            hint = (" (ptm distill is task distillation; to distill a pretrained teacher on unlabeled shards use "
                    "ptm pretrain --objective mlm-distill --teacher CHECKPOINT --data SHARDS)") if name == "task" else ""
            raise PtmError(f"{'-o/--out' if name == 'out' else _flag(name)} is required{hint}")
    for name in ("batch_size", "grad_accum", "log_every"):
        if getattr(cfg, name) <= 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must be positive")
    if cfg.max_len is not None and cfg.max_len <= 0:
        raise PtmError(f"--max-len {cfg.max_len}: must be positive")
    if cfg.epochs <= 0 or (cfg.max_steps is not None and cfg.max_steps <= 0) or (cfg.lr is not None and cfg.lr <= 0):
        raise PtmError("--epochs, --max-steps and --lr must be positive")
    if cfg.temperature <= 0:
        raise PtmError(f"--temperature {cfg.temperature}: must be positive")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise PtmError(f"--alpha {cfg.alpha}: must be in [0, 1]")
    for name in ("hidden_weight", "attention_weight", "patience", "eval_every", "save_every", "keep_last"):
        if getattr(cfg, name) < 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must not be negative")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise PtmError(f"--warmup-ratio {cfg.warmup_ratio}: must be in [0, 1)")
    if cfg.patience and not cfg.dev:
        raise PtmError("--patience needs --dev data to watch")


def _load_teacher(cfg: DistillConfig):
    """(teacher TaskModel, its config.json, tokenizer, checkpoint dir), refused unless finetuned for --task."""
    from ptmcli.checkpoint import resolve_checkpoint
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.finetuning.task_model import load_task_model

    path = resolve_checkpoint(open_checkpoint(cfg.teacher, "--teacher"))
    task = json.loads((path / "config.json").read_text()).get("task")
    if not isinstance(task, dict):
        raise PtmError(f"--teacher {cfg.teacher}: not a finetuned checkpoint (no task in its config.json); finetune it first with "
                       f"ptm finetune, or distill it during pretraining: ptm pretrain --objective mlm-distill --teacher {cfg.teacher} "
                       "--data SHARDS (DistilBERT's objective)")
    from ptmcli.finetuning.multitask_checkpoint import refuse_multitask

    refuse_multitask({"task": task}, f"--teacher {cfg.teacher}", "ptm distill")
    if task.get("type") != cfg.task:
        raise PtmError(f"--teacher {cfg.teacher} is finetuned for {task.get('type')}, not --task {cfg.task}")
    if task.get("mode", "finetune") != "finetune" or task.get("encoder"):
        raise PtmError(f"--teacher {cfg.teacher}: a --mode features or word-vector model; distillation needs a fully finetuned one")
    model, config, tokenizer = load_task_model(path)
    return model, config, tokenizer, path


def _is_bert_like(family, lm) -> bool:
    from ptmcli.models.bert import BertModel

    return isinstance(family.encoder(lm), BertModel)


def _student_lm(cfg: DistillConfig, teacher_config: dict, teacher_family, tokenizer):
    """(pretrained model, its model config, source config.json or None, initialised heads) of --student."""
    import torch

    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.models.registry import FAMILIES

    if Path(cfg.student).exists():
        from ptmcli.convert.open import open_checkpoint

        source = load_checkpoint(open_checkpoint(cfg.student, "--student"))
        if source.arch != teacher_config["arch"]:
            raise PtmError(f"--student {cfg.student} is a {source.family.title} model and the teacher a {teacher_family.title} one; "
                           "distillation needs one family")
        if source.config.get("task"):
            raise PtmError(f"--student {cfg.student}: already finetuned; give a pretrained checkpoint or a preset")
        if source.tokenizer.sha256 != tokenizer.sha256:
            raise PtmError(f"--student {cfg.student}: its tokenizer differs from the teacher's; the student must read the same token ids")
        return source.model, source.model_config, source.config, source.initialised
    if cfg.student not in teacher_family.presets:
        owner = next((f for f in FAMILIES.values() if cfg.student in f.presets), None)
        if owner is not None:
            raise PtmError(f"--student {cfg.student} is a {owner.title} preset and the teacher a {teacher_family.title} model; "
                           "distillation needs one family")
        raise PtmError(f"--student {cfg.student}: neither a checkpoint nor a {teacher_family.title} preset "
                       f"({', '.join(teacher_family.presets)})")
    teacher_model = teacher_family.config_class.from_dict(teacher_config["model"])
    preset_fields = set(teacher_family.presets[cfg.student])
    kept = {f.name: getattr(teacher_model, f.name) for f in dataclasses.fields(teacher_model)
            if f.name not in SHAPE_FIELDS and f.name not in preset_fields}
    model_config = teacher_family.preset_config(cfg.student, **kept)
    torch.manual_seed(cfg.seed)
    return teacher_family.build(model_config, tokenizer), model_config, None, None


def _save_projections(directory: Path, tensors: dict) -> None:
    import os

    from safetensors.torch import save_file

    target = directory / "trainer" / PROJECTIONS
    staging = target.with_name(target.name + ".tmp")
    save_file(tensors, str(staging))
    os.replace(staging, target)


def run(cfg: DistillConfig, explicit: set[str] | None = None) -> dict:
    """Distill per ``cfg``; returns the best (or final) dev metrics."""
    explicit = explicit or set()
    ckpt_to_resume = None
    if cfg.resume:
        from ptmcli.commands.finetune import (
            RESUMABLE_OVERRIDES,  # a distillation run resumes as a finetuning run does
        )

        cfg, ckpt_to_resume = resume.resumed_config(DistillConfig, cfg, explicit, RESUMABLE_OVERRIDES)
    _validate(cfg)

    import torch

    from ptmcli import checkpoint as ckpt_io
    from ptmcli.commands.finetune import _columns, _keep_tokenizer, report_results
    from ptmcli.finetuning.config import default_lr
    from ptmcli.finetuning.distillation import (
        DistillationModel,
        DistillTask,
        check_attention_heads,
        init_from_teacher,
    )
    from ptmcli.finetuning.evaluate import predict, scalar_metrics, score
    from ptmcli.finetuning.methods import discriminative_groups
    from ptmcli.finetuning.task import steps_per_epoch
    from ptmcli.finetuning.task_model import TaskModel, checkpoint_pool
    from ptmcli.tasks.collate import collate
    from ptmcli.tasks.labeled_shards import prepare_labeled
    from ptmcli.tasks.labels import output_size
    from ptmcli.tasks.readers import read_labeled
    from ptmcli.training.optim import adamw_for_groups

    session = RunSession(cfg, ckpt_to_resume)
    device = session.start()
    if session.dist_info.enabled:
        raise PtmError("ptm distill runs in one process (not under torchrun)")
    teacher, teacher_config, tokenizer, teacher_path = _load_teacher(cfg)
    family, arch, teacher_task = teacher.family, teacher_config["arch"], teacher_config["task"]
    if not _is_bert_like(family, teacher.lm):
        raise PtmError(f"--teacher {cfg.teacher}: ptm distill takes BERT-style encoders (bert, roberta, ...), not {family.title}")
    lm, model_config, student_source, initialised = _student_lm(cfg, teacher_config, family, tokenizer)
    max_len = cfg.max_len or int(teacher_task.get("max_len", 128))
    positions = family.position_limit(model_config)
    if positions is not None and max_len > positions:
        raise PtmError(f"--max-len {max_len} exceeds the student's {positions} positions")
    labels = list(teacher_task.get("labels") or [])
    torch.manual_seed(cfg.seed)
    if cfg.init_from_teacher or ckpt_to_resume is not None:
        pool = teacher_task.get("pool") if cfg.init_from_teacher else (ckpt_io.read_config(ckpt_to_resume).get("task") or {}).get("pool")
    elif student_source is not None:
        pool, why = checkpoint_pool(family, cfg.task, "finetune", student_source, initialised, str(cfg.student))
        if why:
            session.announce(f"ptm: pooling {pool}, {why}")
    else:
        pool = None
    student = TaskModel(arch, lm, cfg.task, output_size(cfg.task, labels), "finetune", pool=pool, normed_top=True)
    copied = init_from_teacher(student, teacher) if cfg.init_from_teacher else []
    if cfg.attention_weight > 0:
        check_attention_heads(student, teacher)
    model = DistillationModel(student, teacher, hidden=cfg.hidden_weight > 0, attention=cfg.attention_weight > 0)
    if ckpt_to_resume is not None:
        student.load_checkpoint_state(ckpt_io.read_weights(ckpt_to_resume), str(ckpt_to_resume))
        if len(model.projections):
            from ptmcli.checkpoint.weights import read_tensors

            saved = ckpt_to_resume / "trainer" / PROJECTIONS
            if not saved.exists():
                raise PtmError(f"--resume {cfg.resume}: {saved} is missing (the hidden-state projections)")
            model.projections.load_state_dict(read_tensors(saved))
    run_dir = session.check_run_dir()

    text_columns = _columns(cfg.text_columns) or teacher_task.get("text_columns")
    label_column = cfg.label_column or teacher_task.get("label_column")
    read = dict(text_columns=text_columns, label_column=label_column)
    train_rows = prepare_labeled(cfg.train, tokenizer, cfg.task, arch, max_len, labels=labels or None, **read)
    if len(train_rows) == 0:
        raise PtmError(f"--train {cfg.train}: no examples")
    dev_rows = dev_examples = None
    if cfg.dev:
        dev_rows = prepare_labeled(cfg.dev, tokenizer, cfg.task, arch, max_len, labels=labels or None, **read)
        if cfg.task == "token-classification":
            dev_examples = read_labeled(cfg.dev, cfg.task, **read).examples
    metric = teacher_task.get("metric") or "accuracy"

    model.to(device)
    model.train()
    lr = cfg.lr if cfg.lr is not None else default_lr("finetune", family.feature_size(model_config))
    num_layers = family.num_layers(model_config)
    groups = discriminative_groups(student, lr, cfg.weight_decay, 1.0, num_layers)
    if len(model.projections):
        named = list(model.projections.named_parameters(prefix="projections"))
        groups.append({"params": [p for _, p in named], "names": [n for n, _ in named], "weight_decay": 0.0, "lr": lr, "layer_group": num_layers + 2})
    optimizer = adamw_for_groups(groups, lr, betas=(0.9, 0.999), eps=1e-6, device=device.type)

    pad_id = train_rows.pad_id
    batch_of = lambda rows: collate(rows, pad_id, max_length=positions)  # noqa: E731
    per_epoch = steps_per_epoch(len(train_rows), cfg.batch_size, cfg.grad_accum)
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    task_config = {
        "type": cfg.task, "labels": labels, "mode": "finetune", "input_style": arch, "max_len": max_len,
        "text_columns": text_columns, "label_column": label_column, "metric": metric, "normed_top_layer": True,
    }
    if pool is not None:
        task_config["pool"] = pool
    distilled = {"teacher": str(teacher_path), "student": cfg.student, "init_from_teacher": cfg.init_from_teacher,
                 "temperature": cfg.temperature, "alpha": cfg.alpha, "hidden_weight": cfg.hidden_weight,
                 "attention_weight": cfg.attention_weight}
    checkpoint_config = {
        "arch": arch, "model": model_config.to_dict(), "objective": (student_source or {}).get("objective"), "task": task_config,
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "finetuned_from": cfg.student if student_source is not None else None, "distilled_from": distilled,
    }

    def evaluate_dev(m, precision, dev):
        logits = predict(m.student, dev_rows, batch_size=max(cfg.batch_size, 64), device=dev, precision=precision, pad_id=pad_id, max_length=positions)
        result, _ = score(cfg.task, labels, logits, dev_rows, dev_examples)
        return scalar_metrics(result)

    best_dir = run_dir / "best"
    tokenizer_copy = run_dir / "tokenizer"

    def save_best(step: int, results: dict) -> None:
        ckpt_io.save_checkpoint(best_dir, config=dict(checkpoint_config, best={"step": step, **results}),
                                weights=student.checkpoint_state(), tokenizer_dir=tokenizer_copy, metrics_file=session.metrics_file)

    task = DistillTask(
        model, train_rows, batch_of, batch_size=cfg.batch_size, seed=cfg.seed, evaluate_dev=evaluate_dev if dev_rows is not None else None,
        metric=metric, patience=cfg.patience, on_best=save_best, num_layers=num_layers,
        temperature=cfg.temperature, alpha=cfg.alpha, hidden_weight=cfg.hidden_weight, attention_weight=cfg.attention_weight,
    )
    settings = session.loop_settings(max_steps=max_steps, lr=lr, warmup_steps=round(cfg.warmup_ratio * max_steps),
                                     eval_every=(cfg.eval_every or per_epoch) if dev_rows is not None else 0)
    save_student = session.save_function(checkpoint_config, tokenizer_copy, student.checkpoint_state)

    def save(step: int, optimizer_tensors: dict, trainer_state: dict) -> None:
        save_student(step, optimizer_tensors, trainer_state)
        if len(model.projections):
            _save_projections(run_dir / "checkpoints" / ckpt_io.step_dir_name(step), model.projection_state())

    session.open_run_dir({"task": task_config, "teacher": str(teacher_path)}, prepare=lambda _: _keep_tokenizer(teacher_path, tokenizer_copy))
    terms = [f"soft targets T={cfg.temperature:g} alpha={cfg.alpha:g}"]
    terms += [f"{name} x{weight:g}" for name, weight in (("hidden MSE", cfg.hidden_weight), ("attention KL", cfg.attention_weight)) if weight > 0]
    start = f"{len(copied)} tensors from the teacher" if copied else ("random init" if student_source is None else cfg.student)
    session.announce(
        f"ptm: distilling {teacher_path} ({family.num_layers(teacher.lm.config)} layers x {family.feature_size(teacher.lm.config)}) into "
        f"{cfg.student} ({num_layers} layers x {family.feature_size(model_config)}, {start}) for {cfg.task}, {', '.join(terms)}; "
        f"{len(train_rows):,} train{f' / {len(dev_rows):,} dev' if dev_rows is not None else ''} examples, {max_steps:,} steps "
        f"({per_epoch:,}/epoch), lr {lr:g}, {sum(p.numel() for p in student.parameters()) / 1e6:.2f}M student parameters, "
        f"{device.type} {cfg.precision} -> {run_dir}"
    )
    state = session.train(model, optimizer, task, settings, save)
    return report_results(session, state, task, metric, best_dir, run_dir, labels, lr)
