"""Builder of the ``plm`` objective: XLNet's permutation language modelling with partial prediction.

Examples are the packed blocks of ``clm`` (``clm_task.BlockStream``: documents
in the seeded order, an end-of-document token after each), ``seq_len`` tokens
each and numbered in the run's sequence of examples. Tokens are never
reordered: each example's factorisation order is realised as masks over the
natural order, as the model takes them.

*Targets* (partial prediction, XLNet's K): about 1/K of the tokens, chosen in
spans as in the paper's implementation: a span of n = 1..5 tokens (P(n)
proportional to 1/n) is placed at a uniform offset inside a window of n*K
tokens, windows following each other along the row, so that 1/K of the tokens
are predicted on average. Document separators stay context. At most
``ceil(seq_len / K)`` targets are kept per row, the width of the batch's
``target_mapping``; a row with fewer pads it with empty rows (label -100).

*The order*: the row's non-target tokens in a random order, then its targets
in a random order, so the targets are the last tokens of the order.
``perm_mask[i, j] = 1`` unless ``j`` comes before ``i`` in the order: a token
reads exactly the tokens earlier in the order (the content stream adds its own
position, the query stream never does). ``target_mapping[p, t] = 1`` for the
p-th target (in position order) at position ``t``.

Every draw is addressed by (seed, purpose, example number) through
``keyed_random``, so any process builds any row bit-identically and a resumed
run continues with no generator state.

*Memory* (segment recurrence): without ``--mem-len`` (or with 0) each example
is a segment of its own, read without memory. With ``--mem-len N`` each row of
the batch follows one stream of text across steps and reads the last N hidden
states of each layer from its previous segment, as in XLNet's and
Transformer-XL's pretraining: the layout, accumulation, processes and resume
are in ``segment_recurrence.py``. The draws above are the same either way.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.objectives.mlm import IGNORE_INDEX
from ptmcli.pretraining.clm_task import BlockStream, CausalLMTask
from ptmcli.pretraining.keyed_random import keyed_uniform
from ptmcli.pretraining.objective_context import ObjectiveContext

# Purposes of their own, so plm draws share no stream with any masker's.
SPAN_LENGTH, SPAN_OFFSET, ORDER = 201, 202, 203
MAX_SPAN = 5


class NumberedBlockStream(BlockStream):
    """``seq_len``-token blocks (no overlap), each with its number in the run's example sequence."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.next_number = 0

    def take(self, count: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        # The parent's blocks carry one token of the next block for the next-token target; plm drops it.
        blocks = super().take(count, rows)[:, :-1]
        chosen = np.arange(count)[rows] if rows is not None else np.arange(count)
        numbers = self.next_number + chosen
        self.next_number += count
        return blocks, numbers

    def state_dict(self) -> dict:
        return dict(super().state_dict(), next_number=self.next_number)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.next_number = int(state["next_number"])


class PermutationSampler:
    """Targets and factorisation order of one row, keyed by (seed, example number)."""

    def __init__(self, k: int, seq_len: int, context_ids: tuple[int, ...] = ()) -> None:
        if k < 1:
            raise PtmError(f"--plm-k {k}: must be at least 1 (1 predicts every token)")
        self.k = k
        self.num_predict = math.ceil(seq_len / k)
        self.context_ids = np.array(sorted(set(context_ids)), dtype=np.int64)
        weights = 1.0 / np.arange(1, MAX_SPAN + 1)
        self.cumulative = np.cumsum(weights / weights.sum())

    def targets(self, ids: np.ndarray, seed: int, number: int) -> np.ndarray:
        """Boolean ``[T]``: the predicted positions, at most ``num_predict`` of them."""
        length = len(ids)
        chosen = np.zeros(length, dtype=bool)
        eligible = ~np.isin(ids, self.context_ids)
        # Each window covers at least K tokens, so there are at most T / K + 1 of them.
        windows = length // self.k + 2
        spans = np.minimum(np.searchsorted(self.cumulative, keyed_uniform(seed, SPAN_LENGTH, number, windows)[0],
                                           side="right") + 1, MAX_SPAN)
        offsets = keyed_uniform(seed, SPAN_OFFSET, number, windows)[0]
        start = 0
        for n, draw in zip(spans.tolist(), offsets.tolist()):
            if start >= length:
                break
            window = n * self.k
            begin = start + int(draw * (window - n + 1))
            chosen[begin:min(begin + n, length)] = True
            start += window
        chosen &= eligible
        # More than the target rows can hold (rare: spans at both ends): the last ones stay context.
        extra = np.flatnonzero(chosen)[self.num_predict:]
        chosen[extra] = False
        return chosen

    def order(self, targets: np.ndarray, seed: int, number: int) -> np.ndarray:
        """``[T]`` rank of each position in the order: non-targets first, then targets, each shuffled."""
        draws = keyed_uniform(seed, ORDER, number, len(targets))[0]
        # Targets sort after every non-target: their keys are shifted past 1.
        return np.argsort(np.argsort(draws + targets, kind="stable"), kind="stable")

    def __call__(self, blocks: np.ndarray, numbers: np.ndarray, seed: int) -> dict[str, torch.Tensor]:
        rows, length = blocks.shape
        perm_mask = np.zeros((rows, length, length), dtype=bool)
        target_mapping = np.zeros((rows, self.num_predict, length), dtype=np.float32)
        labels = np.full((rows, self.num_predict), IGNORE_INDEX, dtype=np.int64)
        for r in range(rows):
            targets = self.targets(blocks[r], seed, int(numbers[r]))
            rank = self.order(targets, seed, int(numbers[r]))
            perm_mask[r] = rank[None, :] >= rank[:, None]
            where = np.flatnonzero(targets)
            target_mapping[r, np.arange(len(where)), where] = 1.0
            labels[r, :len(where)] = blocks[r, where]
        return {"input_ids": torch.from_numpy(np.ascontiguousarray(blocks)), "perm_mask": torch.from_numpy(perm_mask),
                "target_mapping": torch.from_numpy(target_mapping), "labels": torch.from_numpy(labels)}


class PermutationLMTask(CausalLMTask):
    """Permutation LM on packed blocks; the loop's ``TrainTask`` (loss, metrics and normalisers as ``clm``)."""

    def __init__(self, stream: NumberedBlockStream, sampler: PermutationSampler, *, seed: int, batch_size: int,
                 eval_streams: dict | None = None, eval_batches: int = 20) -> None:
        self.sampler = sampler
        self.order_seed = seed + 29
        self.eval_order_seed = seed + 4343
        super().__init__(stream, batch_size=batch_size, eval_streams=eval_streams, eval_batches=eval_batches)

    def _batch(self, taken, evaluation: bool = False) -> dict[str, torch.Tensor]:
        blocks, numbers = taken
        return self.sampler(blocks, numbers, self.eval_order_seed if evaluation else self.order_seed)

    def _forward(self, model, batch):
        return model(batch["input_ids"], batch["perm_mask"], batch["target_mapping"], batch["labels"])


def build(context: ObjectiveContext) -> PermutationLMTask:
    cfg = context.config
    end = context.end_id
    if end is None:
        raise PtmError("--objective plm puts an end-of-text or [SEP] token between documents: the tokenizer has neither")
    sampler = PermutationSampler(cfg.plm_k, cfg.seq_len, (end,))

    def make(ds, rows, seed, shuffle=True):
        return NumberedBlockStream(ds, rows, cfg.seq_len, seed, eos_id=end, shuffle=shuffle)

    task_class, train_stream = PermutationLMTask, None
    if cfg.mem_len:
        from ptmcli.pretraining.segment_recurrence import (
            ParallelSegmentStream,
            RecurrentPermutationLMTask,
        )

        # cfg.batch_size is the global micro-batch here: one memory stream per row of it.
        task_class = RecurrentPermutationLMTask
        train_stream = ParallelSegmentStream(context.dataset, context.train_rows, cfg.seq_len, cfg.seed, eos_id=end,
                                             streams=cfg.batch_size)
    return task_class(train_stream or make(context.dataset, context.train_rows, cfg.seed), sampler, seed=cfg.seed,
                      batch_size=cfg.batch_size,
                      eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                      eval_batches=cfg.eval_batches)
