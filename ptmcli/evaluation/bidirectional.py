"""Perplexity of a bidirectional LM (ELMo): forward, backward, and their average.

Each block (``ptmcli.evaluation.sequences``) becomes ``<begin> block <end>``
with the tokens ELMo was pretrained with (``sentence_boundary_ids``). The
forward LM predicts every token after ``<begin>`` (the block and ``<end>``),
the backward LM every token before ``<end>`` (``<begin>`` and the block), each
from one side only; ``ElmoBiLM.score`` gives the per-token nll of both. The
average is ``exp((forward loss + backward loss) / 2)``, the perplexity of the
loss ELMo is trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ptmcli.runtime.device import autocast


def has_scoring(model) -> bool:
    """Whether this ELMo build can score text (``ElmoBiLM.score``)."""
    return callable(getattr(model, "score", None))


def score_bidirectional(
    model,
    blocks: Iterable[np.ndarray],
    *,
    begin_id: int,
    end_id: int,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    on_batch: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Sums over all blocks: ``fwd_nll_sum``, ``bwd_nll_sum``, ``tokens_scored`` (per direction), ``sequences``."""
    sums = {"fwd_nll_sum": 0.0, "bwd_nll_sum": 0.0, "tokens_scored": 0, "sequences": 0}

    def run(group: list[np.ndarray]) -> None:
        width = max(len(block) for block in group) + 2
        ids = np.full((len(group), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.int64)
        for row, block in enumerate(group):
            ids[row, : len(block) + 2] = np.concatenate(([begin_id], block, [end_id]))
            mask[row, : len(block) + 2] = 1
        with torch.no_grad(), autocast(precision, device):
            out = model.score(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        sums["fwd_nll_sum"] += float(out["fwd_nll"].double().sum())
        sums["bwd_nll_sum"] += float(out["bwd_nll"].double().sum())
        sums["tokens_scored"] += int(mask.sum()) - len(group)  # n + 2 tokens, n + 1 predicted each way
        sums["sequences"] += len(group)
        if on_batch is not None:
            on_batch(sums)

    group: list[np.ndarray] = []
    for block in blocks:
        group.append(block)
        if len(group) == batch_size:
            run(group)
            group = []
    if group:
        run(group)
    return sums
