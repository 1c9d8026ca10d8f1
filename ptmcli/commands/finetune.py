"""``ptm finetune``: a pretrained checkpoint + labeled data -> a task model, with the pretraining loop."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from ptmcli.errors import PtmError, where
from ptmcli.finetuning.config import FinetuneConfig
from ptmcli.tasks import QA, SEQ2SEQ
from ptmcli.training import resume
from ptmcli.training.session import RunSession

RESUMABLE_OVERRIDES = {"max_steps", "epochs", "save_every", "eval_every", "log_every", "keep_last", "progress", "device", "threads", "out", "resume", "patience", "tensorboard"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _validate(cfg: FinetuneConfig) -> None:
    for name in ("checkpoint", "task", "train", "out"):
        if name == "checkpoint" and cfg.train_features:
            continue  # the features say which checkpoint they came from
        if name == "train" and cfg.task == SEQ2SEQ and (cfg.source_file or cfg.target_file):
            continue  # parallel files instead
        if getattr(cfg, name) is None:
            raise PtmError(f"{'-o/--out' if name == 'out' else _flag(name)} is required")
    for name in ("batch_size", "grad_accum", "max_len", "log_every", "doc_stride", "max_answer_len"):
        if getattr(cfg, name) <= 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must be positive")
    if cfg.epochs <= 0:
        raise PtmError(f"--epochs {cfg.epochs}: must be positive")
    if cfg.max_steps is not None and cfg.max_steps <= 0:
        raise PtmError(f"--max-steps {cfg.max_steps}: must be positive")
    if cfg.lr is not None and cfg.lr <= 0:
        raise PtmError(f"--lr {cfg.lr}: must be positive")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise PtmError(f"--warmup-ratio {cfg.warmup_ratio}: must be in [0, 1)")
    if cfg.discriminative_lr < 1.0:
        raise PtmError(f"--discriminative-lr {cfg.discriminative_lr}: must be at least 1 (1 turns it off)")
    if cfg.aux_lm_weight < 0 or not 0 < cfg.aux_lm_decay <= 1:
        raise PtmError("--aux-lm-weight must be >= 0 and --aux-lm-decay in (0, 1]")
    for name in ("patience", "eval_every", "save_every", "keep_last"):
        if getattr(cfg, name) < 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must not be negative")
    if cfg.patience and not (cfg.dev or cfg.dev_source_file):
        raise PtmError("--patience needs --dev data to watch")
    if cfg.mode == "features" and cfg.gradual_unfreeze:
        raise PtmError("--gradual-unfreeze conflicts with --mode features (the pretrained model stays frozen)")
    if cfg.task == QA and cfg.train_features:
        raise PtmError("--train-features holds one vector per text or word; --task qa trains on passage windows through the encoder")
    if cfg.dev_features and not cfg.train_features:
        raise PtmError("--dev-features needs --train-features (training through the encoder evaluates --dev through it too)")
    _validate_seq2seq(cfg)


# Flags of --task seq2seq alone, and what they hold when unset.
SEQ2SEQ_FLAGS = {"source_file": None, "target_file": None, "dev_source_file": None, "dev_target_file": None,
                 "max_source_len": None, "max_target_len": None, "label_smoothing": 0.0, "num_beams": 1, "target_mask_prob": 0.7}


def _validate_seq2seq(cfg: FinetuneConfig) -> None:
    if cfg.task != SEQ2SEQ:
        for name, unset in SEQ2SEQ_FLAGS.items():
            if getattr(cfg, name) != unset:
                raise PtmError(f"{_flag(name)} applies to --task seq2seq")
        return
    if cfg.num_beams < 1:
        raise PtmError(f"--num-beams {cfg.num_beams}: must be at least 1")
    for name in ("max_source_len", "max_target_len"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must be positive")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise PtmError(f"--label-smoothing {cfg.label_smoothing}: must be in [0, 1)")
    # What reads a pooled vector or a head, or splits the model into one stack's layer groups, has no meaning here.
    for name, value, unset in (("train_features", cfg.train_features, None), ("mode", cfg.mode, "finetune"),
                               ("pool", cfg.pool, None), ("aux_lm_weight", cfg.aux_lm_weight, 0.0),
                               ("gradual_unfreeze", cfg.gradual_unfreeze, False), ("discriminative_lr", cfg.discriminative_lr, 1.0),
                               ("text_columns", cfg.text_columns, None), ("label_column", cfg.label_column, None)):
        if value != unset:
            raise PtmError(f"{_flag(name)} does not apply to --task seq2seq, which trains the model's own decoder "
                           "(an encoder-decoder's, or a BERT LM head as UniLM's), not a head over pooled vectors")
    if cfg.metric is not None and cfg.metric not in ("bleu", "chrf"):
        raise PtmError(f"--metric {cfg.metric}: --task seq2seq keeps the best checkpoint by bleu or chrf")


def _seq2seq_texts(cfg: FinetuneConfig):
    """(train, dev or None) text pairs, read before any model loads so that a bad line fails at once."""
    from ptmcli.tasks.seq2seq_data import read_set

    train = read_set(cfg.train, cfg.source_file, cfg.target_file, "--train")
    dev = read_set(cfg.dev, cfg.dev_source_file, cfg.dev_target_file, "--dev", "dev-")
    return train, dev


def _pairs_file(cfg: FinetuneConfig, name: str, side: str) -> str:
    """The file that holds the ``side`` texts of the ``name`` (train or dev) pairs."""
    if name == "train":
        return cfg.train or (cfg.source_file if side == "source" else cfg.target_file)
    return cfg.dev or (cfg.dev_source_file if side == "source" else cfg.dev_target_file)


def _keep_tokenizer(source: Path, target: Path) -> None:
    """The source checkpoint's tokenizer files, copied once into the run directory."""
    from ptmcli.checkpoint import TOKENIZER_FILES, copy_tokenizer_files
    from ptmcli.textio.atomic import atomic_directory

    if target.is_dir() and any((target / name).exists() for name in TOKENIZER_FILES):
        return
    with atomic_directory(target, overwrite=True) as staging:
        copy_tokenizer_files(source, staging)


