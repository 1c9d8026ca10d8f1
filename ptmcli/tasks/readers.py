"""Reading labeled examples from TSV, CSV, JSON lines and CoNLL column files.

Every reader yields ``LabeledExample``s (see ``examples``; CoNLL files are
parsed in ``conll``) and reports problems as ``PtmError`` naming the file and
line. Which columns hold the texts, the label and the choices is found from
common names (GLUE, SuperGLUE, SWAG...) unless the caller names them; see
docs/tasks-data.md for the rules.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence

from ptmcli.errors import PtmError, where
from ptmcli.tasks import TASKS
from ptmcli.tasks.conll import read_conll
from ptmcli.tasks.examples import LabeledExample, LabeledFile

FORMATS = ("auto", "tsv", "csv", "jsonl", "conll")
STDIN = "-"

# Column names tried in order; matched without regard to case.
PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("#1 String", "#2 String"),  # MRPC
    ("text_a", "text_b"),
    ("question", "sentence"),  # QNLI
    ("question1", "question2"),  # QQP
    ("premise", "hypothesis"),  # MNLI, SNLI
)
SINGLE_COLUMNS = ("sentence", "text_a", "text", "review", "content")
LABEL_COLUMNS = ("label", "gold_label", "score", "quality", "labels", "is_duplicate")
# Multiple choice: the context, then numbered or listed choices.
CONTEXT_COLUMNS = (("premise", "question"), ("sent1", "sent2"), ("startphrase",), ("ctx",), ("goal",),
                   ("context",), ("question",), ("premise",))
CHOICE_LIST_COLUMNS = ("choices", "endings", "options")
_NUMBERED_CHOICE = re.compile(r"^(choice|ending|option|sol|answer)_?(\d+)$", re.IGNORECASE)
# CoNLL-style JSON lines: the words and their tags.
WORD_FIELDS = ("tokens", "words")
TAG_FIELDS = ("ner_tags", "tags", "labels", "label")
# COPA asks for a cause or an effect; the question word becomes a phrase the model reads.
COPA_QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}

_EXTENSIONS = {".tsv": "tsv", ".tab": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
               ".ndjson": "jsonl", ".conll": "conll", ".bio": "conll", ".iob": "conll", ".iob2": "conll"}


def read_labeled(path: str, task: str, *, text_columns: Sequence[str] | None = None,
                 label_column: str | None = None, choice_columns: Sequence[str] | None = None,
                 fmt: str = "auto", conll_label_index: int = -1, require_labels: bool = True,
                 data: bytes | None = None) -> LabeledFile:
    """Read the labeled examples of ``path`` for ``task``.

    ``text_columns`` / ``label_column`` / ``choice_columns`` override the column
    detection (for CoNLL files ``conll_label_index`` picks the tag column).
    With ``require_labels=False`` a file without labels is accepted (label None).
    ``data`` is the file's content when the caller has already read it.
    """
    if task not in TASKS:
        raise PtmError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if fmt not in FORMATS:
        raise PtmError(f"unknown labeled-data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name = "<stdin>" if path == STDIN else str(path)
    text = decode_utf8(read_bytes(path) if data is None else data, name)
    if not text.strip():
        raise PtmError(f"{name}: the file is empty")
    if fmt == "auto":
        fmt = detect_format(name, text, task)
    lines = _lines(text)
    if fmt == "conll":
        if task != "token-classification":
            raise PtmError(f"{name}: CoNLL column files hold token labels; use task token-classification, "
                           f"not {task}")
        result = read_conll(name, lines, conll_label_index, require_labels)
    else:
        if fmt == "jsonl":
            rows, names = _jsonl_rows(name, lines)
        else:
            rows, names = _table_rows(name, text, lines, fmt)
        builder = _ExampleBuilder(name, fmt, task, names, text_columns, label_column, choice_columns,
                                  require_labels)
        result = builder.build(rows)
    if not result.examples:
        raise PtmError(f"{name}: no examples in the file")
    if require_labels and not result.has_labels:
        raise PtmError(f"{name}: the file has no labels")
    return result


def read_examples(path: str, task: str, **options) -> list[LabeledExample]:
    """The examples alone of :func:`read_labeled`."""
    return read_labeled(path, task, **options).examples


# -- bytes and lines --------------------------------------------------------------------------


def read_bytes(path: str) -> bytes:
    if path == STDIN:
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise PtmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PtmError(f"{path}: is a directory, not a labeled data file") from None
    except OSError as err:
        raise PtmError(f"{path}: cannot read: {err.strerror}") from None


def decode_utf8(data: bytes, name: str) -> str:
    """Text of ``data``; a byte-order mark (MRPC's files start with one) is dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise PtmError(f"{where(name, line)}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
                       "convert the file to UTF-8") from None


