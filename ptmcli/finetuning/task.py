"""Finetuning as a ``TrainTask``: labeled rows -> batches -> task loss (+ auxiliary LM), dev metrics, early stopping.

Epochs are passes of a seeded ``ShuffledOrder`` over the training rows; the
epoch drives gradual unfreezing and the auxiliary-loss decay, so both resume
exactly with the data cursor. Batches are made ahead of training (on the
loop's batch thread), so each carries the epochs of its step and the
training side acts on them when the step is trained, not when it is made.
Under torchrun a rank collates only its rows of each global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.finetuning.methods import unfreeze_for_epoch
from ptmcli.runtime.rng import rng_state_from_text, rng_state_to_text
from ptmcli.tasks import QA, SEQ2SEQ

# A batch's (epoch its step's last rows come from, epoch after the step): the step trains in the first,
# the auxiliary-loss decay and the logged epoch follow the second, as when batches were made just in time.
STEP_EPOCHS = "epochs"


class FinetuneTask:
    def __init__(
        self,
        model,
        train_rows: Any,
        collate: Callable[[list[dict]], dict[str, torch.Tensor]],
        *,
        batch_size: int,
        seed: int,
        evaluate_dev: Callable[[Any, str, torch.device], dict[str, float]] | None = None,
        metric: str | None = None,
        patience: int = 0,
        on_best: Callable[[int, dict[str, float]], None] | None = None,
        aux_lm_weight: float = 0.0,
        aux_lm_decay: float = 1.0,
        gradual_unfreeze: bool = False,
        num_layers: int = 0,
    ) -> None:
        self.model = model
        self.rows = train_rows
        self.collate = collate
        self.batch_size = batch_size
        self.order = ShuffledOrder(len(train_rows), seed)
        self._iter = iter(self.order)
        self.evaluate_dev = evaluate_dev
        self.metric = metric
        self.patience = patience
        self.on_best = on_best
        self.aux_lm_weight = aux_lm_weight
        self.aux_lm_decay = aux_lm_decay
        self.gradual_unfreeze = gradual_unfreeze
        self.num_layers = num_layers
        self.mask_generator = torch.Generator().manual_seed(seed + 29)
        self.best: float | None = None
        self.best_step: int | None = None
        self.evals_without_gain = 0
        self._applied_epoch: int | None = None
        self._train_in(self.epoch, self.epoch)

    @property
    def epoch(self) -> int:
        """The epoch of the next rows the order hands out."""
        return int(self.order.state_dict()["epoch"])

    def _train_in(self, epoch: int, epoch_after: int) -> None:
        if self.gradual_unfreeze and self._applied_epoch != epoch:
            unfreeze_for_epoch(self.model, epoch, self.num_layers, frozen_encoder=self.model.frozen_lm)
        self._applied_epoch = epoch
        self.trained_epoch = epoch_after

    def aux_weight_now(self) -> float:
        return self.aux_lm_weight * self.aux_lm_decay ** self.trained_epoch

    def next_micro_batches(self, count: int, rows: slice | None = None) -> list[dict[str, torch.Tensor]]:
        """The step's ``count`` micro-batches; only their ``rows`` (all by default) are collated."""
        picked = []
        for _ in range(count):
            epoch = self.epoch
            picked.append((epoch, [int(next(self._iter)) for _ in range(self.batch_size)]))
        epochs = (epoch, self.epoch)
        batches = []
        for row_epoch, chosen in picked:
            mine = chosen if rows is None else chosen[rows]
            if getattr(self.collate, "keyed", False):
                # A collator that draws (UniLM's target masks) draws by (epoch, row), so a resumed run or any
                # split of the batch across ranks makes the same batch.
                batch = self.collate([self.rows[i] for i in mine], [row_epoch * len(self.rows) + i for i in mine])
            else:
                batch = self.collate([self.rows[i] for i in mine])
            batch[STEP_EPOCHS] = epochs
            batches.append(batch)
        return batches

    def normalizer_counts(self, batches) -> dict[str, float]:
        if self.model.task_type in ("token-classification", SEQ2SEQ):  # per token: every labelled token weighs the same
            total = sum(int((b["labels"] != -100).sum()) for b in batches)
        else:
            total = sum(int(b["labels"].shape[0]) for b in batches)
        return {"task": float(total)}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return {"task": max(1.0, counts["task"]), "micro_batches": float(micro_batches)}

    def normalizers(self, batches) -> dict[str, float]:
        return self.normalizers_from(self.normalizer_counts(batches), len(batches))

    def loss(self, model, batch, norms):
        """(normalised loss, the step's sums as detached tensors: the loop reads them when it logs)."""
        self._train_in(*batch[STEP_EPOCHS])
        batch = {k: v for k, v in batch.items() if k != STEP_EPOCHS}
        out = model(batch)
        loss = out["loss_sum"] / norms["task"]
        stats = {"task_loss_sum": out["loss_sum"].detach(), "task_count": out["count"]}
        if "correct" in out:  # counted by the model (seq2seq's fused loss makes no logits)
            stats["task_correct"] = out["correct"]
        elif model.task_type != "regression":
            stats["task_correct"] = self._correct(out["logits"], batch["labels"])
        weight = self.aux_weight_now()
        if weight > 0:
            aux_sum, aux_count = model.aux_lm_loss(batch, self.mask_generator)
            # A per-rank mean: under torchrun the ranks' gradients add up, so each takes 1/ranks of it.
            at_least_one = aux_count.clamp(min=1) if isinstance(aux_count, torch.Tensor) else max(1, int(aux_count))
            loss = loss + weight * aux_sum / (at_least_one * norms["micro_batches"] * norms.get("ranks", 1.0))
            stats.update(aux_loss_sum=aux_sum.detach(), aux_count=aux_count)
        return loss, stats

    def _correct(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.model.task_type == QA:  # both ends of the span right
            return (logits.detach().argmax(1) == labels).all(-1).sum()
        preds = logits.detach().argmax(-1)
        keep = labels != -100
        return ((preds == labels) & keep).sum()

    def summarize(self, sums: dict) -> dict[str, float]:
        sums = {key: float(value) for key, value in sums.items()}
        out = {}
        if sums.get("task_count"):
            out["task_loss"] = sums["task_loss_sum"] / sums["task_count"]
            if "task_correct" in sums:
                out["train_acc"] = sums["task_correct"] / sums["task_count"]
        if sums.get("aux_count"):
            out["aux_lm_loss"] = sums["aux_loss_sum"] / sums["aux_count"]
        out["epoch"] = float(self.trained_epoch)
        return out

    def tokens(self, batch) -> int:
        mask = batch.get("attention_mask")
        # Pooled stored features have no positions left: count one per example.
        return int(mask.sum()) if mask is not None else int(batch["labels"].shape[0])

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        if self.evaluate_dev is None:
            return {}
        return self.evaluate_dev(model, precision, device)

    def after_evaluate(self, step: int, results: dict[str, float]) -> bool:
        """Keep the best dev score (saving through ``on_best``); True when patience has run out."""
        return keep_best(self, step, results)

    def state_dict(self) -> dict:
        """Where the batches stand (made on the loop's batch thread)."""
        return {"order": self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)
        self._applied_epoch = None
        self._train_in(self.epoch, self.epoch)

    def training_state_dict(self) -> dict:
        """What the training side keeps: the auxiliary masks' generator and the early-stopping record."""
        return {
            "mask_generator": rng_state_to_text(self.mask_generator.get_state()),
            "best": self.best, "best_step": self.best_step, "evals_without_gain": self.evals_without_gain,
        }

    def load_training_state_dict(self, state: dict) -> None:
        self.mask_generator.set_state(rng_state_from_text(state["mask_generator"]))
        self.best, self.best_step, self.evals_without_gain = state["best"], state["best_step"], state["evals_without_gain"]


def keep_best(task, step: int, results: dict[str, float]) -> bool:
    """A finetuning task's record of its best evaluation by ``task.metric`` (a missing or NaN value counts as no
    evaluation): a new best is saved through ``task.on_best``; True when ``task.patience`` evaluations passed
    without a gain."""
    value = results.get(task.metric) if task.metric else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if task.best is None or value > task.best:
        task.best, task.best_step, task.evals_without_gain = float(value), step, 0
        if task.on_best is not None:
            task.on_best(step, results)
        return False
    task.evals_without_gain += 1
    return task.patience > 0 and task.evals_without_gain >= task.patience


def steps_per_epoch(num_rows: int, batch_size: int, grad_accum: int) -> int:
    return max(1, math.ceil(num_rows / (batch_size * grad_accum)))


def predictions(model, batches, device: torch.device, precision: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(logits, labels) per batch as numpy, for metrics."""
    from ptmcli.runtime.device import autocast

    logits, labels = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(precision, device):
            out = model(batch)
        logits.append(out["logits"].float().cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    return logits, labels
