"""Batch NSP pairs and packed blocks into padded tensors with BERT's special tokens.

Pairs become ``[CLS] A [SEP] B [SEP]`` (segment 0 up to the first [SEP], 1
after); packed blocks become ``[CLS] block [SEP]``. Batches pad to their longest
row by default (less work per step) or to ``seq_len``.

Returned keys: ``input_ids``, ``token_type_ids``, ``attention_mask`` (1 = real
token), ``nsp_labels`` (pairs only; 1 = B is a random sentence, 0 = B follows A,
as in transformers) as int64 tensors; ``special_tokens_mask`` (True at [CLS],
[SEP] and padding: never masked) and, when the inputs carry them,
``word_starts`` (special tokens count as word starts) as bool tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ptmcli.objectives.nsp import PairExample
from ptmcli.objectives.packing import Block


def collate_pairs(
    examples: Sequence[PairExample],
    cls_id: int,
    sep_id: int,
    pad_id: int,
    seq_len: int,
    pad_to_longest: bool = True,
) -> dict[str, torch.Tensor]:
    """``[CLS] A [SEP] B [SEP]`` rows for NSP + MLM."""
    rows = []
    for ex in examples:
        a, b = np.asarray(ex.tokens_a), np.asarray(ex.tokens_b)
        starts = None
        if ex.word_starts_a is not None and ex.word_starts_b is not None:
            starts = [np.asarray(ex.word_starts_a, dtype=bool), np.asarray(ex.word_starts_b, dtype=bool)]
        rows.append(((a, b), starts))
    batch = _assemble(rows, cls_id, sep_id, pad_id, seq_len, pad_to_longest)
    batch["nsp_labels"] = torch.tensor([int(ex.is_random_next) for ex in examples], dtype=torch.long)
    return batch


def collate_blocks(
    blocks: Sequence[Block | np.ndarray],
    cls_id: int,
    sep_id: int,
    pad_id: int,
    seq_len: int,
    pad_to_longest: bool = True,
) -> dict[str, torch.Tensor]:
    """``[CLS] block [SEP]`` rows for packed single-segment MLM.

    The separators the packer put between documents are marked special too.
    """
    rows = []
    for block in blocks:
        tokens = block.tokens if isinstance(block, Block) else np.asarray(block)
        starts = block.word_starts if isinstance(block, Block) else None
        rows.append(((tokens,), None if starts is None else [np.asarray(starts, dtype=bool)]))
    batch = _assemble(rows, cls_id, sep_id, pad_id, seq_len, pad_to_longest)
    batch["special_tokens_mask"] |= batch["input_ids"] == sep_id
    return batch


def _assemble(
    rows: list[tuple[tuple[np.ndarray, ...], list[np.ndarray] | None]],
    cls_id: int,
    sep_id: int,
    pad_id: int,
    seq_len: int,
    pad_to_longest: bool,
) -> dict[str, torch.Tensor]:
    """Lay out ``[CLS] seg0 [SEP] seg1 [SEP] ...`` per row, segment ids counting up after each [SEP]."""
    lengths = [1 + sum(len(seg) + 1 for seg in segments) for segments, _ in rows]
    too_long = [n for n in lengths if n > seq_len]
    if too_long:
        raise ValueError(f"a row of {too_long[0]} tokens does not fit seq_len {seq_len}")
    width = max(lengths, default=0) if pad_to_longest else seq_len
    with_starts = bool(rows) and all(starts is not None for _, starts in rows)

    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    special = np.ones((len(rows), width), dtype=bool)
    word_starts = np.ones((len(rows), width), dtype=bool)
    for r, (segments, starts) in enumerate(rows):
        ids[r, 0] = cls_id
        pos = 1
        for s, seg in enumerate(segments):
            end = pos + len(seg)
            ids[r, pos:end] = seg
            types[r, pos : end + 1] = s
            special[r, pos:end] = False
            if with_starts:
                word_starts[r, pos:end] = starts[s]
            ids[r, end] = sep_id
            pos = end + 1
    attention = np.zeros((len(rows), width), dtype=np.int64)
    for r, n in enumerate(lengths):
        attention[r, :n] = 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(attention),
        "special_tokens_mask": torch.from_numpy(special),
    }
    if with_starts:
        batch["word_starts"] = torch.from_numpy(word_starts)
    return batch
