"""``ptm predict``: a finetuned checkpoint's predictions for unlabeled text, streamed to stdout.

The input is read as ``ptm finetune`` reads labeled data (same column
detection, labels ignored) or as plain lines, one chunk of examples at a
time; each chunk is predicted (``ptmcli.evaluation.prediction``) and written
(``ptmcli.evaluation.prediction_output``) before the next is read, so memory
stays flat and a downstream ``head`` ends the run early. One summary line goes
to stderr.
"""

from __future__ import annotations

import sys
import time

from ptmcli.errors import PtmError
from ptmcli.evaluation.predict_config import PredictConfig
from ptmcli.tasks import QA, SEQ2SEQ


def _columns(value: str | None) -> list[str] | None:
    if value is None:
        return None
    columns = [c.strip() for c in value.split(",") if c.strip()]
    if not columns:
        raise PtmError(f"--text-columns {value!r}: give one or more comma-separated column names")
    return columns


def run(cfg: PredictConfig) -> int:
    """Carry out ``cfg``; returns the number of examples predicted."""
    import torch

    from ptmcli.checkpoint import read_config
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.evaluation.prediction import TaskPredictor
    from ptmcli.evaluation.prediction_output import PredictionWriter
    from ptmcli.finetuning.task_model import load_task_model
    from ptmcli.runtime.device import check_precision, resolve_device
    from ptmcli.tasks.readers import open_labeled

    started = time.perf_counter()
    if not cfg.checkpoint:
        raise PtmError("--checkpoint is required: a finetuned checkpoint or its run directory")
    for flag, value in (("--batch-size", cfg.batch_size), ("--chunk-size", cfg.chunk_size), ("--threads", cfg.threads)):
        if value is not None and value < 1:
            raise PtmError(f"{flag} {value}: must be positive")
    text_columns = _columns(cfg.text_columns)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)

    checkpoint = open_checkpoint(cfg.checkpoint)
    from ptmcli.finetuning.multitask_checkpoint import select_head

    config = select_head(read_config(checkpoint), cfg.head, f"--checkpoint {cfg.checkpoint}")
    task = config.get("task")
    if not task:
        raise PtmError(f"--checkpoint {cfg.checkpoint}: a pretrained {config.get('arch', '')} model, not finetuned; "
                       "finetune it first (ptm finetune --task ...) or use ptm extract-features for its vectors")
    if task["type"] == QA:
        return _predict_answers(checkpoint, config, cfg, device, started)
    if task["type"] == SEQ2SEQ:
        raise PtmError(f"--checkpoint {cfg.checkpoint}: a seq2seq model writes text; use ptm generate -c {cfg.checkpoint} --input FILE")
    # The input is opened (its format and columns settled) before the weights load: a bad input fails at once.
    stream = open_labeled(cfg.input, task["type"], text_columns=text_columns,
                          preferred_text_columns=task.get("text_columns"), fmt=cfg.format, labels=False)
    model, config, tokenizer = load_task_model(checkpoint, device, head=cfg.head)
    predictor = TaskPredictor(model, config, tokenizer, device, cfg.precision, cfg.batch_size)
    writer = PredictionWriter(sys.stdout, cfg.output_format, task["type"], stream.text_columns)
    count = 0
    for chunk in stream.chunks(cfg.chunk_size):
        writer.write(chunk, predictor.predict(chunk, stream.name))
        count += len(chunk)
    if count == 0:
        raise PtmError(f"{stream.name}: no examples in the input")
    seconds = time.perf_counter() - started
    cut = predictor.report.truncated
    note = f"; {cut} sequences cut to the checkpoint's max length of {predictor.max_len} tokens" if cut else ""
    print(f"ptm predict: {count} {'example' if count == 1 else 'examples'} ({task['type']}, {stream.format} input) "
          f"in {seconds:.1f} s with {checkpoint}{note}", file=sys.stderr)
    return count


def _predict_answers(checkpoint, config: dict, cfg: PredictConfig, device, started: float) -> int:
    """Question answering: {id: answer} for the questions of a SQuAD file, as one JSON object (SQuAD's
    prediction format)."""
    import json

    from ptmcli.finetuning.qa import predict_answers
    from ptmcli.finetuning.task_model import load_task_model
    from ptmcli.tasks.squad import read_squad

    if cfg.input == "-":
        raise PtmError("--task qa predictions read a SQuAD JSON or JSONL file, not stdin")
    read_squad(cfg.input, require_answers=False)  # a bad input fails before the weights load
    model, config, tokenizer = load_task_model(checkpoint, device, head=cfg.head)
    answers = predict_answers(model, config, tokenizer, cfg.input, device=device, precision=cfg.precision, batch_size=cfg.batch_size)
    json.dump(answers, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    print(f"ptm predict: {len(answers)} questions (qa, SQuAD input) in {time.perf_counter() - started:.1f} s with {checkpoint}",
          file=sys.stderr)
    return len(answers)
