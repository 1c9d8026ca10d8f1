"""Questions and their passages -> model inputs: the passage cut into overlapping windows.

Each window is laid out as the family frames a pair (``ptmcli.tasks.encode``): ``start question
delimiter passage-window end`` (``[CLS] q [SEP] p [SEP]`` for BERT). The question keeps at most
``MAX_QUESTION_TOKENS``; the passage fills the rest of ``max_len``, and the next window starts
``doc_stride`` tokens further on (never further than a full window, so no passage token is skipped).

The answer is located in tokens through the tokenizer's character offsets: its first token is the
first whose span ends after the answer starts, its last the last that begins before it ends. A window
that holds the whole answer is labelled with its positions; one that does not is labelled (0, 0),
the start token, which is how the model says "not in this window".

Rows (numpy, as ``ptmcli.tasks.collate`` batches them): ``input_ids`` int32 [L], ``token_type_ids``
int8 [L] (1 on the passage and the end token), ``labels`` int64 [2] (start, end), ``line`` int64,
plus what decoding needs: ``offsets`` int32 [L, 2] (character span in the context of each passage
token, -1 elsewhere) and ``example`` (index of the question).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.tasks.encode import style_tokens
from ptmcli.tasks.squad import QAExample

MAX_QUESTION_TOKENS = 64  # BERT's max_query_length: a long question must not crowd out the passage
DEFAULT_DOC_STRIDE = 128
NOT_HERE = 0
SPAN_OUTPUTS = ("start", "end")


@dataclass
class QAWindows:
    """The windows of a file's questions, indexable as rows (what finetuning trains and predicts on)."""

    examples: list[QAExample]
    rows: list[dict[str, np.ndarray]]
    pad_id: int
    questions_cut: int = 0
    labels: list[str] = field(default_factory=lambda: list(SPAN_OUTPUTS))
    """The head's two outputs, recorded as the checkpoint's labels (transformers' id2label)."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.rows[index]


def answer_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """(first, last) token covering characters [start, end) of the text, or None when no token does."""
    first = next((i for i, (_, stop) in enumerate(offsets) if stop > start), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end), None)
    if first is None or last is None or last < first:
        return None
    return first, last


def encode_windows(examples: Sequence[QAExample], tokenizer, style: str, max_len: int,
                   doc_stride: int = DEFAULT_DOC_STRIDE) -> QAWindows:
    """The windows of every question (see the module docstring), labelled by its first answer."""
    if doc_stride < 1:
        raise PtmError(f"--doc-stride {doc_stride}: must be positive")
    tokens = style_tokens(tokenizer, style)
    framing = 2 + tokens.delimiter_repeats
    if max_len < framing + 2:
        raise PtmError(f"--max-len {max_len}: too short for a question and a passage")
    examples = list(examples)
    questions = tokenizer.encode_batch([e.question for e in examples])
    passages = tokenizer.encode_batch_offsets([e.context for e in examples])
    rows, cut = [], 0
    question_room = min(MAX_QUESTION_TOKENS, (max_len - framing) // 2)
    for index, (example, question, (ids, offsets)) in enumerate(zip(examples, questions, passages)):
        if len(question) > question_room:
            question, cut = question[:question_room], cut + 1
        head = [tokens.start, *question, *[tokens.delimiter] * tokens.delimiter_repeats]
        budget = max_len - len(head) - 1
        answer = None
        if example.answers:
            first = example.answers[0]
            answer = answer_tokens(offsets, first.start, first.start + len(first.text))
        step = min(doc_stride, budget)
        begin = 0
        while True:
            end = min(begin + budget, len(ids))
            rows.append(_window(index, example.line, head, ids[begin:end], offsets[begin:end], begin, answer, tokens.end))
            if end >= len(ids):
                break
            begin += step
    return QAWindows(examples, rows, tokens.pad, cut)


def _window(index: int, line: int, head: list[int], ids: list[int], offsets, begin: int,
            answer: tuple[int, int] | None, end_id: int) -> dict[str, np.ndarray]:
    length = len(head) + len(ids) + 1
    passage_offsets = np.full((length, 2), -1, dtype=np.int32)
    if ids:
        passage_offsets[len(head) : len(head) + len(ids)] = np.asarray(offsets, dtype=np.int32).reshape(-1, 2)
    labels = (NOT_HERE, NOT_HERE)
    if answer is not None and begin <= answer[0] and answer[1] < begin + len(ids):
        labels = (answer[0] - begin + len(head), answer[1] - begin + len(head))
    types = np.zeros(length, dtype=np.int8)
    types[len(head):] = 1
    return {
        "input_ids": np.asarray([*head, *ids, end_id], dtype=np.int32), "token_type_ids": types,
        "labels": np.asarray(labels, dtype=np.int64), "line": np.int64(line),
        "offsets": passage_offsets, "example": np.int64(index),
    }