def _lines(text: str) -> list[str]:
    # Split on \n only: str.splitlines would also split inside a text at \x1c, \u2028 ...
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def detect_format(name: str, text: str, task: str) -> str:
    """The format by extension, else by the first non-blank line."""
    first = next((line for line in _lines(text[:65536]) if line.strip()), "")
    if task == "token-classification":
        ext = os.path.splitext(name)[1].lower()
        return "jsonl" if _EXTENSIONS.get(ext) == "jsonl" or first.lstrip().startswith("{") else "conll"
    by_extension = _EXTENSIONS.get(os.path.splitext(name)[1].lower())
    if by_extension is not None:
        return by_extension
    if first.lstrip().startswith("{"):
        return "jsonl"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    return "tsv"


# -- rows of tables and JSON lines ------------------------------------------------------------

Row = tuple[int, dict]


def _table_rows(name: str, text: str, lines: list[str], fmt: str) -> tuple[list[Row], list[str]]:
    """(line, {column: cell}) for each data row of a TSV (no quoting, as GLUE writes) or CSV file."""
    if fmt == "csv":
        records = _csv_records(name, text)
    else:
        records = ((number, line.split("\t")) for number, line in enumerate(lines, 1) if line.strip())
    header_line, header = next(records, (1, []))
    names = [h.strip() for h in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PtmError(f"{where(name, header_line)}: the header names column {duplicates[0]!r} twice")
    rows = []
    separator = "tab-separated" if fmt == "tsv" else "comma-separated"
    for number, fields in records:
        if len(fields) != len(names):
            raise PtmError(f"{where(name, number)}: the row has {len(fields)} {separator} fields, the header has "
                           f"{len(names)} ({', '.join(names)})")
        rows.append((number, dict(zip(names, fields))))
    return rows, names


def _csv_records(name: str, text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                yield start, record
            start = reader.line_num + 1
    except csv.Error as err:
        raise PtmError(f"{where(name, start)}: not valid CSV: {err}") from None


def _jsonl_rows(name: str, lines: list[str]) -> tuple[list[Row], list[str]]:
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            raise PtmError(f"{where(name, number)}: not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise PtmError(f"{where(name, number)}: expected a JSON object, got {type(value).__name__}")
        rows.append((number, value))
    return rows, (list(rows[0][1]) if rows else [])


def _find(names: Sequence[str], wanted: str) -> str | None:
    """The column called ``wanted``, exactly or else ignoring case."""
    if wanted in names:
        return wanted
    lowered = wanted.lower()
    return next((n for n in names if n.lower() == lowered), None)


class _ExampleBuilder:
    """Turns rows of named fields into examples of one task, after settling the columns."""

    def __init__(self, name: str, fmt: str, task: str, names: list[str], text_columns, label_column,
                 choice_columns, require_labels: bool) -> None:
        self.name, self.fmt, self.task, self.names = name, fmt, task, names
        self.require_labels = require_labels
        self.kind = "field" if fmt == "jsonl" else "column"
        self.label_column = self._label_column(label_column)
        self.choice_columns: list[str] = []
        if task == "token-classification":
            self.text_columns = self._explicit(text_columns) if text_columns else self._first(WORD_FIELDS, "words")
            if self.label_column is None and label_column is None:
                self.label_column = next((c for c in (_find(names, t) for t in TAG_FIELDS) if c), None)
        elif task == "multiple-choice":
            self.text_columns = self._explicit(text_columns) if text_columns else self._context_columns()
            self.choice_columns = self._explicit(choice_columns) if choice_columns else self._choices()
        else:
            self.text_columns = self._explicit(text_columns) if text_columns else self._text_columns()
            self._check_text_count()
        if self.label_column is None and require_labels:
            tried = TAG_FIELDS if task == "token-classification" else LABEL_COLUMNS
            raise PtmError(f"{where(name, 1)}: no label {self.kind} (looked for {', '.join(tried)}); "
                           f"{self.kind}s are: {', '.join(names)}; name it with the label-column option")

    # -- settling the columns ---------------------------------------------------------------

    def _missing(self, wanted: str) -> PtmError:
        return PtmError(f"{where(self.name, 1)}: no {self.kind} {wanted!r}; the {self.kind}s are: "
                        f"{', '.join(self.names)}")

    def _explicit(self, wanted: Sequence[str]) -> list[str]:
        found = []
        for column in wanted:
            actual = _find(self.names, column)
            if actual is None:
                raise self._missing(column)
            found.append(actual)
        return found

    def _label_column(self, wanted: str | None) -> str | None:
        if wanted is not None:
            actual = _find(self.names, wanted)
            if actual is None:
                raise self._missing(wanted)
            return actual
        if self.task == "token-classification":
            return None
        return next((c for c in (_find(self.names, n) for n in LABEL_COLUMNS) if c), None)

    def _group(self, group: Sequence[str]) -> list[str] | None:
        found = [_find(self.names, n) for n in group]
        return None if None in found else found  # type: ignore[return-value]

    def _first(self, candidates: Sequence[str], what: str) -> list[str]:
        for candidate in candidates:
            actual = _find(self.names, candidate)
            if actual is not None:
                return [actual]
        raise PtmError(f"{where(self.name, 1)}: cannot tell which {self.kind} holds the {what} (looked for "
                       f"{', '.join(candidates)}); {self.kind}s are: {', '.join(self.names)}; name it with "
                       "the text-columns option")

    def _text_columns(self) -> list[str]:
        pair = next((g for g in map(self._group, PAIR_COLUMNS) if g), None)
        if self.task == "classification" and pair is not None:
            raise PtmError(f"{where(self.name, 1)}: the file holds sentence pairs ({', '.join(pair)}); use task "
                           "pair-classification, or name one text column with the text-columns option")
        if pair is not None:
            return pair
        if self.task == "pair-classification":
            tried = "; ".join(" + ".join(g) for g in PAIR_COLUMNS)
            raise PtmError(f"{where(self.name, 1)}: cannot tell which two {self.kind}s hold the sentence pair "
                           f"(looked for {tried}); {self.kind}s are: {', '.join(self.names)}; name them with "
                           "the text-columns option")
        return self._first(SINGLE_COLUMNS, "text")

    def _check_text_count(self) -> None:
        count = len(self.text_columns)
        allowed = {"classification": (1,), "pair-classification": (2,), "regression": (1, 2)}[self.task]
        if count not in allowed:
            want = " or ".join(map(str, allowed))
            raise PtmError(f"{self.name}: task {self.task} reads {want} text {self.kind}(s), "
                           f"got {count}: {', '.join(self.text_columns)}")

    def _context_columns(self) -> list[str]:
        for group in CONTEXT_COLUMNS:
            found = self._group(group)
            if found:
                return found
        tried = "; ".join(" + ".join(g) for g in CONTEXT_COLUMNS)
        raise PtmError(f"{where(self.name, 1)}: cannot tell which {self.kind}s hold the question or context "
                       f"(looked for {tried}); {self.kind}s are: {', '.join(self.names)}; name them with the "
                       "text-columns option")

    def _choices(self) -> list[str]:
        listed = next((c for c in (_find(self.names, n) for n in CHOICE_LIST_COLUMNS) if c), None)
        if listed is not None:
            return [listed]
        numbered: dict[str, list[tuple[int, str]]] = {}
        for column in self.names:
            match = _NUMBERED_CHOICE.match(column)
            if match:
                numbered.setdefault(match.group(1).lower(), []).append((int(match.group(2)), column))
        for _, columns in numbered.items():
            if len(columns) >= 2:
                return [c for _, c in sorted(columns)]
        raise PtmError(f"{where(self.name, 1)}: cannot find the choices (looked for choice1, choice2 ..., "
                       f"ending0 ..., or a list in {', '.join(CHOICE_LIST_COLUMNS)}); {self.kind}s are: "
                       f"{', '.join(self.names)}; name them with the choice-columns option")

    # -- rows -------------------------------------------------------------------------------

    def build(self, rows: list[Row]) -> LabeledFile:
        make = {"token-classification": self._tokens, "multiple-choice": self._multiple_choice}.get(
            self.task, self._sentences)
        examples = [make(number, row) for number, row in rows]
        return LabeledFile(self.name, self.fmt, examples, list(self.text_columns), self.label_column,
                           list(self.choice_columns))

    def _value(self, number: int, row: dict, column: str):
        if column not in row:
            raise PtmError(f"{where(self.name, number)}: no {self.kind} {column!r}; this row has: "
                           f"{', '.join(row)}")
        return row[column]

    def _text(self, number: int, row: dict, column: str) -> str:
        value = self._value(number, row, column)
        if not isinstance(value, str):
            raise PtmError(f"{where(self.name, number)}: {self.kind} {column!r} should be a string, "
                           f"got {json.dumps(value)[:40]}")
        return value.strip()

    def _raw_label(self, number: int, row: dict):
        """The label cell, or None when the file or this row has none (allowed without require_labels)."""
        column = self.label_column
        value = None if column is None else row.get(column)
        if isinstance(value, str):
            value = value.strip() or None
        if value is None and self.require_labels:
            raise PtmError(f"{where(self.name, number)}: the label {self.kind} {column!r} is empty or missing")
        return value

    def _sentences(self, number: int, row: dict) -> LabeledExample:
        texts = tuple(self._text(number, row, c) for c in self.text_columns)
        value = self._raw_label(number, row)
        label: str | float | None
        if value is None:
            label = None
        elif self.task == "regression":
            label = _score(self.name, number, value)
        else:
            label = _label_name(value)
        return LabeledExample(texts=texts, label=label, line=number)

    def _multiple_choice(self, number: int, row: dict) -> LabeledExample:
        texts = []
        for column in self.text_columns:
            text = self._text(number, row, column)
            if column.lower() == "question":
                text = COPA_QUESTIONS.get(text.lower(), text)
            texts.append(text)
        if len(self.choice_columns) == 1:
            listed = self._value(number, row, self.choice_columns[0])
            if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed) or len(listed) < 2:
                raise PtmError(f"{where(self.name, number)}: {self.kind} {self.choice_columns[0]!r} should be a "
                               "list of two or more strings")
            choices = tuple(c.strip() for c in listed)
        else:
            choices = tuple(self._text(number, row, c) for c in self.choice_columns)
        value = self._raw_label(number, row)
        label = None if value is None else _choice_index(self.name, number, value, len(choices))
        return LabeledExample(texts=tuple(texts), label=label, choices=choices, line=number)

    def _tokens(self, number: int, row: dict) -> LabeledExample:
        column = self.text_columns[0]
        words = self._value(number, row, column)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise PtmError(f"{where(self.name, number)}: {self.kind} {column!r} should be a list of strings")
        tags = None if self.label_column is None else row.get(self.label_column)
        if tags is None:
            if self.require_labels:
                raise PtmError(f"{where(self.name, number)}: no {self.kind} {self.label_column!r}")
        elif not isinstance(tags, list) or len(tags) != len(words):
            raise PtmError(f"{where(self.name, number)}: {self.kind} {self.label_column!r} should be a list with "
                           f"one tag per word ({len(words)})")
        return LabeledExample(texts=(" ".join(words),), label=None, words=tuple(words),
                              word_labels=None if tags is None else tuple(_label_name(t) for t in tags),
                              line=number)


def _label_name(value) -> str:
    """A class label as text: JSON numbers and booleans keep their JSON spelling (1, true)."""
    return value.strip() if isinstance(value, str) else json.dumps(value)


def _score(name: str, number: int, value) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        score = float(value)
    except (TypeError, ValueError):
        raise PtmError(f"{where(name, number)}: regression label {value!r} is not a number") from None
    if not math.isfinite(score):
        raise PtmError(f"{where(name, number)}: regression label {value!r} is not a finite number")
    return score


def _choice_index(name: str, number: int, value, count: int) -> int:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
        raise PtmError(f"{where(name, number)}: label {value!r} should be the index of the right choice, "
                       f"0 to {count - 1}")
    return value
