"""Sentences -> token blocks that fit the model, for the models that score whole sequences (BERT, ELMo).

``packed`` fills each block with whole sentences, a separator token between
documents, as FULL-SENTENCES pretraining does (``ptmcli.objectives.packing``);
``sentence`` and ``line`` give every sentence or every line its own block.
Anything longer than a block is cut into block-sized pieces, so every token
lands in exactly one block, in order. The caller adds the special tokens
around each block ([CLS] ... [SEP], or ELMo's begin/end tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ptmcli.evaluation.corpus import Sentence


def pack_blocks(sentences: Iterable[Sentence], max_tokens: int, mode: str, separator_id: int | None) -> Iterator[np.ndarray]:
    """Blocks of at most ``max_tokens`` ids (int64) built from ``sentences`` per ``mode``."""
    if max_tokens < 1:
        raise ValueError(f"blocks need room for at least one token, got {max_tokens}")
    if mode not in ("packed", "sentence", "line"):
        raise ValueError(f"unknown sequence mode {mode!r}")
    parts: list[np.ndarray] = []
    length = 0

    def emit() -> np.ndarray:
        nonlocal parts, length
        block = np.concatenate(parts)
        parts, length = [], 0
        return block

    for sentence in sentences:
        starts_block = mode == "sentence" or (mode == "line" and sentence.line_start)
        if starts_block and length:
            yield emit()
        separator = mode == "packed" and sentence.document_start and length > 0 and separator_id is not None
        if mode == "packed" and length and length + separator + len(sentence.ids) > max_tokens:
            yield emit()
            separator = False
        if separator:
            parts.append(np.array([separator_id], dtype=np.int64))
            length += 1
        ids = sentence.ids
        while len(ids) > max_tokens - length:
            room = max_tokens - length
            parts.append(ids[:room])
            length += room
            yield emit()
            ids = ids[room:]
        if len(ids):
            parts.append(ids)
            length += len(ids)
    if length:
        yield emit()
