"""Perplexity of a permutation LM (XLNet) under the natural, left-to-right factorisation order.

XLNet is trained to predict a token from any subset of the others that comes
earlier in a sampled order; the left-to-right order is one of them, and under
it the model is an ordinary autoregressive LM whose perplexity compares with
GPT's on the same text. The stream and its sliding windows are the causal
scorer's (``ptmcli.evaluation.causal``, ``ptmcli.evaluation.windows``): each
token after the first is scored exactly once, with the same left context a
GPT window would give it.

A window of inputs ``s[a:b]`` and next-token targets ``s[a+1:b+1]`` becomes one
XLNet row ``s[a:b+1]`` in which the query stream at position ``p`` predicts
``s[a+p]`` while ``perm_mask`` hides positions ``p`` and after from it (and from
the content streams it reads), so no position sees its own token or any later
one. The last token's content is never read by a scored query, so the model
sees at most ``context`` tokens, as GPT does. Transformer-XL memory is not
carried between windows: each window is a segment of its own, as in
pretraining (``ptmcli.pretraining.permutation_lm``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ptmcli.evaluation.causal import score_windows
from ptmcli.evaluation.corpus import CorpusStats, Sentence
from ptmcli.evaluation.windows import IGNORE_INDEX, Window
from ptmcli.models.layers import linear_cross_entropy
from ptmcli.runtime.device import autocast


def left_to_right_masks(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``perm_mask`` ``[T, T]`` (1: position ``i`` may not read ``j``, for every ``j >= i``) and the identity
    ``target_mapping``: every position is predicted from the tokens before it."""
    blocked = torch.ones(length, length, device=device).triu()
    return blocked, torch.eye(length, device=device)


def _rows(windows: list[Window], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``[B, L+1]`` rows, each window's inputs plus its last target (always scored), and their
    labels: position ``p`` labelled with the token it holds, where the window scores it."""
    width = max(len(w.input_ids) for w in windows) + 1
    ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    labels = np.full((len(windows), width), IGNORE_INDEX, dtype=np.int64)
    for row, window in enumerate(windows):
        length = len(window.input_ids)
        ids[row, :length] = window.input_ids
        ids[row, length] = window.labels[-1]
        labels[row, 1 : length + 1] = window.labels
    return ids, labels


def score_permutation(
    model,
    sentences: Iterable[Sentence],
    stats: CorpusStats,
    *,
    end_id: int | None,
    pad_id: int,
    context: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    on_batch: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Summed nll, hits and counts of every token after the first: ``nll_sum``, ``tokens_scored``, ``correct``,
    ``windows`` (the keys of :func:`ptmcli.evaluation.causal.score_causal`)."""

    def score_batch(batch: list[Window]) -> tuple[float, int, int]:
        ids, labels = (torch.from_numpy(a).to(device) for a in _rows(batch, pad_id))
        perm_mask, target_mapping = left_to_right_masks(ids.shape[1], device)
        rows = ids.shape[0]
        with torch.no_grad(), autocast(precision, device):
            # Right padding needs no attention mask: no real position reads a later one.
            hidden, _ = model.encode(ids, perm_mask=perm_mask.expand(rows, -1, -1),
                                     target_mapping=target_mapping.expand(rows, -1, -1))
            scored = labels != IGNORE_INDEX
            nll, correct = linear_cross_entropy(hidden[scored], model.output_weight, model.lm_bias, labels[scored])
        return float(nll), int(scored.sum()), int(correct)

    return score_windows(score_batch, sentences, stats, end_id=end_id, context=context, stride=stride,
                         batch_size=batch_size, on_batch=on_batch)
