"""Causal language modelling (GPT) as a ``TrainTask``: shards -> fixed blocks -> next-token loss.

Documents are read in the seeded shuffled order and concatenated into one token
stream with an end-of-document token after each, as GPT-2 was trained. The
stream is cut into blocks of ``seq_len + 1`` tokens that overlap by one token,
so every token of the stream is predicted exactly once: a block's first
``seq_len`` tokens are the input and its last ``seq_len`` the targets. No
padding is ever needed. The stream's state (row cursor and the tokens read but
not yet used) is plain JSON, so runs resume exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shards import ShardDataset


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
        self.buffer = np.zeros(0, dtype=np.int64)

    def _fill(self, needed: int) -> None:
        parts = [self.buffer]
        have = len(self.buffer)
        while have < needed:
            row = self.dataset[int(self.rows[next(self._iter)])]
            ids = np.asarray(row.input_ids, dtype=np.int64)
            parts.extend((ids, np.array([self.eos_id], dtype=np.int64)))
            have += len(ids) + 1
        self.buffer = np.concatenate(parts)

    def take(self, count: int) -> np.ndarray:
        """``[count, seq_len + 1]`` token blocks; consecutive blocks share one token."""
        needed = count * self.seq_len + 1
        if len(self.buffer) < needed:
            self._fill(needed)
        starts = np.arange(count) * self.seq_len
        blocks = self.buffer[starts[:, None] + np.arange(self.seq_len + 1)]
        self.buffer = self.buffer[count * self.seq_len :]
        return blocks

    def state_dict(self) -> dict:
        return {"order": self.order.state_dict(), "buffer": self.buffer.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)
        self.buffer = np.asarray(state["buffer"], dtype=np.int64)


def _batch(blocks: np.ndarray) -> dict[str, torch.Tensor]:
    tensor = torch.from_numpy(blocks)
    return {"input_ids": tensor[:, :-1].contiguous(), "labels": tensor[:, 1:].contiguous()}


class CausalLMTask:
    """Next-token prediction on packed blocks; the loop's ``TrainTask``."""

    def __init__(self, stream: BlockStream, *, batch_size: int, eval_streams: dict[str, BlockStream] | None = None,
                 eval_batches: int = 20) -> None:
        self.stream = stream
        self.batch_size = batch_size
        # Fixed evaluation blocks, so evaluations along a run are comparable.
        self.eval_sets = {
            name: [_batch(s.take(batch_size)) for _ in range(eval_batches)] for name, s in (eval_streams or {}).items()
        }

    def next_micro_batches(self, count: int) -> list[dict[str, torch.Tensor]]:
        return [_batch(self.stream.take(self.batch_size)) for _ in range(count)]

    def normalizers(self, batches) -> dict[str, float]:
        return {"lm": float(sum(int((b["labels"] != -100).sum()) for b in batches))}

    def loss(self, model, batch, norms):
        out = model(batch["input_ids"], batch["labels"])
        stats = {"lm_loss_sum": float(out["lm_loss_sum"].detach()), "lm_count": float(out["lm_count"]), "lm_correct": float(out["lm_correct"])}
        return out["lm_loss_sum"] / norms["lm"], stats

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("lm_count"):
            return {}
        mean = sums["lm_loss_sum"] / sums["lm_count"]
        return {"lm_loss": mean, "lm_ppl": float(np.exp(min(mean, 50.0))), "lm_acc": sums["lm_correct"] / sums["lm_count"]}

    def tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        from ptmcli.runtime.device import autocast

        results = {}
        for name, batches in self.eval_sets.items():
            sums = {"lm_loss_sum": 0.0, "lm_count": 0.0, "lm_correct": 0.0}
            for batch in batches:
                with autocast(precision, device):
                    out = model(batch["input_ids"].to(device), batch["labels"].to(device))
                for key in sums:
                    sums[key] += float(out[key])
            prefix = "" if name == "heldout" else f"{name}_"
            results.update({prefix + k: v for k, v in self.summarize(sums).items()})
        return results

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
