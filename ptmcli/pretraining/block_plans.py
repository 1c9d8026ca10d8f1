"""FULL-SENTENCES blocks (RoBERTa), planned on token ranges and built only for the rows a process trains on.

The packing is the one of ``objectives/packing.py``: whole sentences in order,
across documents, a separator between two documents sharing a block, and a
sentence longer than a block cut into block-sized pieces. A plan is the list
of its pieces, ``[row, start, end]`` token ranges of shard rows, with
``[-1, 0, 1]`` for a separator. Plans are cheap to make for every example of a
global batch, and the packer's carry (the unfinished block) is a few ranges
in a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.objectives.packing import Block

SEPARATOR = [-1, 0, 1]


class BlockPlanner:
    """Packs documents' sentence ranges into plans of at most ``max_tokens`` (seq_len - 2) tokens."""

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 1:
            raise PtmError(f"sequence length too short to pack sentences: {max_tokens} tokens per block")
        self.max_tokens = max_tokens
        self._pieces: list[list[int]] = []
        self._length = 0
        self._pending_separator = False

    def add_document(self, row: int, spans: tuple[np.ndarray, np.ndarray]) -> Iterator[list[list[int]]]:
        """Append one document's non-empty sentences (``(starts, ends)`` offsets); yield every plan that fills up."""
        for start, end in zip(*(values.tolist() for values in spans)):
            yield from self._add_sentence(row, start, end)
        if self._length:
            self._pending_separator = True

    def _add_sentence(self, row: int, start: int, end: int) -> Iterator[list[list[int]]]:
        separator = 1 if self._pending_separator else 0
        if self._length and self._length + separator + end - start > self.max_tokens:
            yield self._emit()
            separator = 0
        if separator:
            self._append(list(SEPARATOR))
        self._pending_separator = False
        # A sentence longer than a block: full block-sized pieces now, the rest stays in the carry.
        while end - start > self.max_tokens - self._length:
            room = self.max_tokens - self._length
            self._append([row, start, start + room])
            yield self._emit()
            start += room
        self._append([row, start, end])

    def _append(self, piece: list[int]) -> None:
        self._pieces.append(piece)
        self._length += piece[2] - piece[1]

    def _emit(self) -> list[list[int]]:
        plan = self._pieces
        self._pieces, self._length, self._pending_separator = [], 0, False
        return plan

    def state_dict(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "pieces": [list(p) for p in self._pieces], "pending_separator": self._pending_separator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("max_tokens") != self.max_tokens:
            raise PtmError(f"packing state was saved for blocks of {state.get('max_tokens')} tokens; this run has "
                           f"{self.max_tokens}: resume with the same --seq-len")
        self._pieces = [[int(v) for v in piece] for piece in state["pieces"]]
        self._length = sum(p[2] - p[1] for p in self._pieces)
        self._pending_separator = bool(state["pending_separator"])


def block_length(plan: list[list[int]]) -> int:
    """Tokens of the block (no [CLS] and final [SEP])."""
    return sum(end - start for _row, start, end in plan)


def build_block(plan: list[list[int]], read_row: Callable[[int], Any], separator_id: int, with_word_starts: bool) -> Block:
    """The block of ``plan``; ``read_row(row)`` gives a shard row (``input_ids``, ``word_starts``)."""
    tokens, starts = [], []
    for row, start, end in plan:
        if row < 0:
            tokens.append(np.array([separator_id], dtype=np.int64))
            starts.append(np.ones(1, dtype=bool))
            continue
        source = read_row(row)
        tokens.append(np.asarray(source.input_ids[start:end], dtype=np.int64))
        if with_word_starts:
            starts.append(source.word_starts[start:end])
    return Block(np.concatenate(tokens), np.concatenate(starts) if with_word_starts else None)
