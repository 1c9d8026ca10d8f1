"""Reading labeled examples from TSV, CSV, JSON lines and CoNLL column files.

Every reader yields ``LabeledExample``s (see ``examples``; CoNLL files are
parsed in ``conll``) and reports problems as ``PtmError`` naming the file and
line. Which columns hold the texts, the label and the choices is found from
common names (GLUE, SuperGLUE, SWAG...) unless the caller names them; see
docs/tasks-data.md for the rules.

Input is streamed line by line through ``textio.lines.TextLines`` (see
``tasks.lines``): files, ``-`` for stdin, gzip-compressed or not.
``read_labeled`` collects every example of a file (finetuning, ``ptm eval``);
``open_labeled`` hands them out as they are read, so an input of any size
streams through (``ptm predict``). With ``labels=False`` any label column is
ignored and plain lines (``text``: one text per line, ``a ||| b`` for a pair)
are read too.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

from ptmcli.errors import PtmError, where
from ptmcli.tasks import TASKS
from ptmcli.tasks.conll import DOCSTART, read_conll
from ptmcli.tasks.examples import LabeledExample, LabeledFile
from ptmcli.tasks.lines import labeled_lines
from ptmcli.textio.json_lines import json_object
from ptmcli.textio.lines import TextLines, starts_json_object

FORMATS = ("auto", "tsv", "csv", "jsonl", "conll")
# Unlabeled input may also be plain lines.
INPUT_FORMATS = (*FORMATS, "text")
# A pair on one plain line, as ``ptm extract-features`` reads it.
PAIR_SEPARATOR = " ||| "

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
# A CoNLL stream hands this many lines at a time (whole sentences) to the CoNLL reader.
CONLL_BLOCK_LINES = 50_000
# Lines looked at to tell CoNLL columns from one sentence per line.
_SNIFF_LINES = 5
_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")


class UnlabeledData(PtmError):
    """Labels were needed, and the input has none (no label column, words without tags, plain lines)."""


class _NoTextColumn(PtmError):
    """No column of a table holds the text."""


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
    stream = _open(path, task, text_columns, label_column, choice_columns, fmt, conll_label_index,
                   require_labels, True, None, data, conll_block_lines=None)
    examples = list(stream)
    result = LabeledFile(stream.name, stream.format, examples, list(stream.text_columns), stream.label_column,
                         list(stream.choice_columns))
    if not result.examples:
        raise PtmError(f"{stream.name}: no examples in the file")
    if require_labels and not result.has_labels:
        raise UnlabeledData(f"{stream.name}: the file has no labels")
    return result


def stream_labeled(path: str, task: str, *, text_columns: Sequence[str] | None = None,
                   require_labels: bool = True) -> LabeledStream:
    """The examples :func:`read_labeled` finds in ``path``, handed out as they are read.

    Format, columns and header are settled now; an input without any example
    fails once it has been read to its end.
    """
    if task not in TASKS:
        raise PtmError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    stream = _open(path, task, text_columns, None, None, "auto", -1, require_labels, True, None, None,
                   conll_block_lines=CONLL_BLOCK_LINES)
    stream._examples = _at_least_one(stream.name, stream._examples)
    return stream


def _at_least_one(name: str, examples: Iterator[LabeledExample]) -> Iterator[LabeledExample]:
    count = 0
    for example in examples:
        count += 1
        yield example
    if count == 0:
        raise PtmError(f"{name}: no examples in the file")


def read_examples(path: str, task: str, **options) -> list[LabeledExample]:
    """The examples alone of :func:`read_labeled`."""
    return read_labeled(path, task, **options).examples


def open_labeled(path: str, task: str, *, text_columns: Sequence[str] | None = None,
                 preferred_text_columns: Sequence[str] | None = None, fmt: str = "auto",
                 labels: bool = True) -> LabeledStream:
    """The examples of ``path`` for ``task``, read as they are asked for.

    The input is opened, its format settled and its header read now (so a bad
    file or column fails here); the examples follow, one line at a time.
    ``preferred_text_columns`` are used when the input has them all (a
    checkpoint's recorded columns), else the columns are found as usual.
    With ``labels=True`` every example must have its label, as in
    :func:`read_labeled`; ``labels=False`` reads unlabeled input: label
    columns and tags are ignored and plain lines (``fmt="text"``) are accepted.
    """
    formats = FORMATS if labels else INPUT_FORMATS
    if fmt not in formats:
        raise PtmError(f"unknown input format {fmt!r}; choose one of {', '.join(formats)}")
    return _open(path, task, text_columns, None, None, fmt, -1, labels, labels,
                 preferred_text_columns, None, conll_block_lines=CONLL_BLOCK_LINES)


class LabeledStream:
    """The examples of one input, in input order, and what the reader settled about it.

    ``text_columns`` / ``label_column`` / ``choice_columns`` name the columns
    used (for CoNLL: the word column "0" and, once read, the tag column).
    """

    def __init__(self, name: str, fmt: str, text_columns: list[str], label_column: str | None,
                 choice_columns: list[str]) -> None:
        self.name, self.format = name, fmt
        self.text_columns, self.label_column, self.choice_columns = text_columns, label_column, choice_columns
        self._examples: Iterator[LabeledExample] = iter(())

    def __iter__(self) -> Iterator[LabeledExample]:
        return self._examples

    def chunks(self, size: int) -> Iterator[list[LabeledExample]]:
        """The examples in lists of ``size`` (the last one shorter)."""
        chunk: list[LabeledExample] = []
        for example in self._examples:
            chunk.append(example)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _open(path: str, task: str, text_columns, label_column, choice_columns, fmt: str, conll_label_index: int,
          require_labels: bool, read_labels: bool, preferred_text_columns, data: bytes | None,
          conll_block_lines: int | None) -> LabeledStream:
    if task not in TASKS:
        raise PtmError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    lines = labeled_lines(path, data)
    try:
        return _settle(lines, task, text_columns, label_column, choice_columns, fmt, conll_label_index,
                       require_labels, read_labels, preferred_text_columns, conll_block_lines)
    except BaseException:
        lines.close()
        raise


def _settle(lines: TextLines, task: str, text_columns, label_column, choice_columns, fmt: str,
            conll_label_index: int, require_labels: bool, read_labels: bool, preferred_text_columns,
            conll_block_lines: int | None) -> LabeledStream:
    """The stream of ``lines`` once its format and columns are settled (the header is read here)."""
    name = lines.name
    head = lines.peek_nonblank(_SNIFF_LINES)
    if not head:
        raise PtmError(f"{name}: the file is empty")
    if fmt == "auto":
        fmt = _detect(name, head[0], task) if read_labels else _detect_unlabeled(
            name, head, task, [*(text_columns or ()), *(preferred_text_columns or ())])
    if fmt == "conll":
        if task != "token-classification":
            raise PtmError(f"{name}: CoNLL column files hold token labels; use task token-classification, "
                           f"not {task}")
        stream = LabeledStream(name, fmt, ["0"], None, [])
        stream._examples = _conll_examples(stream, lines, conll_label_index, require_labels, read_labels,
                                           conll_block_lines)
        return stream
    if fmt == "text":
        stream = LabeledStream(name, fmt, [], None, [])
        stream._examples = _plain_examples(name, task, iter(lines))
        return stream
    names, rows = _jsonl_rows(name, iter(lines)) if fmt == "jsonl" else _table_rows(name, lines, fmt)
    if text_columns is None and preferred_text_columns and all(_find(names, c) for c in preferred_text_columns):
        text_columns = preferred_text_columns
    try:
        builder = _ExampleBuilder(name, fmt, task, names, text_columns, label_column, choice_columns,
                                  require_labels, read_labels)
    except _NoTextColumn as err:
        if require_labels and _detect_unlabeled(name, head, task, text_columns or ()) == "text":
            raise UnlabeledData(str(err)) from None  # plain lines: a header was never there
        raise
    stream = LabeledStream(name, fmt, list(builder.text_columns), builder.label_column, list(builder.choice_columns))
    stream._examples = (builder.example(number, row) for number, row in rows)
    return stream


def _extension(name: str) -> str:
    """The format-naming extension of ``name``: data.tsv.gz is a .tsv file."""
    base, ext = os.path.splitext(name)
    if ext.lower() == ".gz":
        ext = os.path.splitext(base)[1]
    return ext.lower()


def detect_format(name: str, text: str, task: str) -> str:
    """The format by extension, else by the first non-blank line."""
    first = next((line for line in text[:65536].split("\n") if line.strip()), "")
    return _detect(name, first[:-1] if first.endswith("\r") else first, task)


def _detect(name: str, first: str, task: str) -> str:
    if task == "token-classification":
        return "jsonl" if _EXTENSIONS.get(_extension(name)) == "jsonl" or starts_json_object(first) else "conll"
    by_extension = _EXTENSIONS.get(_extension(name))
    if by_extension is not None:
        return by_extension
    if starts_json_object(first):
        return "jsonl"
    if "\t" in first:
        return "tsv"
    if "," in first:
        return "csv"
    return "tsv"


def _known_column(cell: str, named: Sequence[str]) -> bool:
    known = {*SINGLE_COLUMNS, *LABEL_COLUMNS, *CHOICE_LIST_COLUMNS, *WORD_FIELDS, *named,
             *(c for group in PAIR_COLUMNS for c in group), *(c for group in CONTEXT_COLUMNS for c in group)}
    cell = cell.strip().lower()
    return cell in {k.lower() for k in known} or bool(_NUMBERED_CHOICE.match(cell))


def _detect_unlabeled(name: str, head: list[str], task: str, named: Sequence[str]) -> str:
    """The format of unlabeled input: as :func:`_detect`, but a first line that is no header is plain text.

    Token classification: CoNLL columns when the first lines are single words
    (or end in a tag), else one whitespace-tokenized sentence per line.
    """
    first = head[0]
    by_extension = _EXTENSIONS.get(_extension(name))
    if by_extension == "jsonl" or starts_json_object(first):
        return "jsonl"
    if task == "token-classification":
        if by_extension is not None:
            return "conll"
        fields = [line.split() for line in head]
        if fields[0][0] == DOCSTART or all(len(f) == len(fields[0]) and (len(f) == 1 or _TAG.match(f[-1]))
                                           for f in fields):
            return "conll"
        return "text"
    if by_extension is not None:
        return by_extension
    if "\t" in first or any(_known_column(c, named) for c in first.split("\t")):
        return "tsv"
    if any(_known_column(c, named) for c in first.split(",")):
        return "csv"
    return "text"


# -- rows of tables and JSON lines ------------------------------------------------------------

Row = tuple[int, dict]


def _table_rows(name: str, lines: TextLines, fmt: str) -> tuple[list[str], Iterator[Row]]:
    """(the header's names, (line, {column: cell}) for each data row) of a TSV (no quoting, as GLUE writes) or CSV file."""
    if fmt == "csv":
        records = _csv_records(name, lines.numbered(keep_endings=True))  # a quoted cell may hold a newline
    else:
        records = ((number, line.split("\t")) for number, line in lines if line.strip())
    header_line, header = next(records, (1, []))
    names = [h.strip() for h in header]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PtmError(f"{where(name, header_line)}: the header names column {duplicates[0]!r} twice")
    separator = "tab-separated" if fmt == "tsv" else "comma-separated"

    def rows() -> Iterator[Row]:
        for number, fields in records:
            if len(fields) != len(names):
                raise PtmError(f"{where(name, number)}: the row has {len(fields)} {separator} fields, the header "
                               f"has {len(names)} ({', '.join(names)})")
            yield number, dict(zip(names, fields))

    return names, rows()


def _csv_records(name: str, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(line for _, line in lines)
    start = 1
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                yield start, record
            start = reader.line_num + 1
    except csv.Error as err:
        raise PtmError(f"{where(name, start)}: not valid CSV: {err}") from None


def _jsonl_rows(name: str, lines: Iterator[tuple[int, str]]) -> tuple[list[str], Iterator[Row]]:
    """(the first object's keys, (line, object) for each non-blank line)."""

    def rows() -> Iterator[Row]:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                value = json_object(line)
            except ValueError as err:
                raise PtmError(f"{where(name, number)}: {err}") from None
            yield number, value

    parsed = rows()
    first = next(parsed, None)
    if first is None:
        return [], iter(())
    return list(first[1]), _chain([first], parsed)


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


# -- plain lines and CoNLL columns ------------------------------------------------------------


def _plain_examples(name: str, task: str, lines: Iterator[tuple[int, str]]) -> Iterator[LabeledExample]:
    """One example per non-blank line: a text, ``a ||| b`` for a pair, ``context ||| choice ||| choice ...``
    for multiple choice, whitespace-separated words for token classification."""
    for number, line in lines:
        text = line.strip()
        if not text:
            continue
        if task == "token-classification":
            words = tuple(text.split())
            yield LabeledExample(texts=(" ".join(words),), label=None, words=words, line=number)
        elif task == "multiple-choice":
            parts = [p.strip() for p in text.split(PAIR_SEPARATOR)]
            if len(parts) < 3:
                raise PtmError(f"{where(name, number)}: multiple-choice reads 'context ||| choice ||| choice ...' "
                               f"on a plain line; this line has {len(parts) - 1} choice(s)")
            yield LabeledExample(texts=(parts[0],), label=None, choices=tuple(parts[1:]), line=number)
        elif task == "classification":
            yield LabeledExample(texts=(text,), label=None, line=number)
        else:
            head, separator, tail = text.rpartition(PAIR_SEPARATOR)
            if separator:
                yield LabeledExample(texts=(head.strip(), tail.strip()), label=None, line=number)
            elif task == "pair-classification":
                raise PtmError(f"{where(name, number)}: pair-classification reads two texts on a plain line, "
                               "'text_a ||| text_b'; this line has no ' ||| '")
            else:
                yield LabeledExample(texts=(text,), label=None, line=number)


def _conll_examples(stream: LabeledStream, lines: TextLines, label_index: int, require_labels: bool,
                    read_labels: bool, block_lines: int | None) -> Iterator[LabeledExample]:
    """The sentences of a CoNLL input, read by ``read_conll`` a block of whole sentences at a time.

    The first block goes to ``read_conll`` as the start of the file, so it
    checks the columns and names lines itself; later blocks are shifted to
    their place, and their lines are checked here against the first token line.
    """
    name = stream.name
    block: list[str] = []
    before = 0  # lines of the input ahead of the block
    columns = first_line = 0

    def parse(block: list[str], before: int) -> list[LabeledExample]:
        found = read_conll(name, block, label_index, False)
        if before == 0:
            if require_labels and found.examples and found.label_column is None:
                # The first example starts at the first token line, where read_conll would stop.
                raise UnlabeledData(f"{where(name, found.examples[0].line)}: the line has a word but no label column")
            stream.label_column = found.label_column if read_labels else None
        shifted = found.examples if before == 0 else [replace(e, line=e.line + before) for e in found.examples]
        return shifted if read_labels else [replace(e, word_labels=None) for e in shifted]

    if block_lines is None:
        yield from parse([line for _, line in lines], 0)
        return
    for number, line in lines:
        block.append(line)
        fields = line.split()
        if fields and fields[0] != DOCSTART:
            if not columns:
                columns, first_line = len(fields), number
            elif len(fields) != columns and before:
                raise PtmError(f"{where(name, number)}: the line has {len(fields)} columns, the first token line "
                               f"(line {first_line}) has {columns}")
        elif not fields and len(block) >= block_lines:
            yield from parse(block, before)
            before, block = number, []
    if block:
        yield from parse(block, before)


def _find(names: Sequence[str], wanted: str) -> str | None:
    """The column called ``wanted``, exactly or else ignoring case."""
    if wanted in names:
        return wanted
    lowered = wanted.lower()
    return next((n for n in names if n.lower() == lowered), None)


class _ExampleBuilder:
    """Turns rows of named fields into examples of one task, after settling the columns."""

    def __init__(self, name: str, fmt: str, task: str, names: list[str], text_columns, label_column,
                 choice_columns, require_labels: bool, read_labels: bool = True) -> None:
        self.name, self.fmt, self.task, self.names = name, fmt, task, names
        self.require_labels = require_labels
        self.kind = "field" if fmt == "jsonl" else "column"
        self.label_column = self._label_column(label_column) if read_labels else None
        self.choice_columns: list[str] = []
        if task == "token-classification":
            self.text_columns = self._explicit(text_columns) if text_columns else self._first(WORD_FIELDS, "words")
            if self.label_column is None and label_column is None and read_labels:
                self.label_column = next((c for c in (_find(names, t) for t in TAG_FIELDS) if c), None)
        elif task == "multiple-choice":
            self.text_columns = self._explicit(text_columns) if text_columns else self._context_columns()
            self.choice_columns = self._explicit(choice_columns) if choice_columns else self._choices()
        else:
            self.text_columns = self._explicit(text_columns) if text_columns else self._text_columns()
            self._check_text_count()
        if self.label_column is None and require_labels:
            tried = TAG_FIELDS if task == "token-classification" else LABEL_COLUMNS
            raise UnlabeledData(f"{where(name, 1)}: no label {self.kind} (looked for {', '.join(tried)}); "
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
        raise _NoTextColumn(f"{where(self.name, 1)}: cannot tell which {self.kind} holds the {what} (looked for "
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

    def example(self, number: int, row: dict) -> LabeledExample:
        """The example of the row at line ``number``."""
        if self.task == "token-classification":
            return self._tokens(number, row)
        if self.task == "multiple-choice":
            return self._multiple_choice(number, row)
        return self._sentences(number, row)

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
