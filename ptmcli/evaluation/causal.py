"""Perplexity of a causal LM (GPT): the text as one token stream, scored through sliding windows.

The stream is laid out as in pretraining (``ptmcli.pretraining.clm_task``):
documents back to back with the end-of-text token after each. It also starts
with that token, so the first document's first token is predicted the way
every other document's is, after an end of text. The windows
(``ptmcli.evaluation.windows``) score each token after the first exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ptmcli.evaluation.corpus import CorpusStats, Sentence
from ptmcli.evaluation.windows import IGNORE_INDEX, Window, sliding_windows
from ptmcli.models.layers import linear_cross_entropy
from ptmcli.runtime.device import autocast


def token_stream(sentences: Iterable[Sentence], end_id: int | None, stats: CorpusStats) -> Iterator[np.ndarray]:
    """Chunks of the stream: ``<end> doc1 <end> doc2 ... <end>``.

    No end token follows a document cut short by ``--max-tokens``; without an
    end-of-text token in the vocabulary documents simply run together.
    """
    end = None if end_id is None else np.array([end_id], dtype=np.int64)
    if end is not None:
        yield end
    started = False
    for sentence in sentences:
        if sentence.document_start and started and end is not None:
            yield end
        started = True
        yield sentence.ids
    if started and end is not None and not stats.truncated:
        yield end


def _batch_tensors(windows: list[Window], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and labels; causal attention keeps the padding from reaching real tokens."""
    width = max(len(w.input_ids) for w in windows)
    ids = np.zeros((len(windows), width), dtype=np.int64)
    labels = np.full((len(windows), width), IGNORE_INDEX, dtype=np.int64)
    for row, window in enumerate(windows):
        ids[row, : len(window.input_ids)] = window.input_ids
        labels[row, : len(window.labels)] = window.labels
    return torch.from_numpy(ids).to(device), torch.from_numpy(labels).to(device)


def score_windows(
    score_batch: Callable[[list[Window]], tuple[float, int, int]],
    sentences: Iterable[Sentence],
    stats: CorpusStats,
    *,
    end_id: int | None,
    context: int,
    stride: int,
    batch_size: int,
    on_batch: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """The stream's windows in batches through ``score_batch`` (-> summed nll, tokens scored, hits), summed:
    ``nll_sum``, ``tokens_scored``, ``correct``, ``windows``."""
    sums = {"nll_sum": 0.0, "tokens_scored": 0, "correct": 0, "windows": 0}

    def run(batch: list[Window]) -> None:
        nll, scored, correct = score_batch(batch)
        sums["nll_sum"] += nll
        sums["tokens_scored"] += scored
        sums["correct"] += correct
        sums["windows"] += len(batch)
        if on_batch is not None:
            on_batch(sums)

    batch: list[Window] = []
    for window in sliding_windows(token_stream(sentences, end_id, stats), context, stride):
        batch.append(window)
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return sums


def score_causal(
    model,
    sentences: Iterable[Sentence],
    stats: CorpusStats,
    *,
    end_id: int | None,
    context: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    on_batch: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Summed next-token nll, hits and counts over the stream: ``nll_sum``, ``tokens_scored``, ``correct``, ``windows``."""

    def score_batch(batch: list[Window]) -> tuple[float, int, int]:
        ids, labels = _batch_tensors(batch, device)
        with torch.no_grad(), autocast(precision, device):
            hidden = model.gpt(ids)
            # The vocabulary projection, the largest cost of a small model, runs only where a token is scored.
            scored = labels != IGNORE_INDEX
            nll, correct = linear_cross_entropy(hidden[scored], model.output_weight, None, labels[scored])
        return float(nll), int(scored.sum()), int(correct)

    return score_windows(score_batch, sentences, stats, end_id=end_id, context=context, stride=stride,
                         batch_size=batch_size, on_batch=on_batch)
