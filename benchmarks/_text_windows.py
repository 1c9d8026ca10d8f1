"""Real-text training windows for the learning-dynamics benchmarks: a shard directory's tokens as one stream,
cut into ``[CLS] ... [SEP]`` rows at random offsets."""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.shards import ShardDataset

CLS, SEP, MASK, FIRST_WORD = 2, 3, 4, 5  # ptm's wordpiece tokenizers with --special-tokens bert


def shard_tokens(path: str) -> tuple[np.ndarray, int]:
    """(every document's tokens of the shard directory, in order, as one int64 stream; its vocabulary size)."""
    dataset = ShardDataset.open(path)
    tokens = np.concatenate([dataset[i].input_ids for i in range(len(dataset))]).astype(np.int64)
    return tokens, dataset.vocab_size


def windows(tokens: np.ndarray, rng: np.random.Generator, count: int, length: int) -> torch.Tensor:
    """``count`` rows of ``length``: [CLS], a random run of ``length - 2`` tokens, [SEP]."""
    starts = rng.integers(0, len(tokens) - length, count)
    return torch.from_numpy(np.stack([np.concatenate([[CLS], tokens[s:s + length - 2], [SEP]]) for s in starts]))
