"""Labeled examples -> model inputs, for one input style.

Every style lays a sequence out as ``start A end`` or ``start A delimiter B end``
and differs only in which special tokens fill the three places:

========  ===========================  ==========================  ===========================
style     start                        delimiter                   end
========  ===========================  ==========================  ===========================
bert      [CLS] (cls)                  [SEP] (sep)                 [SEP] (sep)
gpt       bos, else cls                sep, else eos               eos, else sep
elmo      bos, else cls                eos, else sep               eos, else sep
========  ===========================  ==========================  ===========================

- bert: ``[CLS] A [SEP] B [SEP]``; the classifier reads [CLS].
- gpt: the input transformations of the GPT paper, ``start A delim B extract``,
  with the tokenizer's own special tokens standing in for the paper's learned
  ones (the vocabulary, and so the embedding matrix, stays as pretrained). With
  a GPT-2 style tokenizer all three are ``<|endoftext|>``. The classifier reads
  the last real token (``lengths - 1`` in a batch).
- elmo: ``bos A eos`` and, for pairs, ``bos A eos B eos``.

A family may repeat the delimiter (RoBERTa: ``<s> A </s></s> B </s>``), and
one whose summary token closes the sequence (``summary_last``) moves the start
token after the end one: XLNet's ``A <sep> <cls>`` and ``A <sep> B <sep> <cls>``.

``token_type_ids`` are 0 up to and including the delimiter and 1 after it, for
every style; a summary token moved to the end has segment 2 of its own (no text
shares it). Models without segment embeddings ignore them.

Pairs are truncated longest-first to fit ``max_len`` (the longer text loses its
last token until both fit; on a tie the second text does). Token classification
labels the first sub-token of each word and puts ``IGNORE_INDEX`` elsewhere;
``word_index`` keeps where each word's first sub-token is (-1 when truncation
cut the word off) so predictions map back to words. Multiple choice builds one
sequence per choice: the context (its texts joined by a space) as A and the
choice as B.

Rows are dicts of numpy arrays, the same form ``LabeledShards`` returns:

- ``input_ids`` int32 [L] (multiple choice: [C, L], right-padded with ``pad``),
- ``token_type_ids`` int8, same shape,
- ``lengths`` int32 [C] (multiple choice only),
- ``labels``: int64 scalar class id / choice index (``IGNORE_INDEX`` when
  unlabeled), float32 scalar score (NaN when unlabeled), or int32 [L] token tags,
- ``word_index`` int32 [words] (token classification only),
- ``line`` int64 scalar: the example's line in its file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.tasks import TASKS
from ptmcli.tasks.labels import has_label_list, label_index, unknown_label
from ptmcli.tasks.readers import LabeledExample

IGNORE_INDEX = -100
SUMMARY_SEGMENT = 2  # the segment after the two texts', which only a summary token moved to the end has
_ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class StyleTokens:
    """The special-token ids one style puts around the texts, and the padding id."""

    style: str
    start: int
    delimiter: int
    end: int
    pad: int
    delimiter_repeats: int = 1
    """RoBERTa separates a pair with two ``</s>``."""
    summary_last: bool = False
    """The start token goes after the end token, in :data:`SUMMARY_SEGMENT` (XLNet)."""

    @property
    def lead(self) -> list[int]:
        return [] if self.summary_last else [self.start]

    @property
    def tail(self) -> list[int]:
        return [self.end, self.start] if self.summary_last else [self.end]

    def close_segments(self, types: np.ndarray) -> np.ndarray:
        if self.summary_last:
            types[-1] = SUMMARY_SEGMENT
        return types


def style_tokens(tokenizer, style: str) -> StyleTokens:
    """The ids of ``style`` from ``tokenizer`` (see the module docstring), or a PtmError naming what is missing."""
    from ptmcli.models.registry import FAMILIES

    if style not in FAMILIES:
        raise PtmError(f"unknown input style {style!r}; choose one of {', '.join(FAMILIES)}")

    def first(*roles: str) -> int:
        for role in roles:
            value = getattr(tokenizer, f"{role}_id")
            if value is not None:
                return int(value)
        have = ", ".join(sorted(tokenizer.special_tokens)) or "none"
        raise PtmError(f"input style {style} needs a {' or '.join(roles)} token, but the tokenizer has none "
                       f"(its special tokens: {have})")

    start_roles, delimiter_roles, end_roles = FAMILIES[style].task_tokens
    start, delimiter, end = first(*start_roles), first(*delimiter_roles), first(*end_roles)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end  # padding is masked, never read
    family = FAMILIES[style]
    return StyleTokens(style, start, delimiter, end, int(pad), family.pair_delimiter_repeats, family.summary_last)


def truncate_pair(length_a: int, length_b: int, budget: int) -> tuple[int, int]:
    """Lengths after longest-first truncation to ``budget`` tokens (ties cut the second text)."""
    if length_a + length_b <= budget:
        return length_a, length_b
    share_a, share_b = budget - budget // 2, budget // 2
    if length_a <= share_a:
        return length_a, budget - length_a
    if length_b <= share_b:
        return budget - length_b, length_b
    return share_a, share_b


@dataclass
class EncodeReport:
    """What encoding did beyond the obvious: rows cut short, words without a sub-token."""

    rows: int = 0
    tokens: int = 0
    truncated: int = 0
    empty_words: int = 0


def encode_examples(examples: Sequence[LabeledExample], tokenizer, task: str, style: str, max_len: int,
                    labels: Sequence[str], source: str = "<input>",
                    report: EncodeReport | None = None) -> list[dict[str, np.ndarray]]:
    """Rows of model inputs (see the module docstring) for ``examples``.

    ``labels`` is the task's label list (``[]`` for regression and multiple
    choice); a label outside it is a PtmError naming ``source`` and the line.
    """
    if task not in TASKS:
        raise PtmError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    tokens = style_tokens(tokenizer, style)
    report = report if report is not None else EncodeReport()
    index = label_index(labels) if has_label_list(task) else {}
    encoder = _Encoder(tokenizer, tokens, task, max_len, index, list(labels), source, report)
    rows = encoder.encode(list(examples))
    report.rows += len(rows)
    return rows


class _Encoder:
    def __init__(self, tokenizer, tokens: StyleTokens, task: str, max_len: int, index: dict[str, int],
                 labels: list[str], source: str, report: EncodeReport) -> None:
        self.tokenizer, self.tokens, self.task, self.max_len = tokenizer, tokens, task, max_len
        self.index, self.labels, self.source, self.report = index, labels, source, report

    def encode(self, examples: list[LabeledExample]) -> list[dict[str, np.ndarray]]:
        if self.task == "token-classification":
            return self._token_rows(examples)
        if self.task == "multiple-choice":
            return self._choice_rows(examples)
        return self._sentence_rows(examples)

    # -- pieces -----------------------------------------------------------------------------

    def _budget(self, texts: int) -> int:
        specials = 2 if texts == 1 else 2 + self.tokens.delimiter_repeats
        if self.max_len - specials < texts:
            raise PtmError(f"max length {self.max_len} leaves no room for the text after {specials} special tokens")
        return self.max_len - specials

    def _ids(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(texts), _ENCODE_CHUNK):
            out.extend(self.tokenizer.encode_batch(texts[start : start + _ENCODE_CHUNK]))
        return out

    def _layout(self, a: list[int], b: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """``start A end`` or ``start A delimiter B end`` (or with the start moved last), truncated, with segment ids."""
        t = self.tokens
        if b is None:
            budget = self._budget(1)
            if len(a) > budget:
                a = a[:budget]
                self.report.truncated += 1
            ids = [*t.lead, *a, *t.tail]
            types = np.zeros(len(ids), dtype=np.int8)
        else:
            budget = self._budget(2)
            keep_a, keep_b = truncate_pair(len(a), len(b), budget)
            if (keep_a, keep_b) != (len(a), len(b)):
                self.report.truncated += 1
            ids = [*t.lead, *a[:keep_a], *[t.delimiter] * t.delimiter_repeats, *b[:keep_b], *t.tail]
            types = np.zeros(len(ids), dtype=np.int8)
            types[len(t.lead) + keep_a + t.delimiter_repeats :] = 1
        self.report.tokens += len(ids)
        return np.asarray(ids, dtype=np.int32), t.close_segments(types)

    def _class_id(self, example: LabeledExample) -> int:
        if example.label is None:
            return IGNORE_INDEX
        found = self.index.get(str(example.label))
        if found is None:
            raise unknown_label(self.source, example.line, str(example.label), self.labels)
        return found

    # -- tasks ------------------------------------------------------------------------------

    def _sentence_rows(self, examples: list[LabeledExample]) -> list[dict[str, np.ndarray]]:
        flat = [text for e in examples for text in e.texts]
        ids = iter(self._ids(flat))
        rows = []
        for example in examples:
            parts = [next(ids) for _ in example.texts]
            if len(parts) not in (1, 2):
                raise PtmError(f"{self.source}: line {example.line} has {len(parts)} texts; 1 or 2 are supported")
            input_ids, types = self._layout(parts[0], parts[1] if len(parts) == 2 else None)
            if self.task == "regression":
                label = np.float32(math.nan if example.label is None else float(example.label))
            else:
                label = np.int64(self._class_id(example))
            rows.append({"input_ids": input_ids, "token_type_ids": types, "labels": np.asarray(label),
                         "line": np.asarray(example.line, dtype=np.int64)})
        return rows

    def _choice_rows(self, examples: list[LabeledExample]) -> list[dict[str, np.ndarray]]:
        flat: list[str] = []
        for e in examples:
            if not e.choices:
                raise PtmError(f"{self.source}: line {e.line} has no choices")
            flat.append(" ".join(e.texts))
            flat.extend(e.choices)
        ids = iter(self._ids(flat))
        rows = []
        for example in examples:
            context = next(ids)
            laid = [self._layout(context, next(ids)) for _ in example.choices or ()]
            width = max(len(i) for i, _ in laid)
            input_ids = np.full((len(laid), width), self.tokens.pad, dtype=np.int32)
            types = np.zeros((len(laid), width), dtype=np.int8)
            for k, (i, t) in enumerate(laid):
                input_ids[k, : len(i)] = i
                types[k, : len(t)] = t
            label = IGNORE_INDEX if example.label is None else int(example.label)
            rows.append({"input_ids": input_ids, "token_type_ids": types,
                         "lengths": np.asarray([len(i) for i, _ in laid], dtype=np.int32),
                         "labels": np.asarray(label, dtype=np.int64),
                         "line": np.asarray(example.line, dtype=np.int64)})
        return rows

    def _token_rows(self, examples: list[LabeledExample]) -> list[dict[str, np.ndarray]]:
        # Each word is encoded alone, so sub-tokens never straddle the file's word
        # boundaries; a space before every word but the first gives byte-level BPE
        # the same pieces it would see in running text.
        pieces: dict[str, int] = {}
        for e in examples:
            if e.words is None:
                raise PtmError(f"{self.source}: line {e.line} has no words")
            for i, word in enumerate(e.words):
                pieces.setdefault(word if i == 0 else " " + word, len(pieces))
        encoded = self._ids(list(pieces))
        unk = self.tokenizer.unk_id
        budget = self._budget(1)
        t = self.tokens
        rows = []
        for example in examples:
            words = example.words or ()
            tags = example.word_labels
            ids: list[int] = list(t.lead)
            labels: list[int] = [IGNORE_INDEX] * len(ids)
            word_index = np.full(len(words), -1, dtype=np.int32)
            cut = False
            for i, word in enumerate(words):
                sub = encoded[pieces[word if i == 0 else " " + word]]
                if not sub:
                    self.report.empty_words += 1
                    if unk is None:
                        continue
                    sub = [unk]
                room = budget - (len(ids) - len(t.lead))
                if room <= 0:
                    cut = True
                    break
                if len(sub) > room:
                    sub, cut = sub[:room], True
                word_index[i] = len(ids)
                ids.extend(sub)
                tag = IGNORE_INDEX if tags is None else self._tag_id(example, tags[i])
                labels.extend([tag] + [IGNORE_INDEX] * (len(sub) - 1))
            if tags is not None and cut:
                # Tags of the words cut off still have to be known labels.
                for tag_name in tags:
                    self._tag_id(example, tag_name)
            ids.extend(t.tail)
            labels.extend([IGNORE_INDEX] * len(t.tail))
            self.report.truncated += cut
            self.report.tokens += len(ids)
            rows.append({"input_ids": np.asarray(ids, dtype=np.int32),
                         "token_type_ids": t.close_segments(np.zeros(len(ids), dtype=np.int8)),
                         "labels": np.asarray(labels, dtype=np.int32), "word_index": word_index,
                         "line": np.asarray(example.line, dtype=np.int64)})
        return rows

    def _tag_id(self, example: LabeledExample, tag: str) -> int:
        found = self.index.get(tag)
        if found is None:
            raise unknown_label(self.source, example.line, tag, self.labels)
        return found


def word_predictions(token_predictions: Sequence[int] | np.ndarray, word_index: Sequence[int] | np.ndarray,
                     labels: Sequence[str], missing: str = "O") -> list[str]:
    """One tag per word from per-token predicted ids: the prediction at each word's first sub-token.

    Words that truncation cut off (``word_index`` -1) get ``missing``.
    """
    predictions = np.asarray(token_predictions)
    return [labels[int(predictions[p])] if p >= 0 else missing for p in np.asarray(word_index).tolist()]
