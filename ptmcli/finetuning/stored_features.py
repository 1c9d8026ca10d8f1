"""``ptm finetune --train-features``: train the features-mode head on vectors ``ptm extract-features`` stored.

The model is the one ``--mode features`` trains (a scalar mix over the frozen
encoder's layers, then the MLP head), built around the source checkpoint as
usual, but a training batch carries the stored layers instead of token ids, so
the encoder never runs: an epoch costs the mix and the head. The labeled file
(``--train``) still gives the labels, and for tagging which words truncation
cut off. What is saved is an ordinary ``--mode features`` checkpoint: run on
text (``ptm eval``), it computes what it was trained on, because

- the layout is checked before any training: the granularity and pooling the
  task model can reproduce, the layers (a learned mix over the stored entries
  of the L + 1 stack, or one fixed combination), the sequence length and the
  model's width;
- row i must be example i: every row's text is compared with the labeled file;
- and the vectors themselves: a few rows, spread over the file, are recomputed
  through the task model's own encoder path and must match (fp32 to 1e-3,
  relative; bf16/fp16 extraction to 5e-2).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.features.arrow_reader import FeatureShards
from ptmcli.finetuning.task_model import UNUSED_LAYER
from ptmcli.tasks.encode import IGNORE_INDEX

SENTENCE_TASKS = ("classification", "pair-classification", "regression")
CHECKED_ROWS = 8
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}
# Pools that commute with the scalar mix (mixing per-layer vectors pooled this way equals pooling the mix),
# so the saved model on text computes what it trained on; max does not.
STORED_POOLS = ("mean", "cls", "last")


@dataclass(frozen=True)
class StoredLayout:
    """How a feature shard directory's vectors map onto the task model."""

    granularity: str
    pool: str
    """Where sentence vectors were read (mean, cls, last); the finetuned model reads the same."""
    stack_layers: tuple[int, ...]
    """Entries of the L + 1 stack (0 the embeddings) behind the stored layers."""
    fixed_weights: tuple[float, ...] | None
    """One pre-combined vector: the weight of each of ``stack_layers`` in it; None when the layers are kept."""
    fixed_gamma: float | None
    max_len: int | None
    dim: int
    arch: str | None
    checkpoint: str | None
    precision: str

    def differs_from(self, other: StoredLayout) -> str | None:
        for name in ("granularity", "pool", "stack_layers", "fixed_weights", "fixed_gamma", "max_len", "dim", "arch"):
            if getattr(self, name) != getattr(other, name):
                return f"{name.replace('_', ' ')} {getattr(self, name)} vs {getattr(other, name)}"
        return None


def read_layout(shards: FeatureShards, task: str, num_layers: int | None = None) -> StoredLayout:
    """The layout of ``shards`` for ``task``, or a PtmError saying how to extract features that fit."""
    f, name = shards.features, shards.name
    granularity = f["granularity"]
    units = {"text": "text", "word": "word", "token": "sub-token"}.get(granularity, granularity)
    if task in SENTENCE_TASKS:
        if granularity != "text":
            raise PtmError(f"{name}: holds one vector per {units}; --task {task} needs one per text "
                           "(extract with --pool mean, or --pool cls for BERT)")
        pool = f.get("pool")
        if pool not in STORED_POOLS:
            raise PtmError(f"{name}: pooled by {pool}; the finetuned model can read mean, cls or last (extract with --pool mean)")
    elif task == "token-classification":
        if granularity != "word":
            raise PtmError(f"{name}: holds one vector per {units}; --task token-classification needs one per word "
                           "(extract with --words first)")
        if f.get("words") != "first":
            raise PtmError(f"{name}: word vectors made by --words {f.get('words')}; the finetuned tagger reads each "
                           "word's first sub-token (extract with --words first)")
        pool = "mean"
    else:
        raise PtmError(f"--train-features supports {', '.join((*SENTENCE_TASKS, 'token-classification'))}, not --task {task} "
                       "(multiple choice stores no one vector per example)")
    if f.get("part"):
        raise PtmError(f"{name}: vectors of the checkpoint's {f['part']} (--part {f['part']}); ptm finetune trains "
                       "its default network (extract without --part)")
    stored_task = f.get("task")
    if stored_task is not None and (stored_task in SENTENCE_TASKS) != (task in SENTENCE_TASKS):
        raise PtmError(f"{name}: extracted with --task {stored_task}, which lays inputs out unlike --task {task}")
    combine = f.get("combine", "none")
    stack = f.get("stack_layers")
    if not stack:  # manifests written before stack_layers was recorded: the labels say it
        labels = list(f.get("layers") or [])
        if combine != "none" or num_layers is None or not all(isinstance(v, int) for v in labels):
            raise PtmError(f"{name}: the manifest does not say which layers were combined; extract the features again")
        stack = labels if labels == list(range(num_layers + 1)) else [v + 1 if v >= 0 else num_layers + 1 + v for v in labels]
    stack = tuple(int(i) for i in stack)
    weights = gamma = None
    if combine == "concat":
        raise PtmError(f"{name}: layers side by side (--combine concat) do not fit the head of a features-mode model; "
                       "extract with --combine none (the finetuned mix learns the weights) or mean")
    if combine in ("mean", "scalar-mix"):
        if f.get("mix_weights") is None:
            raise PtmError(f"{name}: the manifest does not record the --combine {combine} weights; extract the features again")
        weights, gamma = tuple(float(w) for w in f["mix_weights"]), float(f.get("mix_gamma") or 1.0)
    elif len(set(stack)) != len(stack):
        raise PtmError(f"{name}: a layer is stored twice (--layers {','.join(map(str, f.get('layers') or []))}); "
                       "a scalar mix reads each layer once")
    max_len = f.get("max_seq_length")
    return StoredLayout(granularity, pool, stack, weights, gamma, int(max_len) if max_len else None, int(f["dim"]),
                        f.get("arch"), f.get("checkpoint"), str(f.get("precision", "fp32")))