def _result_warnings(best: dict | None, labels: list[str], lr: float) -> list[str]:
    """What a person should not miss in a run's outcome."""
    if not best or len(labels) < 2 or best.get("predicted_classes") != 1:
        return []
    return [f"the best dev predictions are all one class (accuracy {best.get('accuracy', 0):.4f} is the share of "
            f"that class, MCC {best.get('mcc') or 0:.2f}): the model learned no more than the majority; try another "
            f"--lr (this run: {lr:g}), more --epochs or more data"]


def _outputs_text(task: str, labels: list[str]) -> str:
    if task == QA:
        return "answer spans"
    if task == SEQ2SEQ:
        return "generated text"
    return f"{len(labels)} labels" if labels else "a score"


def _rows_name(task: str) -> str:
    return {QA: "windows", SEQ2SEQ: "pairs"}.get(task, "examples")


def _columns(value: str | None) -> list[str] | None:
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def run(cfg: FinetuneConfig, explicit: set[str] | None = None) -> dict:
    """Finetune per ``cfg``; returns the best (or final) dev metrics."""
    explicit = explicit or set()
    ckpt_to_resume = None
    if cfg.resume:
        cfg, ckpt_to_resume = resume.resumed_config(FinetuneConfig, cfg, explicit, RESUMABLE_OVERRIDES)
    if cfg.tasks:
        from ptmcli.commands.finetune_multitask import run_multitask

        return run_multitask(cfg, explicit, ckpt_to_resume)
    _validate(cfg)
    stored = None
    if cfg.train_features:
        from ptmcli.finetuning.stored_features import open_stored

        stored, cfg = open_stored(cfg, explicit)
    from ptmcli.finetuning import cross_view

    unlabeled = cross_view.read_unlabeled(cfg)  # cross-view training's text, refused before anything is written
    texts = _seq2seq_texts(cfg) if cfg.task == SEQ2SEQ else None

    import torch

    from ptmcli import checkpoint as ckpt_io
    from ptmcli.checkpoint.loading import load_checkpoint, saved_normed_top
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.finetuning import word_encoders
    from ptmcli.finetuning.config import default_lr
    from ptmcli.finetuning.evaluate import DEFAULT_METRIC, predict, scalar_metrics, score
    from ptmcli.finetuning.methods import discriminative_groups
    from ptmcli.finetuning.task import FinetuneTask, steps_per_epoch
    from ptmcli.finetuning.task_model import TaskModel, checkpoint_pool
    from ptmcli.tasks.collate import collate
    from ptmcli.tasks.labeled_shards import prepare_labeled
    from ptmcli.tasks.labels import output_size
    from ptmcli.tasks.readers import read_labeled
    from ptmcli.training import distributed
    from ptmcli.training.loop import separate_rank_rng
    from ptmcli.training.optim import adamw_for_groups

    session = RunSession(cfg, ckpt_to_resume)
    device = session.start()
    dist_info, main = session.dist_info, session.is_main
    opened = open_checkpoint(cfg.checkpoint)
    if cfg.task == SEQ2SEQ:  # a family that cannot do seq2seq is refused before loading prints notes on its weights
        from ptmcli.finetuning import seq2seq as seq2seq_styles
        from ptmcli.models.registry import get_family

        arch = ckpt_io.read_config(opened).get("arch")
        seq2seq_styles.style(get_family(arch), arch, f"--checkpoint {cfg.checkpoint}")
    source = load_checkpoint(opened)
    if cfg.mode != "features":  # int8 weights have no gradients: only a frozen encoder may be one
        from ptmcli.compress.quantize import refuse_training

        refuse_training(source.config, f"--checkpoint {cfg.checkpoint} (--mode {cfg.mode})")
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.mode, getattr(source.model_config, "hidden_size", None))
    from ptmcli.finetuning.multitask_checkpoint import continued_head, is_multitask

    # A multi-task checkpoint's shared encoder starts a single-task run (MT-DNN's second stage), and --head its head.
    head_task = continued_head(source.config, cfg.head, cfg.task, cfg.mode, f"--checkpoint {cfg.checkpoint}")
    if source.config.get("task") and not is_multitask(source.config):
        raise PtmError(f"--checkpoint {cfg.checkpoint}: already finetuned for {source.config['task'].get('type')}; start from a pretrained checkpoint")
    arch, family, tokenizer = source.arch, source.family, source.tokenizer
    if cfg.task == SEQ2SEQ:
        from ptmcli.finetuning import seq2seq

        # An encoder-decoder trains its own decoder; an encoder with a masked-LM head trains as UniLM's seq2seq LM.
        seq2seq = seq2seq.style(family, arch, f"--checkpoint {cfg.checkpoint}")
        seq2seq.check_checkpoint(source, cfg, f"--checkpoint {cfg.checkpoint}")
    encoder = word_encoders.encoder_spec(cfg, family, pairs=False)
    if ckpt_to_resume is not None and encoder is not None:
        encoder = (ckpt_io.read_config(ckpt_to_resume).get("task") or {}).get("encoder") or encoder
    if encoder is not None and cfg.lr is None:
        lr = word_encoders.ENCODER_LR
    if stored is not None:
        from ptmcli.finetuning.stored_features import check_model

        check_model(stored, arch, family.num_layers(source.model_config), family.feature_size(source.model_config), source.path)
    positions = family.position_limit(source.model_config)
    source_len, target_len = cfg.max_source_len or cfg.max_len, cfg.max_target_len or cfg.max_len
    lengths = (("--max-source-len", source_len), ("--max-target-len", target_len)) if cfg.task == SEQ2SEQ else (("--max-len", cfg.max_len),)
    for flag, length in lengths:
        if positions is not None and length > positions:
            raise PtmError(f"{flag} {length} exceeds the model's {positions} positions")
    run_dir = session.check_run_dir()

    text_columns, label_column = _columns(cfg.text_columns), cfg.label_column
    if not main:
        distributed.barrier(dist_info)  # rank 0 encodes the labeled data into the cache first; the rest read it
    if cfg.task == QA:
        from ptmcli.finetuning.qa import prepare_windows

        train_rows = prepare_windows(cfg.train, tokenizer, arch, cfg.max_len, cfg.doc_stride, errors=cfg.errors,
                                     note=session.announce)
    elif cfg.task == SEQ2SEQ:
        framing = family.framing(tokenizer)
        train_rows = seq2seq.encode_pairs(texts[0], tokenizer, framing, source_len, target_len)
    else:
        train_rows = prepare_labeled(cfg.train, tokenizer, cfg.task, arch, cfg.max_len, text_columns=text_columns, label_column=label_column)
    if len(train_rows) == 0:
        raise PtmError(f"--train {cfg.train}: no examples")
    labels = train_rows.labels
    dev_rows = dev_examples = None
    if cfg.dev and cfg.task == QA:
        dev_rows = prepare_windows(cfg.dev, tokenizer, arch, cfg.max_len, cfg.doc_stride, errors=cfg.errors,
                                   note=session.announce)
    elif cfg.task == SEQ2SEQ:
        dev_rows = None if texts[1] is None else seq2seq.encode_pairs(texts[1], tokenizer, framing, source_len, target_len)
        for name, rows in (("train", train_rows), ("dev", dev_rows)):
            cuts = None if rows is None else seq2seq.describe_cuts(rows, name, source_len, target_len)
            if cuts and cfg.errors == "strict":
                line, side = rows.first_cut
                limit = source_len if side == "source" else target_len
                raise PtmError(f"{where(_pairs_file(cfg, name, side), line)}: the {side} is longer than --max-{side}-len "
                               f"{limit} tokens; --errors strict refuses rows that would be cut")
            if cuts:
                session.announce(cuts)
    elif cfg.dev:
        dev_rows = prepare_labeled(cfg.dev, tokenizer, cfg.task, arch, cfg.max_len, labels=labels or None,
                                   text_columns=text_columns, label_column=label_column)
        if cfg.task == "token-classification":
            dev_examples = read_labeled(cfg.dev, cfg.task).examples
    if main:
        distributed.barrier(dist_info)
    metric = cfg.metric or DEFAULT_METRIC[cfg.task]
    if encoder is not None and ckpt_to_resume is None:
        encoder["pairs"] = word_encoders.has_pairs(train_rows[0])
    if encoder is not None and family.task_encoder is not None:  # a word tokenizer's unknown words
        which, rows = ("dev", dev_rows) if dev_rows is not None else ("train", train_rows)
        unknown, words = word_encoders.unknown_share(rows, tokenizer.unk_id, family.pair_delimiter_repeats)
        session.announce(f"ptm: {unknown:,} of the {words:,} {which} words ({unknown / max(words, 1):.1%}) are out of the "
                         "vocabulary: they read the [UNK] vector")

    torch.manual_seed(cfg.seed)
    lm = source.model
    if cfg.from_scratch:
        lm = family.build(source.model_config, tokenizer)
    pool = cfg.pool
    if stored is not None:
        if pool is not None and pool != stored.layout.pool:
            raise PtmError(f"--pool {pool}: the stored features were pooled by {stored.layout.pool} (extract them again with --pool {pool})")
        pool = stored.layout.pool
    elif ckpt_to_resume is not None:
        # The pooling the run started with, whatever the default for its checkpoint is now.
        pool = (ckpt_io.read_config(ckpt_to_resume).get("task") or {}).get("pool")
    elif pool is None and head_task is not None:
        pool = head_task.get("pool")
    elif pool is None:
        pool, why = checkpoint_pool(family, cfg.task, cfg.mode, source.config, source.initialised, str(source.path / "config.json"))
        if why:
            session.announce(f"ptm: pooling {pool}, {why} (--pool to change)")
    # GPT's top layer enters a mix after its final LayerNorm, as in extract-features and HF's hidden_states;
    # a run resumed from before that was the rule keeps the layers its mix was learned on.
    normed_top = True if ckpt_to_resume is None else saved_normed_top(ckpt_io.read_config(ckpt_to_resume).get("task"))
    if cfg.task == SEQ2SEQ:
        model = seq2seq.Seq2SeqModel(arch, lm, cfg.label_smoothing)
    else:
        model = TaskModel(arch, lm, cfg.task, output_size(cfg.task, labels), cfg.mode, pool=pool, normed_top=normed_top,
                          word_encoder=encoder)
        model.set_mask_id(tokenizer.mask_id)
    if head_task is not None:
        from ptmcli.finetuning.multitask import load_head

        load_head(model, source.path, cfg.head, head_task, labels)
    if cfg.aux_lm_weight > 0 and family.lm_needs_mask_token() and tokenizer.mask_id is None:
        raise PtmError(f"--aux-lm-weight with {family.title} needs a tokenizer with a [MASK] token")
    model.to(device)
    model.train()
    separate_rank_rng(dist_info, cfg.seed)

    num_layers = family.num_layers(source.model_config)
    train_data, dev_data = train_rows, None
    if stored is not None:
        from ptmcli.finetuning import stored_features as sf

        def read(path: str) -> list:
            return read_labeled(path, cfg.task, text_columns=text_columns, label_column=label_column).examples

        sf.prepare_mix(model, stored.layout, num_layers)
        sf.check_rows(stored.train, read(cfg.train), "--train", cfg.train)
        sf.spot_check(model, stored.train, train_rows, stored.layout, device, "--train", cfg.train, source.path)
        train_data = sf.StoredRows(stored.train, train_rows)
        if stored.dev is not None:
            sf.check_rows(stored.dev, dev_examples or read(cfg.dev), "--dev", cfg.dev)
            sf.spot_check(model, stored.dev, dev_rows, stored.layout, device, "--dev", cfg.dev, source.path)
            dev_data = sf.StoredRows(stored.dev, dev_rows)
    groups = discriminative_groups(model, lr, cfg.weight_decay, cfg.discriminative_lr, num_layers)
    cvt = None
    if unlabeled is not None:
        cvt = cross_view.CrossView(cfg, model, unlabeled, tokenizer, arch, labels, output_size(cfg.task, labels))
        groups.append(cvt.parameter_group(lr, num_layers + 2))
    optimizer = adamw_for_groups(groups, lr, betas=(0.9, 0.999), eps=1e-6, device=device.type)

    pad_id = train_rows.pad_id
    batch_of = lambda rows: collate(rows, pad_id, max_length=positions)  # noqa: E731
    if stored is not None:
        batch_of = sf.collate_stored
    elif cfg.task == SEQ2SEQ:
        batch_of = seq2seq.training_collator(pad_id, lm, tokenizer, cfg)
    # Under torchrun each rank takes its share of every global batch (per-device batch x processes).
    global_batch = cfg.batch_size * dist_info.world_size
    per_epoch = steps_per_epoch(len(train_rows), global_batch, cfg.grad_accum)
    if cvt is not None:
        per_epoch = cvt.steps_per_epoch(per_epoch)
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    task_config = {
        "type": cfg.task, "labels": list(labels), "mode": cfg.mode, "input_style": arch, "max_len": cfg.max_len,
        "text_columns": text_columns, "label_column": label_column, "metric": metric, "normed_top_layer": normed_top,
    }
    if pool is not None and cfg.task != QA:
        task_config["pool"] = pool
    if encoder is not None:
        task_config.update(encoder=encoder, pool=model.pool)
    if cfg.task == QA:
        task_config.update(doc_stride=cfg.doc_stride, max_answer_len=cfg.max_answer_len)
    if cfg.task == SEQ2SEQ:
        task_config.update(max_source_len=source_len, max_target_len=target_len, label_smoothing=cfg.label_smoothing,
                           num_beams=cfg.num_beams)
        if family.prefix_lm:
            task_config["target_mask_prob"] = cfg.target_mask_prob
    if stored is not None:
        # What makes the saved model, run on text, compute the stored vectors (see TaskModel).
        task_config.update(trained_on_features={
            "train": os.path.abspath(cfg.train_features), "dev": os.path.abspath(cfg.dev_features) if cfg.dev_features else None})
    checkpoint_config = {
        "arch": arch, "model": source.model_config.to_dict(), "objective": source.config.get("objective"), "task": task_config,
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "finetuned_from": None if cfg.from_scratch else str(source.path),
    }
    if source.config.get("quantization") and not cfg.from_scratch:  # the frozen int8 encoder is saved as it came
        checkpoint_config["quantization"] = source.config["quantization"]

    def evaluate_dev(m, precision, dev):
        if cfg.task == SEQ2SEQ:
            settings = seq2seq.generation_settings(m.lm, tokenizer, framing, target_len, cfg.num_beams)
            result, _ = seq2seq.evaluate_rows(m, dev_rows, tokenizer, settings, seq2seq.evaluation_collator(pad_id, m.lm, tokenizer),
                                              batch_size=max(cfg.batch_size, 32), device=dev, precision=precision)
            return scalar_metrics(result)
        if dev_data is not None:
            logits = sf.predict_stored(m, dev_data, batch_size=max(cfg.batch_size, 64), device=dev, precision=precision)
        else:
            logits = predict(m, dev_rows, batch_size=max(cfg.batch_size, 64), device=dev, precision=precision, pad_id=pad_id, max_length=positions)
        result, _ = score(cfg.task, labels, logits, dev_rows, dev_examples, max_answer_len=cfg.max_answer_len)
        return scalar_metrics(result)

    best_dir = run_dir / "best"
    # Saves copy the tokenizer from the run's own copy: the source checkpoint may be pruned or
    # moved while the run trains (a run directory given as --checkpoint keeps saving).
    tokenizer_copy = run_dir / "tokenizer"

    def save_best(step: int, results: dict) -> None:
        if not main:
            return
        ckpt_io.save_checkpoint(best_dir, config=dict(checkpoint_config, best={"step": step, **results}),
                                weights=model.checkpoint_state(), tokenizer_dir=tokenizer_copy, metrics_file=session.metrics_file)

    task = FinetuneTask(
        model, train_data, batch_of, batch_size=global_batch, seed=cfg.seed, evaluate_dev=evaluate_dev if dev_rows is not None else None,
        metric=metric, patience=cfg.patience, on_best=save_best, aux_lm_weight=cfg.aux_lm_weight, aux_lm_decay=cfg.aux_lm_decay,
        gradual_unfreeze=cfg.gradual_unfreeze, num_layers=num_layers,
    )
    if ckpt_to_resume is not None:
        model.load_checkpoint_state(ckpt_io.read_weights(ckpt_to_resume), str(ckpt_to_resume))
        if cvt is not None:
            cvt.load_heads(ckpt_to_resume)

    settings = session.loop_settings(max_steps=max_steps, lr=lr, warmup_steps=round(cfg.warmup_ratio * max_steps),
                                     eval_every=(cfg.eval_every or per_epoch) if dev_rows is not None else 0)
    save = session.save_function(checkpoint_config, tokenizer_copy, model.checkpoint_state)
    if cvt is not None:
        task, save = cvt.task(task, batch_of, global_batch), cvt.saving_heads(save, run_dir, main)
        session.announce(cvt.describe())
    session.open_run_dir({"task": task_config, "source": str(source.path)}, prepare=lambda _: _keep_tokenizer(source.path, tokenizer_copy))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch_text = f"{session.global_batch_text()}, " if dist_info.enabled else ""
    session.announce(
        f"ptm: finetuning {arch} ({'random init' if cfg.from_scratch else source.path}) for {cfg.task} "
        f"({_outputs_text(cfg.task, labels)}), {word_encoders.describe_encoder(encoder, model.pool, over_mix=family.task_encoder is None, per_token=cfg.task in word_encoders.PER_TOKEN_TASKS) if encoder else f'mode {cfg.mode}'}"
        f"{f' on stored features ({cfg.train_features})' if stored is not None else ''}, {len(train_rows):,} train"
        f"{f' / {len(dev_rows):,} dev' if dev_rows is not None else ''} {_rows_name(cfg.task)}, {max_steps:,} steps "
        f"({per_epoch:,}/epoch), lr {lr:g}{f' / {cfg.discriminative_lr:g} per layer' if cfg.discriminative_lr != 1 else ''}, "
        f"{trainable / 1e6:.2f}M trainable parameters, {batch_text}{device.type} {cfg.precision} -> {run_dir}"
    )
    # Not wrapped in DDP: gradual unfreezing changes the trainable set and the auxiliary LM runs
    # outside forward(), so the loop averages gradients itself.
    state = session.train(model if cvt is None else cvt.model, optimizer, task, settings, save, average_gradients=dist_info.enabled)
    if not main:
        return {"step": state.step}
    return report_results(session, state, task, metric, best_dir, run_dir, labels, lr)


def report_results(session, state, task, metric: str, best_dir: Path, run_dir: Path, labels, lr: float) -> dict:
    """results.json of a finished finetuning run (its best checkpoint, warnings about it) and the closing line."""
    from ptmcli import checkpoint as ckpt_io

    results = {"step": state.step, "stop_reason": state.last_metrics.get("stop_reason"), "metric": metric,
               "best": None, "best_step": task.best_step, "train_seconds": round(session.train_seconds, 1)}
    if task.best is not None:
        results["best"] = json.loads((best_dir / "config.json").read_text())["best"]
    warnings = _result_warnings(results["best"], labels, lr)
    if warnings:
        results["warnings"] = warnings
    session.write_results(results)
    for warning in warnings:
        print(f"ptm: warning: {warning}", file=sys.stderr)
    if task.best is not None:
        print(f"ptm: done: step {state.step}; best dev {metric} {task.best:.4f} at step {task.best_step} -> {best_dir}", file=sys.stderr)
    else:
        print(f"ptm: done: step {state.step} -> {ckpt_io.resolve_checkpoint(run_dir)}", file=sys.stderr)
    return results
