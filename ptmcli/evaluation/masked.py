"""A masked LM (BERT) on raw text: MLM loss and accuracy, and pseudo-perplexity.

Each block (``ptmcli.evaluation.sequences``) becomes ``[CLS] block [SEP]``.

- MLM: 15% of the tokens are chosen and corrupted as in pretraining (80% [MASK],
  10% random, 10% kept) from a generator seeded by ``--seed``, and predicted.
  The same seed, data and batch size give the same masks.
- Pseudo-perplexity (Salazar et al., 2020): every token is masked in turn, one
  copy of its sequence per token, and scored by the MLM head;
  ``PPPL = exp(-(1/N) * sum_t log P(x_t | x without x_t))``. Copies of several
  sequences go through the encoder together, and the head runs only on the one
  masked row of each copy. It costs one encoder pass per token: ``--max-tokens``
  bounds it. Special tokens ([CLS], [SEP], the separators between documents)
  are neither masked nor scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ptmcli.objectives.collate import collate_blocks
from ptmcli.objectives.mlm import mask_tokens
from ptmcli.runtime.device import autocast

MASK_PROB = 0.15


@dataclass(frozen=True)
class MaskedSpecials:
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...] = ()
    """Never drawn as random replacements (e.g. [UNK])."""


def pseudo_log_likelihood(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, scored: torch.Tensor, mask_id: int, rows_per_pass: int,
    family,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nll [N], hit [N])`` of every position where ``scored`` is True, each masked alone.

    ``input_ids``/``attention_mask``/``scored`` are ``[B, T]``; results follow
    ``scored.nonzero()`` order (row-major). ``rows_per_pass`` copies run per
    encoder pass, each trimmed to the longest real row among them.
    """
    rows, positions = scored.nonzero(as_tuple=True)
    lengths = attention_mask.sum(dim=1)
    nll, hits = [], []
    for start in range(0, rows.numel(), rows_per_pass):
        row, pos = rows[start : start + rows_per_pass], positions[start : start + rows_per_pass]
        width = int(lengths[row].max())
        ids = input_ids[row, :width].clone()
        targets = ids[torch.arange(len(row)), pos]
        ids[torch.arange(len(row)), pos] = mask_id
        hidden = family.top(model, ids, None, attention_mask[row, :width])
        logits = model.mlm(hidden[torch.arange(len(row)), pos]).float()
        nll.append(F.cross_entropy(logits, targets, reduction="none"))
        hits.append(logits.argmax(dim=-1) == targets)
    if not nll:
        empty = input_ids.new_zeros(0, dtype=torch.float32)
        return empty, empty.bool()
    return torch.cat(nll), torch.cat(hits)


def score_masked(
    model,
    family,
    blocks: Iterable[np.ndarray],
    specials: MaskedSpecials,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    pseudo: bool,
    device: torch.device,
    precision: str,
    on_batch: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Sums over all blocks: ``mlm_nll_sum``, ``mlm_tokens``, ``mlm_correct`` and, with ``pseudo``,
    ``pll_nll_sum``, ``pll_tokens``, ``pll_correct``; ``sequences`` counts the blocks."""
    generator = torch.Generator().manual_seed(seed)
    sums = {"mlm_nll_sum": 0.0, "mlm_tokens": 0, "mlm_correct": 0, "sequences": 0}
    if pseudo:
        sums.update(pll_nll_sum=0.0, pll_tokens=0, pll_correct=0)

    def run(group: list[np.ndarray]) -> None:
        batch = collate_blocks(group, specials.cls_id, specials.sep_id, specials.pad_id, seq_len)
        inputs, labels = mask_tokens(
            batch["input_ids"], batch["special_tokens_mask"], specials.vocab_size, specials.mask_id, generator,
            mask_prob=MASK_PROB, special_ids=specials.special_ids,
        )
        ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with torch.no_grad(), autocast(precision, device):
            out = model(inputs.to(device), None, attention, mlm_labels=labels.to(device))
            sums["mlm_nll_sum"] += float(out["mlm_loss_sum"])
            sums["mlm_tokens"] += int(out["mlm_count"])
            sums["mlm_correct"] += int(out["mlm_correct"])
            if pseudo:
                scored = ~batch["special_tokens_mask"].to(device)
                nll, hits = pseudo_log_likelihood(model, ids, attention, scored, specials.mask_id, batch_size, family)
                sums["pll_nll_sum"] += float(nll.sum())
                sums["pll_tokens"] += int(nll.numel())
                sums["pll_correct"] += int(hits.sum())
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
