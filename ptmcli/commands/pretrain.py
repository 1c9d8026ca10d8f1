"""``ptm pretrain``: set up data, model and optimizer, then run the shared loop."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from ptmcli.config_fields import AUTO
from ptmcli.errors import PtmError
from ptmcli.pretraining import mask_units
from ptmcli.pretraining.config import MODEL_FIELDS, STATIC_FIELDS, PretrainConfig
from ptmcli.pretraining.objective_table import check_settings, default_objective, get_objective
from ptmcli.training import resume
from ptmcli.training.session import RunSession

# Paths a resumed run may be given again (a moved corpus): accepted when they hold the same data.
RELOCATABLE = {"data", "tokenizer", "eval_data"}
# Settings a resumed run may change; everything else must match the run being resumed.
RESUMABLE_OVERRIDES = {"compile", "fsdp", "max_steps", "max_time", "budget", "save_every", "eval_every", "log_every", "keep_last", "progress", "device", "threads", "peak_tflops", "out", "resume", "eval_batches", "tensorboard"}


def _with_arch_defaults(cfg: PretrainConfig) -> PretrainConfig:
    """Fill the objective and preset the user left out with the family's defaults."""
    from ptmcli.models.registry import get_family

    objective = cfg.objective or default_objective(cfg.arch)
    return replace(cfg, objective=objective, preset=cfg.preset or get_family(cfg.arch).default_preset)


def _with_budget_recipe(cfg: PretrainConfig, explicit: set[str]) -> tuple[PretrainConfig, str | None]:
    """``cfg`` with the family's small-budget recipe where its flags were not given, and a line saying what it set."""
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_table import OBJECTIVE_SETTINGS, OBJECTIVES

    reads = OBJECTIVES[cfg.objective or default_objective(cfg.arch)].settings
    # An objective setting (the mask rate) only for an objective that reads it.
    recipe = {k: v for k, v in get_family(cfg.arch).budget_recipe.items()
              if k not in explicit and (k not in OBJECTIVE_SETTINGS or k in reads)}
    if not recipe:
        return cfg, None
    flags = " ".join(_flag_text(name, value) for name, value in recipe.items())
    return replace(cfg, **recipe), f"ptm: --budget: the small-budget recipe for {cfg.arch}: {flags} (--no-budget-recipe keeps the usual defaults)"


def _flag_text(name: str, value) -> str:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{name.replace('_', '-')}"
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


