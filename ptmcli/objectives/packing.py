"""FULL-SENTENCES packing (RoBERTa): fill each block with whole sentences, across documents.

Sentences are taken in order and appended to the current block while they fit;
when a document ends and the next one continues in the same block, a separator
token goes between them. A sentence longer than a block is cut into
block-sized pieces. Every input token lands in exactly one block, in order.

The packer keeps the unfinished block as its carry buffer; ``state_dict()``
returns it as plain JSON lists so a resumed run emits the same blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptmcli.errors import PtmError


@dataclass
class Block:
    """One packed block of token ids (no [CLS]/final [SEP]); word starts when tracked."""

    tokens: np.ndarray
    word_starts: np.ndarray | None = None


class SentencePacker:
    """Packs documents into blocks of at most ``max_tokens`` (seq_len - 2) whole sentences.

    ``add_document()`` yields the blocks it completes; ``flush()`` yields the last,
    partial one. ``separator_id`` (the tokenizer's [SEP] or </s>) marks document
    boundaries inside a block; word-start flags, when given, mark it as a word start.
    """

    def __init__(self, max_tokens: int, separator_id: int, track_word_starts: bool = False):
        if max_tokens < 1:
            raise PtmError(f"sequence length too short to pack sentences: {max_tokens} tokens per block")
        self.max_tokens = max_tokens
        self.separator_id = separator_id
        self.track_word_starts = track_word_starts
        self._tokens: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._length = 0
        self._pending_separator = False

    def add_document(
        self, sentences: Sequence[np.ndarray], word_starts: Sequence[np.ndarray] | None = None
    ) -> Iterator[Block]:
        """Append one document's sentences; yield every block that fills up."""
        if self.track_word_starts != (word_starts is not None):
            raise ValueError("word_starts must be given exactly when the packer tracks word starts")
        if word_starts is not None and len(word_starts) != len(sentences):
            raise ValueError(f"word_starts has {len(word_starts)} entries for {len(sentences)} sentences")
        for k, sentence in enumerate(sentences):
            sentence = np.asarray(sentence, dtype=np.int64)
            if not len(sentence):
                continue
            starts = None if word_starts is None else np.asarray(word_starts[k], dtype=bool)
            yield from self._add_sentence(sentence, starts)
        if self._length:
            self._pending_separator = True

    def flush(self) -> Iterator[Block]:
        """Yield the partial block, if any, and start empty."""
        if self._length:
            yield self._emit()

    def _add_sentence(self, sentence: np.ndarray, starts: np.ndarray | None) -> Iterator[Block]:
        separator = 1 if self._pending_separator else 0
        if self._length and self._length + separator + len(sentence) > self.max_tokens:
            yield self._emit()
            separator = 0
        if separator:
            self._append(np.array([self.separator_id], dtype=np.int64), np.ones(1, dtype=bool))
        self._pending_separator = False
        # A sentence longer than a block: full block-sized pieces now, the rest stays in the buffer.
        while len(sentence) > self.max_tokens - self._length:
            room = self.max_tokens - self._length
            self._append(sentence[:room], None if starts is None else starts[:room])
            yield self._emit()
            sentence = sentence[room:]
            starts = None if starts is None else starts[room:]
        self._append(sentence, starts)

    def _append(self, tokens: np.ndarray, starts: np.ndarray | None) -> None:
        self._tokens.append(tokens)
        if self.track_word_starts:
            self._starts.append(starts if starts is not None else np.ones(len(tokens), dtype=bool))
        self._length += len(tokens)

    def _emit(self) -> Block:
        tokens = np.concatenate(self._tokens)
        starts = np.concatenate(self._starts) if self.track_word_starts else None
        self._tokens, self._starts = [], []
        self._length = 0
        self._pending_separator = False
        return Block(tokens, starts)

    def state_dict(self) -> dict[str, Any]:
        """The carry buffer as JSON-friendly values."""
        tokens = np.concatenate(self._tokens).tolist() if self._tokens else []
        starts = np.concatenate(self._starts).astype(int).tolist() if self._starts else []
        return {
            "max_tokens": self.max_tokens,
            "separator_id": self.separator_id,
            "tokens": tokens,
            "word_starts": starts if self.track_word_starts else None,
            "pending_separator": self._pending_separator,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the carry buffer saved by :meth:`state_dict` (same block size, separator, tracking)."""
        saved = (state.get("max_tokens"), state.get("separator_id"), state.get("word_starts") is not None)
        if saved != (self.max_tokens, self.separator_id, self.track_word_starts):
            raise PtmError(
                f"packing state was saved for blocks of {saved[0]} tokens, separator {saved[1]}, "
                f"word starts {saved[2]}; this run has {self.max_tokens}, {self.separator_id}, "
                f"{self.track_word_starts}: resume with the same --seq-len, tokenizer and masking"
            )
        tokens = np.asarray(state["tokens"], dtype=np.int64)
        self._tokens = [tokens] if len(tokens) else []
        self._length = len(tokens)
        starts = np.asarray(state["word_starts"] or [], dtype=bool)
        self._starts = [starts] if self.track_word_starts and len(starts) else []
        self._pending_separator = bool(state.get("pending_separator", False))
