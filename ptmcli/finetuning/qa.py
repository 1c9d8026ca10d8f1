"""Extractive question answering in finetuning and evaluation: SQuAD files -> windows, logits -> EM/F1."""

from __future__ import annotations

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.tasks.qa_answers import DEFAULT_MAX_ANSWER_LEN, answer_texts
from ptmcli.tasks.qa_metrics import squad_scores
from ptmcli.tasks.qa_windows import DEFAULT_DOC_STRIDE, QAWindows, encode_windows
from ptmcli.tasks.squad import read_squad


def prepare_windows(path: str, tokenizer, style: str, max_len: int, doc_stride: int = DEFAULT_DOC_STRIDE,
                    require_answers: bool = True, errors: str = "strict", note=None) -> QAWindows:
    """The windows of the questions in the SQuAD file ``path`` (answers required unless told otherwise;
    ``errors``/``note`` as ``read_squad``'s)."""
    examples = read_squad(path, require_answers=require_answers, errors=errors, note=note)
    if not examples:
        raise PtmError(f"{path}: no questions")
    return encode_windows(examples, tokenizer, style, max_len, doc_stride)


def score_answers(logits: list[np.ndarray], windows: QAWindows, max_answer_len: int | None) -> tuple[dict, list[dict]]:
    """(exact_match and f1 in percent, one {"id", "prediction"} record per question)."""
    contexts = [e.context for e in windows.examples]
    answers = answer_texts(contexts, logits, windows.rows, max_answer_len or DEFAULT_MAX_ANSWER_LEN)
    records = [{"id": e.id, "prediction": a} for e, a in zip(windows.examples, answers)]
    golds = [[g.text for g in e.answers] for e in windows.examples]
    if not all(golds):
        return {}, records
    return {**squad_scores(answers, golds), "questions": len(answers)}, records


def predict_answers(model, config: dict, tokenizer, path: str, *, device, precision: str, batch_size: int) -> dict[str, str]:
    """{question id: answer} of a finetuned QA checkpoint's model on the SQuAD file ``path`` (answers not needed)."""
    from ptmcli.finetuning.evaluate import predict

    task = config["task"]
    windows = prepare_windows(path, tokenizer, task.get("input_style", config["arch"]), int(task.get("max_len", 384)),
                              int(task.get("doc_stride", DEFAULT_DOC_STRIDE)), require_answers=False)
    positions = getattr(model.lm.config, "max_position_embeddings", None)
    logits = predict(model, windows, batch_size=batch_size, device=device, precision=precision, pad_id=windows.pad_id, max_length=positions)
    _, records = score_answers(logits, windows, task.get("max_answer_len"))
    return {record["id"]: record["prediction"] for record in records}
