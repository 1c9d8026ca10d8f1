"""Input of ``ptm extract-features``: one record per line, in three formats.

- ``text``: one text per line; ``text_a ||| text_b`` (space, three bars, space)
  makes a pair, as google-research/bert's ``extract_features.py`` reads it. A
  blank line is an empty text, so record ``i`` is always line ``i + 1``.
- ``tokens``: one whitespace-tokenized sentence per line (allennlp's ``elmo``
  command input); the words are the whitespace-separated tokens, no pairs.
- ``jsonl``: one JSON object per line; ``text_field`` holds a string, or a list
  of words for pre-tokenized input; ``text_b_field``, when present, the second
  text of a pair. Blank lines are skipped.

Input is read through ``textio.lines.TextLines`` (line by line, gzip, ``-``
for stdin, a byte-order mark dropped), so memory stays flat on any input size
and a bad line is named by file:line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ptmcli.errors import PtmError, where
from ptmcli.textio.json_lines import json_object
from ptmcli.textio.lines import STDIN, TextLines, display_name

__all__ = ["PAIR_SEPARATOR", "STDIN", "TextRecord", "display_name", "iter_records"]

PAIR_SEPARATOR = " ||| "


@dataclass
class TextRecord:
    """One input text (or pair), numbered in input order."""

    index: int
    """0-based position among the records: the key every output uses."""
    line: int
    """1-based line number in the input, for messages."""
    text_a: str
    text_b: str | None = None
    source: str = ""
    """The text as given (the stripped line, or the JSON text); what hdf5's sentence_to_index maps from."""
    words: tuple[str, ...] | None = None
    """The words of a token-classification example (``--task``); None otherwise."""


def iter_records(path: str, fmt: str = "auto", text_field: str = "text",
                 text_b_field: str = "text_b") -> Iterator[TextRecord]:
    """Records of ``path`` in input order (see the module docstring for the formats)."""
    lines = TextLines(path)
    if fmt == "auto":
        fmt = "jsonl" if lines.looks_like_jsonl(parse=True) else "text"
    if fmt == "jsonl":
        yield from _jsonl_records(lines, lines.name, text_field, text_b_field)
        return
    for index, (number, line) in enumerate(lines):
        text = line.strip()
        if fmt == "tokens":
            yield TextRecord(index, number, " ".join(text.split()), None, text)
            continue
        head, separator, tail = text.rpartition(PAIR_SEPARATOR)
        if separator:
            yield TextRecord(index, number, head, tail, text)
        else:
            yield TextRecord(index, number, text, None, text)


def _jsonl_records(lines: Iterator[tuple[int, str]], name: str, text_field: str,
                   text_b_field: str) -> Iterator[TextRecord]:
    index = 0
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json_object(line)
        except ValueError as err:
            raise PtmError(f"{where(name, number)}: {err}") from None
        if text_field not in record:
            raise PtmError(f"{where(name, number)}: no {text_field!r} field (set --text-field)")
        text_a = _text_value(record[text_field], name, number, text_field)
        text_b = None
        if record.get(text_b_field) is not None:
            text_b = _text_value(record[text_b_field], name, number, text_b_field)
        source = text_a if text_b is None else f"{text_a}{PAIR_SEPARATOR}{text_b}"
        yield TextRecord(index, number, text_a, text_b, source)
        index += 1


def _text_value(value, name: str, number: int, field: str) -> str:
    """A string as it is; a list of words joined by single spaces (each word must be one word)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        for word in value:
            if not word or word != word.strip() or len(word.split()) != 1:
                raise PtmError(f"{where(name, number)}: field {field!r} holds {word!r}, which is not one "
                               "whitespace-free word (pre-tokenized words cannot be empty or contain spaces)")
        return " ".join(value)
    raise PtmError(f"{where(name, number)}: field {field!r} must be a string or a list of strings")
