"""Causal language modelling (GPT) as a ``TrainTask``: shards -> fixed blocks -> next-token loss.

Documents are read in the seeded shuffled order and concatenated into one token
stream with an end-of-document token after each, as GPT-2 was trained. The
stream is cut into blocks of ``seq_len + 1`` tokens that overlap by one token,
so every token of the stream is predicted exactly once: a block's first
``seq_len`` tokens are the input and its last ``seq_len`` the targets. No
padding is ever needed. The stream keeps the documents read but not yet used
as token ranges, so any rows of a batch can be cut alone and its state (row
cursor and those ranges) is a little plain JSON.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError
from ptmcli.pretraining.task_base import PretrainTask

_END_OF_DOCUMENT = -1  # the row of a range that stands for the end-of-document token


class BlockStream:
    """Endless, resumable stream of ``seq_len + 1``-token blocks from a set of shard rows."""

    def __init__(self, dataset: ShardDataset, rows: np.ndarray, seq_len: int, seed: int, *, eos_id: int,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.rows = rows
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.order = ShuffledOrder(len(rows), seed, rank=rank, world_size=world_size, shuffle=shuffle)
        self._iter = iter(self.order)
        self.ranges: deque[list[int]] = deque()  # [row, start, end]: the stream's next tokens
        self.available = 0

    def _fill(self, needed: int) -> None:
        while self.available < needed:
            row = int(self.rows[next(self._iter)])
            length = len(self.dataset[row].input_ids)
            self.ranges.extend(([row, 0, length], [_END_OF_DOCUMENT, 0, 1]))
            self.available += length + 1

    def _tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``start..stop`` of the stream, counted from its current head."""
        parts, offset = [], 0
        for row, begin, end in self.ranges:
            if offset >= stop:
                break
            length = end - begin
            lo, hi = max(start - offset, 0), min(stop - offset, length)
            if lo < hi:
                if row == _END_OF_DOCUMENT:
                    parts.append(np.array([self.eos_id], dtype=np.int64))
                else:
                    parts.append(np.asarray(self.dataset[row].input_ids[begin + lo : begin + hi], dtype=np.int64))
            offset += length
        return np.concatenate(parts)

    def _advance(self, count: int) -> None:
        while count:
            first = self.ranges[0]
            step = min(count, first[2] - first[1])
            first[1] += step
            count -= step
            self.available -= step
            if first[1] == first[2]:
                self.ranges.popleft()

    def take(self, count: int, rows: slice | None = None) -> np.ndarray:
        """``[rows, seq_len + 1]`` token blocks of the next ``count`` (all by default); consecutive blocks share one token."""
        self._fill(count * self.seq_len + 1)
        chosen = range(count)[rows] if rows is not None else range(count)
        blocks = np.zeros((len(chosen), self.seq_len + 1), dtype=np.int64)
        if len(chosen):
            first, last = chosen[0], chosen[-1]
            tokens = self._tokens(first * self.seq_len, (last + 1) * self.seq_len + 1)
            starts = (np.asarray(chosen) - first) * self.seq_len
            blocks = tokens[starts[:, None] + np.arange(self.seq_len + 1)]
        self._advance(count * self.seq_len)
        return blocks

    def state_dict(self) -> dict:
        return {"order": self.order.state_dict(), "ranges": [list(r) for r in self.ranges]}

    def load_state_dict(self, state: dict) -> None:
        if "ranges" not in state:
            raise PtmError("the checkpoint's data position holds a token buffer, from an older ptm; "
                           "it cannot continue the block stream exactly (start the run again, or resume with that version)")
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)
        self.ranges = deque([int(v) for v in r] for r in state["ranges"])
        self.available = sum(end - start for _row, start, end in self.ranges)


def _batch(blocks: np.ndarray) -> dict[str, torch.Tensor]:
    tensor = torch.from_numpy(blocks)
    return {"input_ids": tensor[:, :-1].contiguous(), "labels": tensor[:, 1:].contiguous()}


class CausalLMTask(PretrainTask):
    """Next-token prediction on packed blocks; the loop's ``TrainTask``."""

    sum_keys = ("lm_loss_sum", "lm_count", "lm_correct")

    def __init__(self, stream: BlockStream, *, batch_size: int, eval_streams: dict[str, BlockStream] | None = None,
                 eval_batches: int = 20) -> None:
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _batch(self, taken: np.ndarray, evaluation: bool = False) -> dict[str, torch.Tensor]:
        return _batch(taken)

    def normalizer_counts(self, batches) -> dict[str, float]:
        return {"lm": float(sum(int((b["labels"] != -100).sum()) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return dict(counts)

    def _forward(self, model, batch):
        return model(batch["input_ids"], batch["labels"])

    def _objective(self, out, norms):
        return out["lm_loss_sum"] / norms["lm"]

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("lm_count"):
            return {}
        mean = sums["lm_loss_sum"] / sums["lm_count"]
        return {"lm_loss": mean, "lm_ppl": float(np.exp(min(mean, 50.0))), "lm_acc": sums["lm_correct"] / sums["lm_count"]}

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())
