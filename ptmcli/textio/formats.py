"""Parsers that turn decoded lines of one input into documents, one per format.

Each parser takes ``(line number, text)`` pairs from ``lines.TextLines``
and yields ``Document``s; it never sees raw bytes, so encoding problems are
handled in one place. Documents without any text are not yielded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator

from ptmcli.errors import PtmError, where
from ptmcli.textio.json_lines import json_object
from ptmcli.textio.records import Document, ReadStats

Lines = Iterable[tuple[int, str]]


def _document(source: str, line: int, paragraphs: list[str], title: str | None = None) -> Document:
    return Document(source=source, line=line, paragraphs=paragraphs, title=title)


def looks_like_json_object(line: bytes, complete: bool) -> bool:
    """True if ``line`` is a JSON object; a line cut off by the head limit only needs to start like one."""
    if not line.startswith(b"{"):
        return False
    if not complete:
        return line[1:].lstrip()[:1] in (b'"', b"}")
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


DOCUMENT_BOUNDARIES = ("blank", "line", "none")


def parse_text(lines: Lines, source: str, boundary: str = "blank",
               unbroken: list[tuple[str, int]] | None = None) -> Iterator[Document]:
    """One paragraph per line. ``boundary``: a blank (or whitespace-only) line ends the document,
    every line is a document, or the whole input is one. A blank-separated input that has no blank
    line at all is added to ``unbroken`` (its name and lines): usually a one-sentence-per-line corpus."""
    paragraphs: list[str] = []
    start = 0
    documents = 0
    for number, text in lines:
        if text.strip():
            if not paragraphs:
                start = number
            paragraphs.append(text)
            if boundary == "line":
                yield _document(source, start, paragraphs)
                paragraphs = []
        elif paragraphs and boundary == "blank":
            yield _document(source, start, paragraphs)
            documents += 1
            paragraphs = []
    if paragraphs:
        if boundary == "blank" and documents == 0 and len(paragraphs) > 1 and unbroken is not None:
            unbroken.append((source, len(paragraphs)))
        yield _document(source, start, paragraphs)


def parse_wikiextractor(lines: Lines, source: str) -> Iterator[Document]:
    """``<doc ...>`` blocks; the first line inside is the title, blank lines inside are ignored."""
    open_at: int | None = None
    title: str | None = None
    paragraphs: list[str] = []
    for number, text in lines:
        stripped = text.strip()
        if stripped.startswith("<doc ") and stripped.endswith(">"):
            if open_at is not None and paragraphs:  # an unclosed <doc>: the new tag ends it
                yield _document(source, open_at, paragraphs, title)
            open_at, title, paragraphs = number, None, []
        elif stripped == "</doc>":
            if open_at is None:
                raise PtmError(f"{where(source, number)}: </doc> without an opening <doc ...>")
            if paragraphs:
                yield _document(source, open_at, paragraphs, title)
            open_at, title, paragraphs = None, None, []
        elif not stripped:
            continue
        elif open_at is None:
            raise PtmError(f"{where(source, number)}: text outside <doc ...>...</doc> in WikiExtractor "
                           "input; read this file with --format text")
        elif title is None:
            title = stripped
        else:
            paragraphs.append(text)
    if open_at is not None and paragraphs:
        yield _document(source, open_at, paragraphs, title)


def parse_jsonl(lines: Lines, source: str, text_field: str, errors: str, stats: ReadStats) -> Iterator[Document]:
    """One JSON object per line; its ``text_field`` (a key, or a dotted path) is the document."""
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json_object(text)
        except ValueError as err:
            if errors == "skip":
                stats.skipped_lines += 1
                continue
            raise PtmError(f"{where(source, number)}: {err}") from None
        value = _field(record, text_field)
        if value is _MISSING:
            fields = ", ".join(list(record)[:10]) or "none"
            raise PtmError(f"{where(source, number)}: no field {text_field!r} (fields: {fields}); "
                           "choose one with --text-field")
        paragraphs = _paragraphs(value, source, number, text_field)
        if paragraphs:
            title = record.get("title")
            yield _document(source, number, paragraphs, title if isinstance(title, str) else None)


_MISSING = object()


def _field(record: dict, path: str):
    """``record[path]``, or for a dotted path ``record[a][b]...``; ``_MISSING`` if absent."""
    if path in record:
        return record[path]
    value = record
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def _paragraphs(value, source: str, number: int, text_field: str) -> list[str]:
    if isinstance(value, str):
        pieces = [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        pieces = value
    else:
        kind = "null" if value is None else type(value).__name__
        raise PtmError(f"{where(source, number)}: field {text_field!r} holds {kind}, not text")
    return [line.rstrip("\r") for piece in pieces for line in piece.split("\n") if line.strip()]


def parse_table(lines: Lines, source: str, delimiter: str, column: str | int | None, text_field: str,
                errors: str, stats: ReadStats) -> Iterator[Document]:
    """A header row, then one document per row from one column.

    TSV is split on tabs with no quoting (the GLUE layout: cells may hold '"');
    CSV follows the csv module's quoting, so a quoted cell may span lines.
    """
    current = [0]

    def numbered_text(ending: str) -> Iterator[str]:
        for number, text in lines:
            current[0] = number
            yield text + ending

    if delimiter == "\t":
        rows: Iterator[list[str]] = (text.split("\t") for text in numbered_text(""))
    else:
        # csv needs the line endings back to keep newlines inside quoted cells.
        rows = csv.reader(numbered_text("\n"), delimiter=delimiter)
    header: list[str] | None = None
    index = 0
    row_end = 0
    for row in rows:
        # A quoted CSV cell may span lines: the row starts right after the previous one ended.
        row_start, row_end = row_end + 1, current[0]
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            index = _column_index(header, column, text_field, source)
            continue
        if index >= len(row):
            if errors == "skip":
                stats.skipped_lines += 1
                continue
            raise PtmError(f"{where(source, row_start)}: row has {len(row)} fields, "
                           f"the header has {len(header)}")
        paragraphs = [line.rstrip("\r") for line in row[index].split("\n") if line.strip()]
        if paragraphs:
            yield _document(source, row_start, paragraphs)


def _column_index(header: list[str], column: str | int | None, text_field: str, source: str) -> int:
    names = ", ".join(header)
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit()):
        index = int(column)
        if index >= len(header):
            raise PtmError(f"{source}: --tsv-column {index} is out of range (columns, from 0: {names})")
        return index
    if column is not None:
        if column not in header:
            raise PtmError(f"{source}: no column {column!r} in the header (columns: {names})")
        return header.index(column)
    if text_field in header:
        return header.index(text_field)
    if len(header) == 1:
        return 0
    raise PtmError(f"{source}: choose the text column with --tsv-column (columns: {names})")