def _validate(cfg: PretrainConfig) -> None:
    import dataclasses

    get_objective(cfg.objective, cfg.arch)
    _refuse_static_fields(cfg)
    check_settings(cfg.objective, cfg, {f.name: f.default for f in dataclasses.fields(PretrainConfig)})
    positive = {"seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "max_steps": cfg.max_steps, "log_every": cfg.log_every, "eval_batches": cfg.eval_batches}
    _check_auto_batch(cfg)
    if cfg.batch_size is AUTO:  # found later; the global batch it reaches is checked now
        del positive["batch_size"]
        if cfg.global_batch is not None:
            positive["global_batch"] = cfg.global_batch
    for name, value in positive.items():
        if value <= 0:
            raise PtmError(f"--{name.replace('_', '-')} {value}: must be positive")
    for name in ("eval_every", "save_every", "keep_last", "eval_rows"):
        if getattr(cfg, name) < 0:
            raise PtmError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must not be negative")
    _check_model_fields(cfg)
    for name, value in cfg.model_overrides().items():
        if isinstance(value, (str, bool)):
            continue  # a choice or a switch (--norm, --no-bias), checked by the command line and the model config
        if name.endswith("dropout"):
            if not 0.0 <= value < 1.0:
                raise PtmError(f"--{name.replace('_', '-')} {value}: must be in [0, 1)")
        elif value <= 0:
            raise PtmError(f"--{name.replace('_', '-')} {value}: must be positive")
    _check_budget(cfg)
    if cfg.ngram_mask < 1:
        raise PtmError(f"--ngram-mask {cfg.ngram_mask}: must be at least 1 (1 masks single tokens or words)")
    mask_units.check_flags(cfg)
    if not 0.0 < cfg.mask_prob < 1.0:
        raise PtmError(f"--mask-prob {cfg.mask_prob}: must be between 0 and 1")
    if cfg.lr <= 0:
        raise PtmError(f"--lr {cfg.lr}: must be positive")
    if cfg.seq_len < 8:
        raise PtmError(f"--seq-len {cfg.seq_len}: too short (use at least 8)")


def _refuse_static_fields(cfg: PretrainConfig) -> None:
    """The static word-vector settings (--dim, --window ...) would be ignored by the shared loop: refused."""
    import dataclasses

    from ptmcli.pretraining.objective_table import own_loop_families

    for f in dataclasses.fields(PretrainConfig):
        if f.name in STATIC_FIELDS and getattr(cfg, f.name) is not None:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise PtmError(f"{flag} is a setting of static word vectors (--arch {', '.join(own_loop_families())}), "
                           f"not of --arch {cfg.arch}")


def _check_model_fields(cfg: PretrainConfig) -> None:
    """Model flags the family's config has no field for (``--share`` for BERT) are refused, not ignored."""
    import dataclasses

    from ptmcli.models.registry import FAMILIES, get_family
    from ptmcli.pretraining.objective_table import families

    known = {f.name for f in dataclasses.fields(get_family(cfg.arch).config_class)}
    # The shape flags every family's preset_config translates (ELMo maps --hidden-size onto its own fields).
    shared = {"hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
              "hidden_dropout", "attention_dropout"}
    for name in cfg.model_overrides():
        if name not in known and name not in shared:
            # Name the families that do have it: --generator-size sizes ELECTRA's generator, --share ALBERT's layers.
            having = [arch for arch, family in FAMILIES.items() if arch in families()
                      and name in {f.name for f in dataclasses.fields(family.config_class)}]
            where = f"; it applies to --arch {', '.join(having)}" if having else ""
            raise PtmError(f"--{name.replace('_', '-')} is not a setting of --arch {cfg.arch} models{where}")


def _resume_config(cfg: PretrainConfig, explicit: set[str]) -> tuple[PretrainConfig, Path]:
    """The saved run config, with only the flags that may change on resume applied."""
    from ptmcli.checkpoint import read_config, resolve_checkpoint
    from ptmcli.compress.quantize import refuse_training
    from ptmcli.config_fields import parse_duration

    refuse_training(read_config(resolve_checkpoint(cfg.resume)), f"--resume {cfg.resume}")  # before: it has no trainer/
    ckpt, state, saved = resume.saved_run(PretrainConfig, cfg.resume)
    conflicts = sorted(name for name in explicit - RESUMABLE_OVERRIDES - RELOCATABLE - {"config"}
                       if getattr(cfg, name) != getattr(saved, name))
    if conflicts:
        name = conflicts[0]
        was = "which did not set it" if getattr(saved, name) is None else f"{getattr(saved, name)!r}"
        raise PtmError(
            f"--{name.replace('_', '-')} {getattr(cfg, name)!r} conflicts with the run being resumed ({was}); "
            f"only {', '.join('--' + n.replace('_', '-') for n in sorted(RESUMABLE_OVERRIDES - {'resume', 'out'}))} may change on --resume"
        )
    updates = {name: getattr(cfg, name) for name in explicit & (RESUMABLE_OVERRIDES | RELOCATABLE)}
    for name in RELOCATABLE - explicit:
        recorded = getattr(saved, name)
        if recorded is not None and not Path(recorded).exists():
            # Runs record absolute paths; older ones recorded them as typed, relative to where they started.
            raise PtmError(f"--resume {cfg.resume}: the run's --{name.replace('_', '-')} {recorded} is not found from here "
                           f"(moved, or relative to another directory); give --{name.replace('_', '-')} DIR: "
                           "it is accepted when it holds the same data")
    updates.update(resume.placement(cfg, saved, state, ckpt))
    resumed = replace(saved, **updates)
    loop = state.get("loop") or {}
    step = int(loop.get("step", 0))
    if resumed.max_time and float(loop.get("elapsed_s", 0.0)) >= parse_duration(resumed.max_time, "--max-time"):
        raise RunFinished(f"ptm: the run already trained for its --max-time {resumed.max_time} (step {step}, {ckpt}); "
                          "nothing to do. To train on, resume with a larger --max-time (it counts the whole run)")
    if resumed.budget and float(loop.get("elapsed_s", 0.0)) >= parse_duration(resumed.budget, "--budget"):
        raise RunFinished(f"ptm: the run already spent its --budget {resumed.budget} (step {step}, {ckpt}); nothing to do. "
                          "To train on, resume with a larger --budget (it counts the whole run; the schedule is "
                          "stretched over it)")
    if step >= resumed.max_steps:
        raise RunFinished(f"ptm: the run already reached --max-steps {resumed.max_steps} (step {step}, {ckpt}); nothing to "
                          f"do. To train on, resume with a larger --max-steps, e.g. --resume {cfg.resume} --max-steps "
                          f"{2 * resumed.max_steps}: the learning-rate schedule is stretched to the new last step")
    return resumed, ckpt


# --max-steps of a budgeted run that did not give one: the budget ends it.
UNLIMITED_STEPS = 10**12


def _length_text(cfg: PretrainConfig) -> str:
    if not cfg.budget:
        return f"{cfg.max_steps:,} steps"
    cap = f", at most {cfg.max_steps:,} steps" if cfg.max_steps < UNLIMITED_STEPS else ""
    return f"budget {cfg.budget} (warmup {cfg.warmup_fraction:.0%} of it{cap})"


def _longer_text(cfg: PretrainConfig) -> str:
    from ptmcli.config_fields import parse_duration

    if cfg.budget:
        return f"--budget {2 * parse_duration(cfg.budget, '--budget'):.0f}s"
    return f"--max-steps {cfg.max_steps * 2}"


def _check_budget(cfg: PretrainConfig) -> None:
    import dataclasses

    from ptmcli.config_fields import parse_duration
    from ptmcli.training.budget import check_fraction

    if cfg.budget is None:
        defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
        for name in ("batch_ramp", "warmup_fraction"):
            if getattr(cfg, name) != defaults[name]:
                raise PtmError(f"--{name.replace('_', '-')} is a share of --budget; give --budget too (or drop it)")
        return
    parse_duration(cfg.budget, "--budget")
    if cfg.max_time:
        raise PtmError("--max-time with --budget: the budget already stops the run; give one of them")
    if cfg.warmup_steps is not None:
        raise PtmError("--warmup-steps with --budget: a budgeted run warms up for --warmup-fraction of its time")
    check_fraction(cfg.warmup_fraction, "--warmup-fraction")
    check_fraction(cfg.batch_ramp, "--batch-ramp", upper_open=False)
    if cfg.batch_ramp and cfg.grad_accum == 1 and cfg.batch_size is not AUTO:  # auto: checked once it is resolved
        raise PtmError("--batch-ramp grows the batch up to --grad-accum micro-batches; give --grad-accum above 1")
    if cfg.batch_ramp and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PtmError("--batch-ramp is not available under torchrun yet (ranks would have to agree on each step's "
                       "accumulation); use a fixed --grad-accum")


def _check_auto_batch(cfg: PretrainConfig) -> None:
    """--global-batch belongs to --batch-size auto, which sets the accumulation itself."""
    if cfg.batch_size is not AUTO:
        if cfg.global_batch is not None:
            raise PtmError(f"--global-batch {cfg.global_batch} goes with --batch-size auto; with --batch-size N, "
                           "--grad-accum sets the global batch")
        return
    if cfg.grad_accum != 1:
        raise PtmError(f"--grad-accum {cfg.grad_accum} with --batch-size auto: the accumulation follows from --global-batch")


def _resolve_auto_batch(cfg: PretrainConfig, session: RunSession, model, objective, family, tokenizer, dataset,
                        train_rows) -> PretrainConfig:
    """--batch-size auto: the run's own objective tried on the device; the run then records plain numbers."""
    import numpy as np

    from ptmcli.training import auto_batch

    def trial_batch(size: int):
        # A task of its own, padded to --seq-len (as --compile pads) and without evaluation sets; the run's
        # task is built afresh afterwards, so its data order and resuming are untouched.
        trial = replace(cfg, batch_size=size, grad_accum=1, compile=True, eval_data=None)
        task = _build_task(trial, objective, family, tokenizer, dataset, train_rows, np.arange(0))
        return task, task.next_micro_batches(1)

    asked = cfg.global_batch or auto_batch.DEFAULT_GLOBAL_BATCH
    choice = auto_batch.choose(model, trial_batch, asked, precision=cfg.precision, device=session.device,
                               dist_info=session.dist_info, fsdp=cfg.fsdp)
    cfg = replace(cfg, batch_size=choice.micro, grad_accum=choice.accum, global_batch=None)
    _validate(cfg)
    session.cfg = cfg  # run.json, the checkpoints and the loop take the numbers found
    session.announce(choice.banner(asked))
    return cfg


class RunFinished(Exception):
    """A resumed run that has nothing left to do; its message says so."""


def _resolve_data(cfg: PretrainConfig) -> tuple[str, str]:
    if cfg.data is None:
        from ptmcli.pretraining.sample import sample_data

        shards, tok = sample_data()
        return str(shards), str(tok)
    _check_shard_dir(cfg.data)
    tokenizer = cfg.tokenizer
    if tokenizer is None:
        manifest = Path(cfg.data) / "manifest.json"
        if manifest.exists():
            try:
                recorded = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer", {}).get("path")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                recorded = None
            if recorded and Path(recorded).is_dir():
                tokenizer = recorded
        if tokenizer is None:
            named = f"names {recorded}, which does not exist here" if recorded else "names no tokenizer directory"
            raise PtmError(f"--data {cfg.data}: its manifest.json {named}; pass --tokenizer DIR (the tokenizer the shards "
                           "were encoded with)")
    return cfg.data, tokenizer


_ENCODE_HINT = "ptm tokenize encode FILE --tokenizer TOK -o SHARDS (TOK from ptm tokenize train FILE -o TOK)"


def _check_shard_dir(data: str) -> None:
    """Say what ``--data`` is when it is not a shard directory, and what to run instead."""
    path = Path(data)
    if not path.exists():
        raise PtmError(f"--data {data}: no such file or directory (give the shard directory ptm tokenize encode wrote)")
    if path.is_file():
        raise PtmError(f"--data {data} is a file; pretraining reads token shards: encode it first with "
                       f"{_ENCODE_HINT.replace('FILE', data, 1)}")
    if (path / "manifest.json").is_file():
        return
    if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
        raise PtmError(f"--data {data} is a tokenizer directory; give it as --tokenizer, and as --data the shard "
                       f"directory from {_ENCODE_HINT}")
    raise PtmError(f"--data {data} has no manifest.json, so it is not a shard directory; make one with {_ENCODE_HINT}")


def _absolute_paths(cfg: PretrainConfig) -> PretrainConfig:
    """Paths as the run records them: absolute, so ``--resume`` works from any directory."""
    absolute = {name: str(Path(getattr(cfg, name)).absolute())
                for name in ("data", "tokenizer", "eval_data", "init_from", "init_vectors", "teacher") if getattr(cfg, name)}
    return replace(cfg, **absolute)


def _check_same_data(ckpt: Path, dataset, tokenizer, given: set[str]) -> None:
    """On resume: the shards and tokenizer are the ones the run trained on, wherever they now live."""
    from ptmcli.checkpoint import read_config

    config = read_config(ckpt)
    recorded = (config.get("training") or {}).get("data_sha256")
    if recorded and recorded != dataset.fingerprint:
        flag = "--data" if "data" in given else "the run's --data"
        raise PtmError(f"{flag} {dataset.path}: its shards differ from the ones the run trained on "
                       f"(checksums recorded in {ckpt / 'config.json'})")
    trained_with = (config.get("tokenizer") or {}).get("sha256")
    if trained_with and trained_with != tokenizer.sha256:
        raise PtmError(f"--tokenizer: it differs from the tokenizer the run trained with ({ckpt / 'config.json'})")


def _build_task(cfg: PretrainConfig, objective, family, tokenizer, dataset, train_rows, held_rows, world_size: int = 1):
    """The objective's training task, with its held-out and --eval-data evaluation sets.

    Under torchrun the task hands out global micro-batches (per-device batch x
    world size), of which each rank keeps its share (``GlobalBatchShare``).
    """
    import numpy as np

    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.objective_context import ObjectiveContext

    eval_sets = []
    if len(held_rows):
        eval_sets.append(("heldout", dataset, held_rows))
    if cfg.eval_data:
        extra = ShardDataset.open(cfg.eval_data, verify=True, kind=objective.shard_kind)
        extra.check_tokenizer(tokenizer)
        eval_sets.append(("evaldata", extra, np.arange(len(extra))))
    context = ObjectiveContext(replace(cfg, batch_size=cfg.batch_size * world_size), tokenizer, dataset, train_rows, eval_sets, family)
    return objective.build(context)


def _check_tokenizer_roles(cfg: PretrainConfig, objective, family, tokenizer, tokenizer_dir: str) -> None:
    family.check_tokenizer(tokenizer, tokenizer_dir)
    for role in objective.special_tokens:
        if getattr(tokenizer, f"{role}_id") is None:
            raise PtmError(f"{tokenizer_dir}: tokenizer has no {role} token, which --objective {cfg.objective} needs "
                           "(train one with --special-tokens bert)")


def _init_source(cfg: PretrainConfig, explicit: set[str], tokenizer) -> dict:
    """The checkpoint ``--init-from`` names, checked against the run: same family, same tokenizer, no shape flags."""
    from ptmcli.checkpoint import read_config
    from ptmcli.convert.open import open_checkpoint

    path = open_checkpoint(cfg.init_from, "--init-from")
    config = read_config(path)
    from ptmcli.compress.quantize import refuse_training

    refuse_training(config, f"--init-from {cfg.init_from}")
    if config["arch"] != cfg.arch:
        raise PtmError(f"--init-from {cfg.init_from}: a {config['arch']} checkpoint, but --arch is {cfg.arch} (pass --arch {config['arch']})")
    shape_flags = sorted(explicit & {"preset", *MODEL_FIELDS} - {"hidden_dropout", "attention_dropout"})
    if shape_flags:
        raise PtmError(f"--{shape_flags[0].replace('_', '-')} conflicts with --init-from: the model's shape comes from the checkpoint")
    recorded = (config.get("tokenizer") or {}).get("sha256")
    if recorded and recorded != tokenizer.sha256:
        raise PtmError(f"--init-from {cfg.init_from}: the checkpoint's tokenizer differs from the one the shards were encoded with "
                       f"(encode the data with --tokenizer {path})")
    return {"path": path, "config": config}


def run(cfg: PretrainConfig, explicit: set[str] | None = None) -> dict:
    """Pretrain per ``cfg``; returns the final logged metrics."""
    explicit = explicit or set()
    objective = get_objective(cfg.objective or default_objective(cfg.arch), cfg.arch)
    if objective.own_loop and (cfg.batch_size is AUTO or cfg.global_batch is not None):
        raise PtmError(f"--{'batch-size auto' if cfg.batch_size is AUTO else 'global-batch'} is for the Transformer "
                       f"families; --arch {cfg.arch} trains in its own loop")
    if objective.own_loop:
        return objective.run_alone(replace(cfg, objective=cfg.objective or default_objective(cfg.arch)), explicit,
                                   _resolve_data)
    ckpt_to_resume = None
    if cfg.resume:
        try:
            cfg, ckpt_to_resume = _resume_config(cfg, explicit)
        except RunFinished as finished:
            print(finished, file=sys.stderr)
            return {}
    if cfg.data is None and ckpt_to_resume is None:
        from ptmcli.models.registry import get_family
        from ptmcli.pretraining.sample import SAMPLE_DEFAULTS

        defaults = dict(SAMPLE_DEFAULTS, preset=get_family(cfg.arch).sample_preset or SAMPLE_DEFAULTS["preset"])
        if cfg.budget:
            defaults = {k: v for k, v in defaults.items() if k not in ("warmup_steps", "max_steps")}
        cfg = replace(cfg, **{k: v for k, v in defaults.items() if k not in explicit})
    if cfg.budget and "max_steps" not in explicit and ckpt_to_resume is None:
        cfg = replace(cfg, max_steps=UNLIMITED_STEPS)
    recipe_note = None
    if cfg.budget and cfg.budget_recipe and ckpt_to_resume is None:
        cfg, recipe_note = _with_budget_recipe(cfg, explicit)
    cfg = _with_arch_defaults(cfg)
    _validate(cfg)
    cfg = _absolute_paths(cfg)
    session = RunSession(cfg, ckpt_to_resume)
    run_dir = session.check_run_dir()
    data_dir, tokenizer_dir = _resolve_data(cfg)

    import torch

    from ptmcli import checkpoint as ckpt_io
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.examples import split_rows
    from ptmcli.runtime.device import measure_matmul_peak, peak_flops
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training import distributed
    from ptmcli.training.optim import build_adamw

    device = session.start()
    dist_info = session.dist_info
    tokenizer = PtmTokenizer.load(tokenizer_dir)
    family, objective = get_family(cfg.arch), get_objective(cfg.objective, cfg.arch)
    # Checksums are read once here (about 1 GB/s), so a damaged shard is named before any training.
    dataset = ShardDataset.open(data_dir, verify=True, kind=objective.shard_kind)
    dataset.check_tokenizer(tokenizer)
    _check_tokenizer_roles(cfg, objective, family, tokenizer, tokenizer_dir)
    if ckpt_to_resume is not None:
        _check_same_data(ckpt_to_resume, dataset, tokenizer, explicit)
    if mask_units.needs_word_starts(cfg) and not dataset.has_word_starts:
        flag = f"--mask-unit {cfg.mask_unit}" if cfg.mask_unit else "--whole-word-mask"
        raise PtmError(f"{flag}: {data_dir} was encoded without word boundaries (re-encode with --word-starts)")
    if cfg.ngram_mask > 1 and not dataset.has_word_starts:
        raise PtmError(f"--ngram-mask {cfg.ngram_mask}: {data_dir} was encoded without word boundaries (re-encode with --word-starts)")

    torch.manual_seed(cfg.seed)
    init = _init_source(cfg, explicit, tokenizer) if cfg.init_from and ckpt_to_resume is None else None
    if init is not None:
        model_config = family.config_class.from_dict(init["config"]["model"])
        dropouts = {k: v for k, v in cfg.model_overrides().items() if k in ("hidden_dropout", "attention_dropout") and hasattr(model_config, k)}
        model_config = replace(model_config, **dropouts)
    else:
        model_config = family.model_config(cfg.preset, tokenizer, **cfg.model_overrides(),
                                           **objective.settings_for(cfg, tokenizer, dataset))
    model = family.build(model_config, tokenizer)
    objective.prepare(model, cfg)
    if init is not None:
        from ptmcli.checkpoint.loading import TASK_PARTS, extra_head_parts

        # The source's own objective heads are skipped unless this objective has them too.
        skipped = {**TASK_PARTS, **{k: v for k, v in extra_head_parts(init["config"]).items() if k not in objective.extra_heads}}
        fresh, dropped = ckpt_io.load_partial_weights(init["path"], model, model.tied_weights(),
                                                      {**family.head_parts, **objective.extra_heads}, skipped)
        what = f"; {', '.join(fresh)} initialised at random" if fresh else ""
        session.announce(f"ptm: starting from the weights of {init['path']}{what}{'; ignored its ' + ', '.join(dropped) if dropped else ''}")
    positions = family.position_limit(model_config)
    if positions is not None and cfg.seq_len > positions:
        raise PtmError(f"--seq-len {cfg.seq_len} exceeds the model's {positions} positions (raise --max-position-embeddings)")
    model.to(device)

    train_rows, held_rows = split_rows(len(dataset), cfg.eval_rows)
    if cfg.fsdp and not dist_info.enabled:
        raise PtmError("--fsdp shards the model across processes: launch with torchrun --nproc-per-node N (N > 1)")
    if len(train_rows) == 0:
        raise PtmError(f"--data {data_dir}: no documents to train on")
    if len(held_rows) == 0 and cfg.eval_rows > 0 and not cfg.eval_data:
        # A tenth of the documents is held out (at most --eval-rows): fewer than 10 leaves none.
        advice = "give --eval-data SHARDS"
        if len(dataset) < 10:
            advice = ("a text without blank lines becomes one document: re-encode it with --document-boundary line, "
                      f"or {advice}")
        session.announce(f"ptm: warning: no held-out documents ({len(dataset)} in {data_dir}), so no evaluation will run; {advice}")
    if cfg.batch_size is AUTO:
        cfg = _resolve_auto_batch(cfg, session, model, objective, family, tokenizer, dataset, train_rows)
    task = _build_task(cfg, objective, family, tokenizer, dataset, train_rows, held_rows, dist_info.world_size)

    if ckpt_to_resume is not None:
        ckpt_io.load_weights(ckpt_to_resume, model, model.tied_weights())
    if cfg.fsdp:
        # Shard after the whole weights are in place, before the optimizer sees the parameters.
        distributed.shard_fsdp(model, family.fsdp_units(model))
    optimizer = build_adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, cfg.adam_beta2), device=device.type)

    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else peak_flops(device, cfg.precision)
    peak_source = "--peak-tflops" if cfg.peak_tflops else f"the device's datasheet dense peak for {cfg.precision}"
    if peak is None and device.type == "cpu":
        peak = measure_matmul_peak(device, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
        # CPU ranks measure at once, each on its share of the host's cores: together, the host's peak.
        peak = distributed.all_reduce_values([peak], dist_info, device)[0]
        peak_source = (f"the fastest of 7 {'bf16' if cfg.precision == 'bf16' else 'fp32'} 2048^3 matmuls measured at "
                       "start-up (--peak-tflops sets a documented peak)")
    elif peak is not None:
        peak *= dist_info.world_size
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, cfg.max_steps // 20)
    from ptmcli.config_fields import parse_duration

    settings = session.loop_settings(
        max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=warmup, eval_every=cfg.eval_every,
        max_time_s=parse_duration(cfg.max_time, "--max-time") if cfg.max_time else None,
        budget_s=parse_duration(cfg.budget, "--budget") if cfg.budget else None,
        warmup_fraction=cfg.warmup_fraction, batch_ramp=cfg.batch_ramp,
        peak_flops=peak, flops_per_token=model.flops_per_token(cfg.seq_len, objective.predicted_fraction(cfg)),
    )
    model_dict = model_config.to_dict()
    checkpoint_config = {
        "arch": cfg.arch, "model": model_dict, "objective": cfg.objective, "task": None,
        **({"extra_heads": dict(objective.extra_heads)} if objective.extra_heads else {}),
        "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "training": {"data": str(data_dir), "data_sha256": dataset.fingerprint, "seq_len": cfg.seq_len},
    }
    session.open_run_dir({"model": model_dict, "data": str(data_dir), "tokenizer": str(tokenizer_dir)})

    def weights() -> dict:
        # FSDP: every rank takes part in gathering the shards.
        if cfg.fsdp:
            return distributed.gathered_state_dict(model, model.tied_weights())
        return ckpt_io.state_dict_for_saving(model, model.tied_weights())

    save = session.save_function(checkpoint_config, tokenizer_dir, weights, collective=cfg.fsdp)

    n_params = model.num_parameters()
    world = dist_info.world_size
    tokens_per_step = cfg.batch_size * world * cfg.grad_accum * cfg.seq_len
    what = "resuming" if session.resuming else "pretraining"
    batch_text = session.global_batch_text() or f"batch {cfg.batch_size}x{cfg.grad_accum}"
    session.announce(
        f"ptm: {what} {cfg.arch} ({cfg.preset}, {n_params / 1e6:.2f}M parameters, {model.flops_per_token(cfg.seq_len, objective.predicted_fraction(cfg)) / 1e6:.1f} MFLOP/token) "
        f"on {data_dir} ({len(train_rows):,} train / {len(held_rows):,} held-out documents), objective {cfg.objective}, "
        f"{device.type} {cfg.precision}, {batch_text} ({tokens_per_step:,} tokens/step max), {_length_text(cfg)} -> {run_dir}"
    )
    if recipe_note:
        session.announce(recipe_note)
    if peak:
        session.announce(f"ptm: mfu is measured against {peak / 1e12:.2f} TFLOP/s, {peak_source}")
    if cfg.compile and not family.compiles:
        session.announce(f"ptm: --compile is ignored for {cfg.arch} (its LSTM kernels and per-batch unique tokens do not compile)")
    elif cfg.compile:
        # Compile the encoder in place: its shapes are fixed (batches padded to --seq-len), while the
        # MLM head sees a different number of masked tokens every step and would recompile. In-place
        # Module.compile() also keeps state_dict keys free of an `_orig_mod.` prefix.
        family.compile_target(model).compile()
    trained = model
    if dist_info.enabled:
        if not session.resuming:
            from ptmcli.training.loop import separate_rank_rng

            separate_rank_rng(dist_info, cfg.seed)
        if not cfg.fsdp:
            trained = distributed.wrap_ddp(model, device, find_unused=objective.find_unused_parameters)
    from ptmcli.training.budget import BudgetTooShort

    try:
        state = session.train(trained, optimizer, task, settings, save)
    except BudgetTooShort:
        if not session.resuming and session.is_main:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was saved: leave no empty run behind
        raise
    if not session.is_main:
        return dict(state.last_metrics, step=state.step)
    final = state.last_metrics
    latest = ckpt_io.resolve_checkpoint(run_dir)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k in (*objective.metrics, "tokens_per_s"))
    print(f"ptm: done: step {state.step}, {summary} in {session.train_seconds:.0f}s; checkpoint {latest}", file=sys.stderr)
    if cfg.data is None:
        print(
            "\nNext: pretrain on your own text:\n"
            "  ptm tokenize train corpus.txt --model wordpiece --vocab-size 30000 -o tok/\n"
            "  ptm tokenize encode corpus.txt --tokenizer tok/ -o shards/\n"
            "  ptm pretrain --data shards/ --preset bert-mini -o runs/mine --precision bf16\n"
            f"  ptm pretrain --resume {run_dir} {_longer_text(cfg)}   # train this one further",
            file=sys.stderr,
        )
    return dict(final, checkpoint=str(latest), step=state.step)
