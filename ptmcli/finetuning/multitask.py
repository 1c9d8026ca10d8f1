"""Multi-task finetuning (MT-DNN, Liu et al. 2019): one shared encoder, one head per task.

``ptm finetune --tasks tasks.toml`` (``ptmcli/tasks/task_spec.py`` reads the file,
``ptmcli/commands/finetune_multitask.py`` runs it).
Each head is an ordinary ``TaskModel`` whose ``lm`` is the one shared encoder,
so a head computes exactly what a single-task model of its type computes. Every
micro-batch comes from one task, drawn with probability p_i proportional to
n_i ** (1 / T) (T = 1: proportional to the training set sizes); within a task
the rows come in a seeded shuffled order, epoch after epoch. A micro-batch's loss
is its task's mean loss (per example, or per labelled token when tagging), so
tasks with different losses are not weighed by their batch's row or token count.

Each evaluation scores every task with a dev set (``eval_NAME/METRIC`` in
metrics.jsonl) and their mean main metric (``eval_mean_main_metric``: each task's
``metric``, a metric that is not a number counting as 0), which picks ``best/``.
The checkpoint layout is ``multitask_checkpoint.py``'s.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.finetuning.multitask_checkpoint import (
    EXTRA_HEADS,
    HEADS_PREFIX,
    MULTITASK,
    head_weights,
)
from ptmcli.finetuning.task_model import LM_PREFIX, TaskModel
from ptmcli.runtime.rng import rng_state_from_text, rng_state_to_text

MEAN_METRIC = "mean_main_metric"


class MultiTaskModel(nn.Module):
    """The shared encoder ``lm`` and ``heads`` (name -> TaskModel over that same ``lm``)."""

    def __init__(self, lm: nn.Module, heads: dict[str, TaskModel]) -> None:
        super().__init__()
        self.lm = lm  # registered first, so the shared parameters are named lm.* (one copy)
        self.heads = nn.ModuleDict(heads)

    @property
    def bottom_prefixes(self) -> tuple[str, ...]:
        return next(iter(self.heads.values())).bottom_prefixes

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The forward of the head the batch's ``task`` names."""
        return self.heads[batch["task"]]({k: v for k, v in batch.items() if k != "task"})

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The encoder under its pretraining names (once), each head's own tensors under ``task_heads.NAME.``."""
        first = next(iter(self.heads.values()))
        tied = first.tied_weights()
        out = {key: t.detach().contiguous().cpu() for key, t in self.lm.state_dict().items() if LM_PREFIX + key not in tied}
        for name, head in self.heads.items():
            for key, tensor in head.state_dict().items():
                if not key.startswith(LM_PREFIX):
                    out[f"{HEADS_PREFIX}{name}.{key}"] = tensor.detach().contiguous().cpu()
        return out

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Inverse of :meth:`checkpoint_state`, strict per head (each sees the encoder and its own tensors)."""
        for name, head in self.heads.items():
            head.load_checkpoint_state(head_weights(state, name), source)


class TaskSampler:
    """Which task each micro-batch comes from: index i with probability ``probabilities[i]``, seeded."""

    def __init__(self, probabilities: list[float], seed: int) -> None:
        self.probabilities = torch.tensor(probabilities, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed + 41)

    def draw(self) -> int:
        return int(torch.multinomial(self.probabilities, 1, generator=self.generator))

    def state_dict(self) -> dict:
        return {"generator": rng_state_to_text(self.generator.get_state())}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(rng_state_from_text(state["generator"]))


class MultiTaskTrainTask:
    """The loop's ``TrainTask`` over several tasks' rows (see the module's docstring)."""

    def __init__(self, names: list[str], rows: list, probabilities: list[float], collate, *, batch_size: int, seed: int,
                 evaluate_dev=None, patience: int = 0, on_best=None) -> None:
        from ptmcli.data.order import ShuffledOrder

        self.names, self.rows, self.collate, self.batch_size = names, rows, collate, batch_size
        self.orders = [ShuffledOrder(len(r), seed + i) for i, r in enumerate(rows)]
        self._iters = [iter(order) for order in self.orders]
        self.sampler = TaskSampler(probabilities, seed)
        self.evaluate_dev, self.patience, self.on_best = evaluate_dev, patience, on_best
        self.metric = MEAN_METRIC
        self.best: float | None = None
        self.best_step: int | None = None
        self.evals_without_gain = 0

    def next_micro_batches(self, count: int) -> list[dict]:
        batches = []
        for _ in range(count):
            which = self.sampler.draw()
            picked = [int(next(self._iters[which])) for _ in range(self.batch_size)]
            batch = self.collate(which, [self.rows[which][i] for i in picked])
            batch["task"] = self.names[which]
            batches.append(batch)
        return batches

    def normalizers(self, batches) -> dict[str, float]:
        return {"micro_batches": float(len(batches))}

    def loss(self, model, batch, norms):
        name = batch["task"]
        out = model(batch)
        count = out["count"]
        loss = out["loss_sum"] / (count.clamp(min=1) if isinstance(count, torch.Tensor) else max(1, count)) / norms["micro_batches"]
        stats = {f"{name}/loss_sum": out["loss_sum"].detach(), f"{name}/count": count, f"{name}/batches": 1.0}
        if model.heads[name].task_type != "regression":
            preds, labels = out["logits"].detach().argmax(-1), batch["labels"]
            stats[f"{name}/correct"] = ((preds == labels) & (labels != -100)).sum()
        return loss, stats

    def summarize(self, sums: dict) -> dict[str, float]:
        sums = {key: float(value) for key, value in sums.items()}
        out = {}
        batches = sum(sums.get(f"{name}/batches", 0.0) for name in self.names)
        for name in self.names:
            if sums.get(f"{name}/count"):
                out[f"{name}/loss"] = sums[f"{name}/loss_sum"] / sums[f"{name}/count"]
                if f"{name}/correct" in sums:
                    out[f"{name}/train_acc"] = sums[f"{name}/correct"] / sums[f"{name}/count"]
            if batches:
                out[f"{name}/batch_share"] = sums.get(f"{name}/batches", 0.0) / batches
        return out

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        return {} if self.evaluate_dev is None else self.evaluate_dev(model, precision, device)

    def after_evaluate(self, step: int, results: dict[str, float]) -> bool:
        """Keep the best mean main metric (saving through ``on_best``); True when patience has run out."""
        from ptmcli.finetuning.task import keep_best

        return keep_best(self, step, results)

    def state_dict(self) -> dict:
        return {"orders": [order.state_dict() for order in self.orders], "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for order, saved in zip(self.orders, state["orders"]):
            order.load_state_dict(saved)
        self._iters = [iter(order) for order in self.orders]
        self.sampler.load_state_dict(state["sampler"])

    def training_state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "evals_without_gain": self.evals_without_gain}

    def load_training_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.evals_without_gain = state["best"], state["best_step"], state["evals_without_gain"]


def mean_main_metric(results: dict[str, dict], metrics: dict[str, str]) -> float:
    """The mean over the evaluated tasks of each one's main metric (one that is not a number counts as 0)."""
    values = []
    for name, result in results.items():
        value = result.get(metrics[name])
        values.append(0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value))
    return sum(values) / len(values)