@dataclass
class Stored:
    train: FeatureShards
    dev: FeatureShards | None
    layout: StoredLayout


def open_stored(cfg, explicit: set[str]):
    """(the opened shards, ``cfg`` with what the features fix: features mode, their --max-len and checkpoint)."""
    if cfg.dev_features and not cfg.dev:
        raise PtmError("--dev-features needs --dev: the labeled file whose examples its rows are")
    for flag, bad in (("--from-scratch", cfg.from_scratch), ("--gradual-unfreeze", cfg.gradual_unfreeze),
                      ("--aux-lm-weight", cfg.aux_lm_weight > 0)):
        if bad:
            raise PtmError(f"{flag} conflicts with --train-features (the stored vectors come from the frozen pretrained encoder)")
    if "mode" in explicit and cfg.mode != "features":
        raise PtmError(f"--mode {cfg.mode} conflicts with --train-features: stored features train a frozen encoder's mix and head (--mode features)")
    train = FeatureShards.open(cfg.train_features, f"--train-features {cfg.train_features}")
    layout = read_layout(train, cfg.task)
    dev = None
    if cfg.dev_features:
        dev = FeatureShards.open(cfg.dev_features, f"--dev-features {cfg.dev_features}")
        different = read_layout(dev, cfg.task).differs_from(layout)
        if different:
            raise PtmError(f"--dev-features {cfg.dev_features}: extracted unlike --train-features {cfg.train_features} ({different})")
    updates: dict = {"mode": "features"}
    if layout.max_len is not None:
        if "max_len" in explicit and cfg.max_len != layout.max_len:
            raise PtmError(f"--max-len {cfg.max_len}: --train-features {cfg.train_features} was extracted with "
                           f"--max-seq-length {layout.max_len}; leave --max-len out to use it")
        updates["max_len"] = layout.max_len
    if cfg.checkpoint is None:
        if not layout.checkpoint or not os.path.isdir(layout.checkpoint):
            raise PtmError(f"--train-features {cfg.train_features}: extracted from {layout.checkpoint}, which is not here; "
                           "give --checkpoint")
        updates["checkpoint"] = layout.checkpoint
    return Stored(train, dev, layout), replace(cfg, **updates)


def check_model(stored: Stored, arch: str, num_layers: int, dim: int, checkpoint_path) -> None:
    """The checkpoint can be the encoder behind the features (their vectors are checked later)."""
    layout, name = stored.layout, stored.train.name
    if layout.arch is not None and layout.arch != arch:
        raise PtmError(f"{name}: features of a {layout.arch} model; --checkpoint {checkpoint_path} is {arch}")
    if layout.dim != dim:
        raise PtmError(f"{name}: {layout.dim}-wide vectors; --checkpoint {checkpoint_path} has {dim}-wide layers")
    if max(layout.stack_layers) > num_layers:
        raise PtmError(f"{name}: reads layer {max(layout.stack_layers)}; --checkpoint {checkpoint_path} has {num_layers + 1} (0..{num_layers})")


