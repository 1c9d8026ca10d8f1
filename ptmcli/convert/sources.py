"""Reading what ``ptm convert`` converts: a ptm checkpoint or a transformers model directory.

Either way the result is a ``Model``: ptm's config entries, ptm-named tensors
checked against the architecture (no tensor missing, none extra, every shape
right), the head parts present, and the tokenizer. Writers take it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptmcli.convert import hf_files
from ptmcli.convert.archs import ArchSpec, HFClass, spec_for_arch, spec_for_hf, spec_for_model_type
from ptmcli.errors import PtmError
from ptmcli.models.heads import build_task_model, check_task, head_parts, part_of
from ptmcli.models.unfilled import without_random_init
from ptmcli.tokenization.tokenizer import PtmTokenizer


@dataclass
class Model:
    """A model in ptm's terms, whichever format it was read from."""

    spec: ArchSpec
    model: dict
    """The architecture's hyper-parameters (config.json ``model``)."""
    objective: str | None
    task: dict | None
    state: dict[str, torch.Tensor]
    """ptm-named tensors; tied weights once."""
    parts: set[str]
    """Head parts the tensors hold (``ptmcli.models.heads``)."""
    tokenizer: PtmTokenizer | None
    source: dict = field(default_factory=dict)
    """Provenance: the format, class and config it was converted from."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know (parts absent, rows unused ...)."""
    sentence_embedding: dict | None = None
    """How a sentence-transformers model pools its text vector (``ptmcli.convert.sentence_transformers``)."""
    read: list[str] = field(default_factory=list)
    """What was read beside the weights and tokenizer, for the convert output."""


# The vector each family's exported task heads read: BERT's pooler on [CLS], GPT-2's last token.
_EXPORTED_POOL = {"bert": ("pooler",), "albert": ("pooler",), "roberta": ("pooler",), "distilbert": ("pooler",),
                  "electra": ("pooler",), "gpt": ("last",)}


def check_exported_pool(model: Model, target: str) -> None:
    """Refuse to export a task head that reads another vector than the target's head does: its
    predictions would silently change."""
    task = model.task or {}
    pool = task.get("pool")
    if not task or task.get("type") == "token-classification" or pool is None:
        return
    if pool not in _EXPORTED_POOL.get(model.spec.arch, ()):
        raise PtmError(f"this {task['type']} checkpoint reads each text by {pool} pooling (task.pool), which the {target} "
                       f"{model.spec.arch} task head cannot: its predictions would differ. Finetune with "
                       f"--pool {_EXPORTED_POOL.get(model.spec.arch, ('pooler',))[0]} to export the head, or "
                       "keep the model in ptm (ptm predict, ptm eval)")


def expected_shapes(spec: ArchSpec, model: dict, task: dict | None) -> dict[str, tuple[int, ...]]:
    """Every tensor the architecture (with its task head, if any) may hold, built on the meta device."""
    with torch.device("meta"), without_random_init():
        module = spec.build_model(model)
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items() if k not in module.tied_weights()}
        if task is not None:
            head = build_task_model(spec.arch, spec.config_class(model), task)
            shapes.update({k: tuple(v.shape) for k, v in head.state_dict().items() if part_of(spec.arch, k) == "classifier"})
    return shapes


