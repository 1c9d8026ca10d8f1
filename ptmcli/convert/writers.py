"""Writing a ``Model`` as a ptm checkpoint or a transformers model directory, atomically.

Both build the directory under a temporary name beside the target and rename
it at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ptmcli import __version__
from ptmcli.convert import hf_files
from ptmcli.convert.archs import HFClass
from ptmcli.convert.sources import Model
from ptmcli.errors import PtmError
from ptmcli.models.heads import part_of
from ptmcli.textio.atomic import atomic_directory

# transformers config keys that describe the file that was read, not the model.
_STALE_HF_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures")


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_ptm(model: Model, target: str | Path, overwrite: bool) -> Path:
    """A ptm checkpoint directory: config.json, model.safetensors and the tokenizer files."""
    from ptmcli.checkpoint import CONFIG, FORMAT, VERSION, WEIGHTS

    config = {"format": FORMAT, "version": VERSION, "arch": model.spec.arch, "model": model.model,
              "objective": model.objective, "task": model.task}
    if model.tokenizer is not None:
        config["tokenizer"] = {"sha256": model.tokenizer.sha256, "vocab_size": model.tokenizer.vocab_size}
    if model.sentence_embedding is not None:
        config["sentence_embedding"] = model.sentence_embedding
    config["converted_from"] = model.source
    config["ptm_version"] = __version__
    target = Path(target)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        _write_json(tmp / CONFIG, config)
        hf_files.write_safetensors(tmp / WEIGHTS, model.state)
        if model.tokenizer is not None:
            model.tokenizer.write_files(tmp)
    return target


def choose_class(model: Model, name: str | None) -> HFClass:
    """The transformers class to write: ``--hf-class``, or the one the objective/task implies."""
    spec = model.spec
    if name is None:
        return spec.default_class(model.objective, model.task)
    if name not in spec.classes:
        raise PtmError(f"--hf-class {name!r}: a {spec.arch} checkpoint converts to {', '.join(spec.classes)}")
    cls = spec.classes[name]
    if cls.task is not None and (model.task is None or model.task["type"] != cls.task):
        have = f"a {model.task['type']!r} task head" if model.task else "no task head"
        raise PtmError(f"--hf-class {name}: needs a {cls.task!r} task head; the checkpoint has {have}")
    return cls


def hf_config(model: Model, cls: HFClass, dtype: torch.dtype) -> dict:
    """config.json for transformers: the original one if the model came from transformers, updated."""
    spec = model.spec
    base = model.source.get("hf_config") if model.source.get("format") == "transformers" else None
    config = {k: v for k, v in (base or {}).items() if k not in _STALE_HF_KEYS}
    if config.get("model_type") not in (None, spec.model_type):
        config = {}
    specials = {}
    if model.tokenizer is not None:
        specials = {role: getattr(model.tokenizer, f"{role}_id") for role in model.tokenizer.special_tokens}
    config.update(spec.hf_config_fields(model.model, specials, cls))
    config["architectures"] = [cls.name]
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    for key in ("id2label", "label2id", "num_labels", "problem_type"):
        config.pop(key, None)
    if model.task is not None and cls.task is not None:
        labels = model.task["labels"]
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
        if cls.task == "classification":
            config["problem_type"] = "single_label_classification"
    return config


def write_hf(model: Model, target: str | Path, class_name: str | None, overwrite: bool) -> tuple[Path, HFClass, list[str]]:
    """A transformers model directory; returns it, the class written, and notes on what was left out."""
    from ptmcli.convert.tokenizer_files import write_hf_tokenizer

    spec = model.spec
    if model.model.get("heads_per_layer") is not None:
        # transformers would build every layer with all its heads and fail on the smaller projections.
        raise PtmError("the model's attention heads were pruned (ptm compress --prune-heads): transformers' "
                       "config has no per-layer head counts, so it has no transformers form")
    cls = choose_class(model, class_name)
    if cls.task is not None:
        from ptmcli.convert.sources import check_exported_pool

        check_exported_pool(model, "transformers")
    lacking = sorted(cls.parts - cls.optional - model.parts)
    if lacking:
        fits = [c.name for c in spec.classes.values() if not (c.parts - c.optional - model.parts) and c.task is None]
        raise PtmError(f"the checkpoint has no {lacking[0]} head ({spec.hf_part_names.get(lacking[0], lacking[0])}) "
                       f"that {cls.name} needs; --hf-class can be {', '.join(fits)}")
    notes = []
    left_out = sorted(model.parts - cls.parts)
    if left_out:
        notes.append(f"left out {', '.join(left_out)} ({cls.name} has no place for "
                     f"{'it' if len(left_out) == 1 else 'them'}; use --hf-class to pick another class)")
    absent = sorted(cls.parts - model.parts)
    if absent:
        notes.append(f"the checkpoint has no {', '.join(absent)}: transformers initialises it when loading {cls.name}")
    kept = {k: v for k, v in model.state.items() if part_of(spec.arch, k) in cls.parts | {None}}
    tensors = spec.weights_to_hf(kept, cls)
    dtype = next(iter(tensors.values())).dtype
    config = hf_config(model, cls, dtype)
    target = Path(target)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        _write_json(tmp / hf_files.CONFIG, config)
        hf_files.write_safetensors(tmp / hf_files.SAFETENSORS, tensors)
        if model.tokenizer is not None:
            write_hf_tokenizer(model.tokenizer, tmp, spec.model_type)
        if model.sentence_embedding is not None and cls.task is None:
            from ptmcli.convert.sentence_transformers import write_modules

            write_modules(model.sentence_embedding, model.model["hidden_size"], tmp)
    return target, cls, notes