def prepare_mix(model, layout: StoredLayout, num_layers: int) -> None:
    """Set the task model's scalar mix for the stored layers: learned over them, or fixed to their combination."""
    weights = torch.full((num_layers + 1,), UNUSED_LAYER)
    if layout.fixed_weights is None:
        weights[list(layout.stack_layers)] = 0.0  # equal at the start, as ELMo's mix
        gamma = 1.0
        model.read_stored_layers(layout.stack_layers)
    else:
        combined: dict[int, float] = {}
        for layer, weight in zip(layout.stack_layers, layout.fixed_weights):
            combined[layer] = combined.get(layer, 0.0) + weight
        for layer, weight in combined.items():
            weights[layer] = math.log(weight) if weight > 0 else UNUSED_LAYER
        gamma = layout.fixed_gamma or 1.0
        model.read_stored_layers(None)
        for param in model.scalar_mix.parameters():
            param.requires_grad_(False)
    with torch.no_grad():
        model.scalar_mix.weights.copy_(weights)
        model.scalar_mix.gamma.fill_(gamma)


# -- rows are the labeled file's examples ------------------------------------------------------------


def _normal(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


def _short(text: str | None) -> str:
    return repr(text if text is None or len(text) <= 40 else text[:37] + "...")


def check_rows(shards: FeatureShards, examples: list, data_flag: str, data_path: str) -> None:
    """Row i holds the text of example i (whitespace aside), for every row."""
    if len(shards) != len(examples):
        raise PtmError(f"{shards.name}: holds {len(shards)} rows but {data_flag} {data_path} has {len(examples)} examples "
                       "(row i must be example i: extract with --task from that file)")
    for row, text, text_b in shards.iter_texts():
        example = examples[row]
        want = example.texts if example.words is None else (" ".join(example.words),)
        want_a, want_b = _normal(want[0]), _normal(want[1]) if len(want) > 1 else None
        if (_normal(text), _normal(text_b)) != (want_a, want_b):
            got = text if text_b is None else f"{text} ||| {text_b}"
            expected = want_a if want_b is None else f"{want_a} ||| {want_b}"
            raise PtmError(f"{shards.name}: row {row} is the text {_short(got)} but example {row} of {data_flag} "
                           f"{data_path} (line {example.line}) is {_short(expected)}; row i must be example i")


def _expected(model, rows: list[dict], pad_id: int, layout: StoredLayout, device) -> list[np.ndarray]:
    """What the task model's encoder path gives for ``rows``, in the stored layout (``[K, D]`` or ``[W, K, D]``)."""
    from ptmcli.tasks.collate import collate

    batch = collate(rows, pad_id)
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "token_type_ids", "attention_mask")}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, states = model.encoder_layers(inputs)
    model.train(was_training)
    stack = torch.stack([s.float() for s in states], dim=2)  # [B, T, L+1, D]
    picked = stack[:, :, list(layout.stack_layers)]
    if layout.fixed_weights is not None:
        weights = torch.tensor(layout.fixed_weights, dtype=torch.float32, device=picked.device)
        picked = (layout.fixed_gamma or 1.0) * torch.einsum("btkd,k->btd", picked, weights).unsqueeze(2)
    out = []
    if layout.granularity == "text":
        pooled = model.pool_tokens(picked, inputs["attention_mask"])
        return [pooled[j].cpu().numpy() for j in range(len(rows))]
    for j, row in enumerate(rows):
        positions = torch.as_tensor(np.asarray(row["word_index"], dtype=np.int64), device=picked.device)
        words = picked[j, positions.clamp(min=0)] * (positions >= 0).to(picked.dtype)[:, None, None]
        out.append(words.cpu().numpy())
    return out