def check_state(spec: ArchSpec, state: dict, expected: dict, where: str) -> set[str]:
    """The head parts present; a PtmError for an extra or missing tensor, a partial part, or a wrong shape."""
    extra = sorted(set(state) - set(expected))
    if extra:
        raise PtmError(f"{where}: {len(extra)} unexpected tensor(s), e.g. {extra[0]!r}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != expected[key]:
            raise PtmError(f"{where}: tensor {key!r} has shape {tuple(tensor.shape)}, the config implies {expected[key]}")
    present = {p for p in (part_of(spec.arch, k) for k in state) if p is not None}
    missing = sorted(k for k in set(expected) - set(state) if part_of(spec.arch, k) in present or part_of(spec.arch, k) is None)
    if missing:
        raise PtmError(f"{where}: {len(missing)} missing tensor(s), e.g. {missing[0]!r}")
    return present


def check_vocab(tokenizer: PtmTokenizer | None, model: dict, where: str, notes: list[str]) -> None:
    if tokenizer is None:
        notes.append(f"{where} has no tokenizer files: the result has none either")
        return
    rows = model["vocab_size"]
    if tokenizer.vocab_size > rows:
        raise PtmError(f"{where}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding only {rows} rows")
    if tokenizer.vocab_size < rows:
        notes.append(f"the embedding has {rows - tokenizer.vocab_size} rows beyond the tokenizer's {tokenizer.vocab_size} tokens (kept)")


# -- transformers -----------------------------------------------------------------------------


def read_hf(directory: str | Path) -> Model:
    """A transformers model directory in ptm's terms."""
    from ptmcli.convert.sentence_transformers import read_modules
    from ptmcli.tokenization.published import read_hf_tokenizer

    directory = Path(directory)
    modules = read_modules(directory)
    if modules is not None:
        directory = modules.transformer_dir
    hf_config = hf_files.read_hf_config(directory)
    model_type = hf_config.get("model_type")
    names = hf_config.get("architectures") or []
    if len(names) > 1:
        raise PtmError(f"{directory / 'config.json'}: several architectures {names}; ptm converts one model at a time")
    spec = spec_for_model_type(model_type)
    if spec is None or (names and names[0] not in spec.classes):
        spec_for_hf(model_type, names[0] if names else None, str(directory))  # raises, naming it
    model = spec.config_from_hf(hf_config)  # before reading weights: fail fast
    hf_state, weights_file = hf_files.read_hf_weights(directory)
    model = spec.config_from_weights(model, hf_state)
    class_name = names[0] if names else spec.guess_class(set(hf_state))
    spec, cls = spec_for_hf(model_type, class_name, str(directory))
    task = _task_from_hf(hf_config, cls, directory)

    state = _state_from_hf(spec, cls, hf_state, weights_file)
    expected = expected_shapes(spec, model, task)
    parts = check_state(spec, state, expected, str(weights_file))
    lacking = sorted(cls.parts - cls.optional - parts)
    if lacking:
        raise PtmError(f"{weights_file}: no {lacking[0]} tensors ({spec.hf_part_names.get(lacking[0], lacking[0])}), "
                       f"which a {cls.name} has")
    tokenizer = read_hf_tokenizer(directory)
    spec.check_tokenizer(model, tokenizer, str(directory))
    notes: list[str] = []
    check_vocab(tokenizer, model, str(directory), notes)
    # Only parts the model has tensors for: a head tied to the embedding (T5 v1.0's lm) is not missing.
    holds = {part_of(spec.arch, key) for key in expected}
    absent = sorted(set(head_parts(spec.arch)) & holds - parts - {"classifier"})
    if absent and task is None:
        notes.append(f"{cls.name} has no {', '.join(absent)} weights: the checkpoint holds none "
                     f"(objective {cls.objective or 'null'}); ptm initialises them if a command needs them")
    source = {"format": "transformers", "class": cls.name, "path": str(directory), "weights": weights_file.name,
              "hf_config": hf_config}
    converted = Model(spec, model, cls.objective, task, state, parts, tokenizer, source, notes)
    if modules is not None:
        source["modules"] = "sentence-transformers"
        converted.sentence_embedding = modules.embedding
        converted.read = [f"modules.json ({', '.join(modules.read) or 'no pooling ptm computes'})"]
        notes.extend(modules.notes)
    return converted


def _state_from_hf(spec: ArchSpec, cls: HFClass, hf_state: dict, weights_file: Path) -> dict:
    """ptm tensors of the class's parts; anything in the file not mapped is an error naming it."""
    hf_state = {_modern_name(k): v for k, v in hf_state.items()}
    for alias, target in spec.hf_aliases.items():
        # Some files keep a tied pair under a copy's name only (older BART files: embed_tokens, no shared).
        if alias in hf_state and target not in hf_state:
            hf_state[target] = hf_state[alias]
    for alias, target in spec.hf_aliases.items():
        if alias in hf_state and target in hf_state and not torch.equal(hf_state[alias], hf_state[target]):
            raise PtmError(f"{weights_file}: {alias!r} differs from {target!r}; ptm ties them, "
                           "so untied weights cannot be converted without loss")
    hf_state = {k: v for k, v in hf_state.items() if k not in spec.hf_aliases}
    try:
        state = spec.weights_from_hf(hf_state, cls)
    except KeyError as err:
        raise PtmError(f"{weights_file}: missing tensor {err.args[0]!r}") from None
    state = {k: v for k, v in state.items() if part_of(spec.arch, k) in cls.parts | {None}}
    mapped = set(spec.weights_to_hf(state, cls))
    unmapped = sorted(k for k in hf_state if k not in mapped and not k.endswith(spec.hf_buffers))
    if unmapped:
        raise PtmError(f"{weights_file}: {len(unmapped)} tensor(s) that are not part of a {cls.name}, e.g. {unmapped[0]!r}")
    return state


def _modern_name(key: str) -> str:
    """Early BERT files (TensorFlow conversions) name LayerNorm parameters gamma and beta."""
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
        if key.endswith(old) and "LayerNorm" in key:
            return key[: -len(old)] + new
    return key


def _task_from_hf(hf_config: dict, cls: HFClass, directory: Path) -> dict | None:
    if cls.task is None:
        return None
    problem = hf_config.get("problem_type")
    if problem not in (None, "single_label_classification"):
        raise PtmError(f"{directory / 'config.json'}: problem_type {problem!r} is not supported "
                       "(ptm's classification heads are single-label)")
    id2label = hf_config.get("id2label") or {}
    try:
        labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (ValueError, TypeError):
        raise PtmError(f"{directory / 'config.json'}: id2label keys must be integers") from None
    if not labels or [int(k) for k in sorted(id2label, key=int)] != list(range(len(labels))):
        count = hf_config.get("num_labels", 2)
        labels = [f"LABEL_{i}" for i in range(count)]
    return {"type": cls.task, "labels": labels}


# -- ptm --------------------------------------------------------------------------------------


def read_ptm(path: str | Path) -> Model:
    """A ptm checkpoint (or a run directory: its latest checkpoint), checked."""
    from ptmcli.checkpoint import WEIGHTS, read_config
    from ptmcli.checkpoint.loading import extra_head_parts
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.convert.sentence_transformers import check_embedding
    from ptmcli.convert.tokenizer_files import read_ptm_tokenizer

    checkpoint = open_checkpoint(path, "source")
    config = read_config(checkpoint)
    if not isinstance(config["model"], dict):
        raise PtmError(f"{checkpoint / 'config.json'}: 'model' must be an object")
    spec = spec_for_arch(config["arch"], config["model"])  # a pre-LN RoBERTa has its own entry
    model = spec.config_class(config["model"]).to_dict()
    task = config.get("task")
    check_task(task, str(checkpoint / "config.json"))
    weights_file = checkpoint / WEIGHTS
    if not weights_file.is_file():
        raise PtmError(f"{checkpoint}: checkpoint has no {WEIGHTS}")
    state = hf_files.read_safetensors(weights_file)
    notes: list[str] = []
    state = _without_extra_heads(state, extra_head_parts(config), config.get("objective"), notes)
    parts = check_state(spec, state, expected_shapes(spec, model, task), str(weights_file))
    if task is not None and "classifier" not in parts:
        raise PtmError(f"{weights_file}: config.json names a {task['type']} task but the file has no classifier tensors")
    tokenizer = read_ptm_tokenizer(checkpoint)
    spec.check_tokenizer(model, tokenizer, str(checkpoint))
    check_vocab(tokenizer, model, str(checkpoint), notes)
    source = dict(config.get("converted_from") or {})
    embedding = check_embedding(config.get("sentence_embedding"), str(checkpoint / "config.json"))
    return Model(spec, model, config.get("objective"), task, state, parts, tokenizer, source, notes, embedding)


def _without_extra_heads(state: dict, extra: dict[str, str], objective: str | None, notes: list[str]) -> dict:
    """The weights without the heads an objective attached for pretraining only (SpanBERT's span boundary
    head): no exported model has a place for them, and a model that keeps training reads the checkpoint."""
    dropped = [name for name, prefix in extra.items() if any(k.startswith(prefix) for k in state)]
    if not dropped:
        return state
    notes.append(f"left out {', '.join(dropped)} ({', '.join(extra[n] + '*' for n in dropped)}), a head the "
                 f"{objective or 'pretraining'} objective uses in pretraining only: exported models have no place for it")
    prefixes = tuple(extra[name] for name in dropped)
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def read_source(path: str | Path, kind: str) -> Model:
    if kind == "vectors":
        from ptmcli.convert.word2vec import read_vector_model

        return read_vector_model(path)
    return read_ptm(path) if kind == "ptm" else read_hf(path)
