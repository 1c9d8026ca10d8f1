"""Batching encoded labeled rows into padded torch tensors.

Batches are right-padded to their longest row rounded up to a multiple of
``pad_to_multiple`` (8 by default): bf16 CPU kernels are prepared per shape, so
few distinct lengths keep them warm, and the extra padding is small.

Keys of a batch (int64 unless said otherwise):

- ``input_ids``, ``token_type_ids``, ``attention_mask`` (1 = real token):
  [B, L], or [B, C, L] for multiple choice;
- ``lengths``: real tokens per row [B] (or [B, C]); a GPT-style classifier
  reads position ``lengths - 1``;
- ``labels``: [B] class ids / choice indices (-100 when unlabeled), [B] float32
  scores (NaN when unlabeled), [B, L] token tags with -100 at padding, or [B, 2]
  answer start/end positions (question answering);
- ``word_index``: [B, W] first-sub-token position per word, -1 past the row's
  words (token classification);
- ``line``: [B] the examples' lines in their file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ptmcli.tasks.encode import IGNORE_INDEX


def padded_length(longest: int, pad_to_multiple: int = 8, max_length: int | None = None) -> int:
    """``longest`` rounded up to a multiple of ``pad_to_multiple``, but not past ``max_length``."""
    multiple = max(1, pad_to_multiple)
    length = -(-longest // multiple) * multiple
    return min(length, max(longest, max_length)) if max_length is not None else length


def collate(rows: Sequence[dict[str, np.ndarray]], pad_id: int, pad_to_multiple: int = 8,
            max_length: int | None = None) -> dict[str, torch.Tensor]:
    """One batch of ``rows`` (from ``LabeledShards`` or ``encode_examples``).

    ``max_length`` caps the rounded-up length (a model's number of positions);
    rows are never cut.
    """
    if not rows:
        raise ValueError("cannot collate an empty batch")
    if rows[0]["input_ids"].ndim == 2:
        return _collate_choices(rows, pad_id, pad_to_multiple, max_length)
    count = len(rows)
    lengths = np.array([len(r["input_ids"]) for r in rows], dtype=np.int64)
    width = padded_length(int(lengths.max()), pad_to_multiple, max_length)
    ids = np.full((count, width), pad_id, dtype=np.int64)
    types = np.zeros((count, width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : lengths[i]] = row["input_ids"]
        types[i, : lengths[i]] = row["token_type_ids"]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)),
        "lengths": torch.from_numpy(lengths),
        "line": torch.from_numpy(np.array([int(r["line"]) for r in rows], dtype=np.int64)),
    }
    first = rows[0]["labels"]
    if first.ndim == 1 and "word_index" not in rows[0]:
        # A (start, end) answer span per row (question answering).
        batch["labels"] = torch.from_numpy(np.stack([r["labels"] for r in rows]).astype(np.int64))
    elif first.ndim == 1:
        tags = np.full((count, width), IGNORE_INDEX, dtype=np.int64)
        for i, row in enumerate(rows):
            tags[i, : lengths[i]] = row["labels"]
        batch["labels"] = torch.from_numpy(tags)
    else:
        dtype = np.float32 if first.dtype.kind == "f" else np.int64
        batch["labels"] = torch.from_numpy(np.array([r["labels"] for r in rows], dtype=dtype))
    if "word_index" in rows[0]:
        words = max(len(r["word_index"]) for r in rows)
        index = np.full((count, words), -1, dtype=np.int64)
        for i, row in enumerate(rows):
            index[i, : len(row["word_index"])] = row["word_index"]
        batch["word_index"] = torch.from_numpy(index)
    return batch


def _collate_choices(rows: Sequence[dict[str, np.ndarray]], pad_id: int, pad_to_multiple: int,
                     max_length: int | None) -> dict[str, torch.Tensor]:
    choices = {len(r["lengths"]) for r in rows}
    if len(choices) != 1:
        raise ValueError(f"rows of one batch have different numbers of choices: {sorted(choices)}")
    count, per_row = len(rows), choices.pop()
    lengths = np.stack([np.asarray(r["lengths"], dtype=np.int64) for r in rows])
    width = padded_length(int(lengths.max()), pad_to_multiple, max_length)
    ids = np.full((count, per_row, width), pad_id, dtype=np.int64)
    types = np.zeros((count, per_row, width), dtype=np.int64)
    for i, row in enumerate(rows):
        for k in range(per_row):
            ids[i, k, : lengths[i, k]] = row["input_ids"][k, : lengths[i, k]]
            types[i, k, : lengths[i, k]] = row["token_type_ids"][k, : lengths[i, k]]
    mask = (np.arange(width)[None, None, :] < lengths[:, :, None]).astype(np.int64)
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
        "lengths": torch.from_numpy(lengths),
        "labels": torch.from_numpy(np.array([int(r["labels"]) for r in rows], dtype=np.int64)),
        "line": torch.from_numpy(np.array([int(r["line"]) for r in rows], dtype=np.int64)),
    }