def head_config(task, labels: list[str], mode: str, arch: str, max_len: int, metric: str, pool: str | None) -> dict:
    """A head's entry of the checkpoint's ``task.heads``: what a single-task checkpoint's ``task`` holds."""
    return {
        "type": task.type, "labels": list(labels), "mode": mode, "input_style": arch, "max_len": max_len,
        "text_columns": list(task.text_columns) if task.text_columns else None, "label_column": task.label_column,
        "metric": metric, "normed_top_layer": True, **({"pool": pool} if pool is not None else {}),
    }


def build_checkpoint_config(source, head_configs: dict[str, dict], **settings) -> dict:
    """config.json of a multi-task checkpoint over ``source``'s encoder; ``settings`` (sampling, mode...) go to ``task``."""
    config = {
        "arch": source.arch, "model": source.model_config.to_dict(), "objective": source.config.get("objective"),
        "task": {"type": MULTITASK, "heads": head_configs, "metric": MEAN_METRIC, "input_style": source.arch, **settings},
        "extra_heads": dict(EXTRA_HEADS), "tokenizer": {"sha256": source.tokenizer.sha256, "vocab_size": source.tokenizer.vocab_size},
        "finetuned_from": str(source.path),
    }
    if source.config.get("quantization"):  # a frozen int8 encoder (--mode features) is saved as it came
        config["quantization"] = source.config["quantization"]
    return config


def load_head(model: TaskModel, source_path: Path, head: str, head_task: dict, labels: list[str]) -> None:
    """Start ``model``'s head from head ``head`` of a multi-task checkpoint (MT-DNN's second stage)."""
    from ptmcli import checkpoint as ckpt_io

    if list(head_task.get("labels") or []) != list(labels):
        raise PtmError(f"--head {head}: its labels ({', '.join(head_task.get('labels') or []) or 'none'}) are not "
                       f"this training data's ({', '.join(labels) or 'none'})")
    state = head_weights(ckpt_io.read_weights(source_path), head)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(LM_PREFIX)}
    for key, expected in own.items():
        if key not in state:
            raise PtmError(f"--head {head}: {source_path} has no {key!r} for it (another mode or pooling?)")
        if tuple(state[key].shape) != tuple(expected.shape):
            raise PtmError(f"--head {head}: tensor {key!r} has shape {tuple(state[key].shape)}, this model expects {tuple(expected.shape)}")
    model.load_state_dict({k: state[k] for k in own}, strict=False)

