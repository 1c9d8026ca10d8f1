"""Predictions and metrics of a task model on labeled rows: dev evaluation in finetuning and ``ptm eval``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ptmcli.tasks import QA, SEQ2SEQ
from ptmcli.tasks import metrics as M
from ptmcli.tasks.collate import collate
from ptmcli.tasks.encode import word_predictions

DEFAULT_METRIC = {
    "classification": "accuracy", "pair-classification": "accuracy", "multiple-choice": "accuracy",
    "regression": "pearson", "token-classification": "f1", QA: "f1", SEQ2SEQ: "bleu",
}


def predict(model, rows: Any, *, batch_size: int, device: torch.device, precision: str, pad_id: int,
            max_length: int | None = None) -> list[np.ndarray]:
    """The model's logits for every row, in row order (rows sorted by length inside, for speed)."""
    from ptmcli.runtime.device import autocast

    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]) if rows[i]["input_ids"].ndim == 1 else rows[i]["input_ids"].shape[-1])
    out: list[np.ndarray | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            batch = collate([rows[i] for i in picked], pad_id, max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "line", "word_index")}
            with autocast(precision, device):
                logits = model(batch)["logits"].float().cpu().numpy()
            for j, i in enumerate(picked):
                length = int(batch["attention_mask"][j].sum()) if logits.ndim == 3 else None
                out[i] = logits[j, :length] if length is not None else logits[j]
    model.train(was_training)
    return out  # type: ignore[return-value]


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def score(task: str, labels: list[str] | None, logits: list[np.ndarray], rows: Any, examples: list | None = None,
          max_answer_len: int | None = None) -> tuple[dict, list[dict]]:
    """(metrics, one prediction record per row; per question for QA). Token tasks need the ``examples`` for
    their gold word tags; QA's rows are its ``QAWindows`` and ``max_answer_len`` bounds its answers."""
    if task == QA:
        from ptmcli.finetuning.qa import score_answers

        return score_answers(logits, rows, max_answer_len)
    if task == "regression":
        pred = [float(x) for x in logits]
        gold = [float(rows[i]["labels"]) for i in range(len(rows))]
        err = np.asarray(pred) - np.asarray(gold)
        result = {"pearson": _finite(M.pearson(gold, pred)), "spearman": _finite(M.spearman(gold, pred)), "mse": float((err**2).mean())}
        return result, [{"prediction": p} for p in pred]
    if task == "token-classification":
        gold_tags, pred_tags = [], []
        for i, row_logits in enumerate(logits):
            tags = word_predictions(row_logits.argmax(-1), rows[i]["word_index"], labels)
            pred_tags.append(tags)
            gold_tags.append(list(examples[i].word_labels) if examples is not None else None)
        records = [{"tags": tags} for tags in pred_tags]
        if examples is None or any(g is None for g in gold_tags):
            return {}, records
        scores = M.entity_scores(gold_tags, pred_tags)
        micro = scores["micro"]
        result = {"f1": micro.f1, "precision": micro.precision, "recall": micro.recall, "token_accuracy": scores["token_accuracy"],
                  "per_type": {k: {"precision": v.precision, "recall": v.recall, "f1": v.f1, "support": v.gold} for k, v in scores["per_type"].items()}}
        return result, records
    pred = [int(np.argmax(x)) for x in logits]
    gold = [int(rows[i]["labels"]) for i in range(len(rows))]
    names = list(labels) if labels else [str(i) for i in range(max(pred + gold) + 1)]
    records = [{"prediction": names[p], "probabilities": softmax(x)} for p, x in zip(pred, logits)]
    result = {"accuracy": M.accuracy(gold, pred), "macro_f1": M.macro_f1(gold, pred, list(range(len(names)))),
              "mcc": _finite(M.matthews_corrcoef(gold, pred)),
              # 1 for a model that learned nothing but the majority class: finetune warns about it.
              "predicted_classes": len(set(pred)),
              "confusion_matrix": M.confusion_matrix(gold, pred, list(range(len(names)))).tolist()}
    return result, records


def softmax(x: np.ndarray) -> list[float]:
    """Probabilities of logits ``x``, rounded to 6 decimals (prediction records)."""
    e = np.exp(x - x.max())
    return [round(float(v), 6) for v in e / e.sum()]


def scalar_metrics(result: dict) -> dict[str, float]:
    """The plain numbers of a metrics dict (for metrics.jsonl and early stopping)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
