"""The pretraining examples of BERT and ELMo: shard rows -> planned examples -> the rows a process builds.

``ExampleStream`` walks the documents in the seeded shuffled order and plans
examples from sentence lengths alone: NSP pairs (``pair_plans``) or packed
full-sentence blocks (``block_plans``). Every process walks the same plans, a
cheap pass, and builds (reads tokens, trims) only the examples of the rows it
asked for. Each example has a number, its place in the run's sequence of
examples; the draws that shape it (trimming here, masking in the task) are
keyed by that number, so a row is the same whichever process builds it.

The stream's state is plain JSON: the row cursor, the planning generator, the
plans made but not yet used, the packer's carry and the next example number.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError
from ptmcli.pretraining.block_plans import BlockPlanner, block_length, build_block
from ptmcli.pretraining.pair_plans import build_pairs, pair_length, plan_pairs, sentence_spans


def split_rows(num_rows: int, eval_rows: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows chosen by a fixed seed, independent of the training seed, so runs compare."""
    eval_rows = min(eval_rows, num_rows // 10)
    perm = np.random.default_rng(seed).permutation(num_rows)
    held = np.sort(perm[:eval_rows])
    train = np.sort(perm[eval_rows:])
    return train, held


@dataclass
class Drawn:
    """What one ``take`` hands out: the examples of the rows asked for, and facts about all it took."""

    examples: list
    """``PairExample``s or ``Block``s, in row order."""
    numbers: np.ndarray
    """Each built example's number in the run (keys its random draws)."""
    widest: int
    """Tokens of the longest example taken (built or not), special tokens excluded."""


class ExampleStream:
    """Endless, resumable stream of pretraining examples from a set of shard rows.

    ``objective`` is "mlm+nsp" (sentence pairs) or "mlm" (packed blocks).
    ``seed`` orders the rows and keys the examples' draws.
    """

    def __init__(self, dataset: ShardDataset, rows: np.ndarray, objective: str, seq_len: int, seed: int, *, separator_id: int,
                 short_seq_prob: float = 0.1, whole_word: bool = False, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.rows = rows
        self.objective = objective
        self.seq_len = seq_len
        self.seed = seed
        self.separator_id = separator_id
        self.short_seq_prob = short_seq_prob
        self.whole_word = whole_word
        self.order = ShuffledOrder(len(rows), seed, rank=rank, world_size=world_size, shuffle=shuffle)
        self._iter = iter(self.order)
        self.rng = random.Random(seed * 1000003 + rank)
        self.pending: deque[list] = deque()
        self.packer = BlockPlanner(seq_len - 2) if objective == "mlm" else None
        self.next_number = 0

    @property
    def pairs(self) -> bool:
        return self.objective == "mlm+nsp"

    @property
    def max_pair_tokens(self) -> int:
        return self.seq_len - 3  # [CLS] A [SEP] B [SEP]

    def _fill(self) -> None:
        row = int(self.rows[next(self._iter)])
        spans = sentence_spans(self.dataset[row].sentence_ends)
        if not len(spans[0]):
            return
        if self.pairs:
            self.pending.extend(plan_pairs(row, spans, self.max_pair_tokens, self.rng, self._random_document,
                                           short_seq_prob=self.short_seq_prob))
        else:
            self.pending.extend(self.packer.add_document(row, spans))

    def _random_document(self, rng: random.Random) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        row = int(self.rows[rng.randrange(len(self.rows))])
        return row, sentence_spans(self.dataset[row].sentence_ends)

    def take(self, count: int, rows: slice | None = None) -> Drawn:
        """The next ``count`` examples; only those at ``rows`` (all by default) are built."""
        while len(self.pending) < count:
            self._fill()
        plans = [self.pending.popleft() for _ in range(count)]
        numbers = np.arange(self.next_number, self.next_number + count, dtype=np.int64)
        self.next_number += count
        chosen = range(count)[rows] if rows is not None else range(count)
        read_cache: dict[int, object] = {}

        def read_row(row: int):
            if row not in read_cache:
                read_cache[row] = self.dataset[row]
            return read_cache[row]

        with_starts = self.whole_word and self.dataset.has_word_starts
        if self.pairs:
            examples = build_pairs([plans[i] for i in chosen], numbers[list(chosen)], read_row, self.max_pair_tokens, self.seed, with_starts)
            widest = max(pair_length(plan, self.max_pair_tokens) for plan in plans)
        else:
            examples = [build_block(plans[i], read_row, self.separator_id, with_starts) for i in chosen]
            widest = max(block_length(plan) for plan in plans)
        return Drawn(examples, numbers[list(chosen)], widest)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {
            "order": self.order.state_dict(),
            "rng": [version, list(internal), gauss],
            "plans": list(self.pending),
            "packer": self.packer.state_dict() if self.packer else None,
            "next_number": self.next_number,
        }

    def load_state_dict(self, state: dict) -> None:
        if "plans" not in state:
            raise PtmError("the checkpoint's data position holds built examples, from an older ptm; "
                           "it cannot continue the example stream exactly (start the run again, or resume with that version)")
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.pending = deque(state["plans"])
        if self.packer is not None:
            self.packer.load_state_dict(state["packer"])
        self.next_number = int(state["next_number"])