def spot_check(model, shards: FeatureShards, rows, layout: StoredLayout, device, data_flag: str, data_path: str,
               checkpoint_path) -> None:
    """A few rows spread over the file, recomputed through the encoder, must equal the stored ones.

    The checkpoint may live elsewhere than where the features were extracted
    (a copy, a moved run directory): its vectors decide, not its path.
    """
    count = len(shards)
    if count == 0:
        return
    picked = sorted({int(i) for i in np.linspace(0, count - 1, min(count, CHECKED_ROWS)).round()})
    expected = _expected(model, [rows[i] for i in picked], rows.pad_id, layout, device)
    tolerance = TOLERANCE.get(layout.precision, TOLERANCE["bf16"])
    for i, want in zip(picked, expected):
        got = shards.vectors(i)
        if got.shape != want.shape:
            raise PtmError(f"{shards.name}: row {i} holds {got.shape[0]} word vectors but example {i} of {data_flag} "
                           f"{data_path} has {want.shape[0]} words")
        scale = max(float(np.linalg.norm(want)), 1e-6)
        difference = float(np.linalg.norm(got - want)) / scale
        if not difference <= tolerance:
            origin = f" (extracted from {layout.checkpoint})" if layout.checkpoint else ""
            raise PtmError(f"{shards.name}{origin}: row {i} is not what --checkpoint {checkpoint_path} computes for example {i} "
                           f"of {data_flag} {data_path} (relative difference {difference:.2g}); extract the features from that "
                           "checkpoint and file with ptm extract-features --task")


# -- training and evaluation data -------------------------------------------------------------------


class StoredRows:
    """Stored vectors with the labels of the labeled rows: what a training batch is made of."""

    def __init__(self, shards: FeatureShards, labeled) -> None:
        self.shards = shards
        self.labeled = labeled
        self.words = shards.granularity == "word"

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> dict:
        vectors = self.shards.vectors(index)
        row = self.labeled[index]
        if not self.words:
            return {"features": vectors, "labels": row["labels"]}
        word_index = np.asarray(row["word_index"])
        if len(vectors) != len(word_index):
            raise PtmError(f"{self.shards.name}: row {index} holds {len(vectors)} word vectors but the example has "
                           f"{len(word_index)} words")
        # A word truncation cut off has no sub-token to read: it is not trained on, as in finetuning.
        tags = np.where(word_index >= 0, np.asarray(row["labels"])[np.maximum(word_index, 0)], IGNORE_INDEX)
        return {"features": vectors, "labels": tags, "word_index": word_index, "length": len(row["input_ids"])}


def collate_stored(items: list[dict]) -> dict[str, torch.Tensor]:
    """A batch of stored rows: ``features`` ``[B, K, D]``, or ``[B, W, K, D]`` with ``attention_mask`` ``[B, W]``."""
    first = items[0]["features"]
    if first.ndim == 2:
        return {"features": torch.from_numpy(np.stack([it["features"] for it in items])),
                "labels": torch.from_numpy(np.stack([np.asarray(it["labels"]) for it in items]))}
    width = max(1, max(len(it["labels"]) for it in items))
    features = np.zeros((len(items), width, *first.shape[1:]), dtype=np.float32)
    mask = np.zeros((len(items), width), dtype=np.int64)
    labels = np.full((len(items), width), IGNORE_INDEX, dtype=np.int64)
    for i, it in enumerate(items):
        n = len(it["labels"])
        features[i, :n] = it["features"]
        mask[i, :n] = 1
        labels[i, :n] = it["labels"]
    return {"features": torch.from_numpy(features), "attention_mask": torch.from_numpy(mask), "labels": torch.from_numpy(labels)}


def predict_stored(model, data: StoredRows, *, batch_size: int, device, precision: str) -> list[np.ndarray]:
    """Logits per row, shaped as ``evaluate.predict`` gives them, so the same scoring applies.

    Tagging: per sub-token position, each word's logits at its first sub-token
    (the position ``word_index`` names); other positions are never read.
    """
    from ptmcli.runtime.device import autocast

    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
            batch = {k: v.to(device) for k, v in collate_stored(items).items() if k != "labels"}
            with autocast(precision, device):
                logits = model(batch)["logits"].float().cpu().numpy()
            for j, item in enumerate(items):
                if not data.words:
                    out.append(logits[j])
                    continue
                full = np.zeros((item["length"], logits.shape[-1]), dtype=np.float32)
                present = item["word_index"] >= 0
                full[item["word_index"][present]] = logits[j, : len(present)][present]
                out.append(full)
    model.train(was_training)
    return out
