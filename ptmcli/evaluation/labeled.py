"""Evaluation of finetuned checkpoints (``config.json`` "task" set) on labeled data.

The data is read and encoded as ``ptm finetune`` did (same columns, same label
list from the checkpoint, same input style and length); metrics per task type
come from ``ptmcli.finetuning.evaluate``. ``--predictions FILE`` writes one JSON
line per input, in input order, written atomically.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ptmcli.errors import PtmError
from ptmcli.tasks import QA, SEQ2SEQ


def evaluate_labeled(checkpoint, config: dict, cfg) -> dict[str, Any]:
    """Task metrics of a finetuned checkpoint on ``cfg.data``."""
    from ptmcli.finetuning.evaluate import predict, score
    from ptmcli.finetuning.task_model import load_task_model
    from ptmcli.runtime.device import resolve_device
    from ptmcli.tasks.labeled_shards import prepare_labeled
    from ptmcli.tasks.readers import read_labeled

    if cfg.sample:
        raise PtmError(f"{checkpoint}: --sample needs a language model; this checkpoint is finetuned for {config['task'].get('type')}")
    if config["task"].get("type") == SEQ2SEQ:
        from ptmcli.evaluation.seq2seq_eval import evaluate_seq2seq

        return evaluate_seq2seq(checkpoint, cfg)
    if cfg.data is None:
        raise PtmError("--data is required: labeled data in the format the model was finetuned on")
    device = resolve_device(cfg.device)
    model, config, tokenizer = load_task_model(checkpoint, device, head=cfg.head)
    task = config["task"]
    labels = task.get("labels") or []
    started = time.perf_counter()
    style, max_len = task.get("input_style", config["arch"]), int(task.get("max_len", 128))
    if task["type"] == QA:
        from ptmcli.finetuning.qa import prepare_windows

        rows = prepare_windows(cfg.data, tokenizer, style, max_len, int(task.get("doc_stride", 128)))
    else:
        rows = prepare_labeled(cfg.data, tokenizer, task["type"], style, max_len, labels=labels or None,
                               text_columns=task.get("text_columns"), label_column=task.get("label_column"))
    if len(rows) == 0:
        raise PtmError(f"--data {cfg.data}: no examples")
    examples = read_labeled(cfg.data, task["type"]).examples if task["type"] == "token-classification" else None
    positions = getattr(model.lm.config, "max_position_embeddings", None)
    logits = predict(model, rows, batch_size=max(cfg.batch_size, 32), device=device, precision=cfg.precision, pad_id=rows.pad_id, max_length=positions)
    result, records = score(task["type"], labels, logits, rows, examples, max_answer_len=task.get("max_answer_len"))
    if cfg.predictions:
        _write_predictions(cfg.predictions, records, None if task["type"] == QA else rows)
    per_type = result.pop("per_type", None)
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "task": task["type"], "data": str(cfg.data), "examples": len(rows)}
    out.update(result)
    if per_type:
        for kind, values in per_type.items():
            out[f"{kind}_f1"] = values["f1"]
        out["per_type"] = per_type
    if "confusion_matrix" in out:
        out["labels"] = labels
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["metric"] = task.get("metric")
    return out


def _write_predictions(path: str, records: list[dict], rows) -> None:
    """One line per record; ``rows`` (None when the records name their own question) give each its input line."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        for i, record in enumerate(records):
            if rows is not None:
                record = {"line": int(rows[i]["line"]) if "line" in rows[i] else None, **record}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
