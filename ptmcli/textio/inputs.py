"""Reading text corpora: files, globs, directories, stdin, gzip; four formats.

Every command that reads raw text goes through ``iter_documents`` (documents
made of paragraphs) or ``iter_texts`` (the paragraphs alone). Each input is
read through ``textio.lines.TextLines``: line by line as bytes, decoded one
line at a time (gzip, stdin, a byte-order mark and ``errors`` handled there),
so memory stays flat on any corpus size and a bad byte is reported at its
exact line.

Formats (``fmt``; "auto" picks one per file from its first few KB):
- ``text``: one paragraph or sentence per line, a blank line ends a document
  (the layout BERT's pretraining data uses);
- ``jsonl``: one JSON object per line, its ``text_field`` is one document
  whose lines are its paragraphs;
- ``wikiextractor``: ``<doc ...>`` ... ``</doc>`` blocks, the first line inside
  is the title;
- ``tsv`` / ``csv``: a header row, then one document per row taken from one column.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence

from ptmcli.errors import PtmError
from ptmcli.textio import formats
from ptmcli.textio.lines import ERROR_MODES, HEAD_BYTES, STDIN, STDIN_NAME, TextLines
from ptmcli.textio.records import Document, ReadStats

FORMATS = ("auto", "text", "jsonl", "wikiextractor", "tsv", "csv")

__all__ = ["Document", "ReadStats", "detect_format", "expand_inputs", "iter_documents", "iter_texts",
           "total_input_bytes"]

_GLOB_CHARS = frozenset("*?[")
# What a strict UTF-8 error suggests instead.
ERRORS_ADVICE = "use --errors replace or --errors skip"


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, glob patterns, directories (recursive, sorted, hidden files skipped) and "-" (stdin).

    Raises PtmError for a missing or unreadable path, a glob that matches nothing,
    or when nothing at all results.
    """
    paths: list[str] = []
    for item in inputs:
        if item == STDIN:
            paths.append(STDIN)
        elif os.path.isdir(item):
            found = _walk_dir(item)
            if not found:
                raise PtmError(f"input directory {item} holds no (non-hidden) files")
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(_readable(item))
        elif _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise PtmError(f"input pattern {item!r} matches no files")
            for match in matches:
                paths.extend(_walk_dir(match) if os.path.isdir(match) else [_readable(match)])
        else:
            raise PtmError(f"input file {item} does not exist")
    if not paths:
        raise PtmError("no input files given")
    return paths


def _walk_dir(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return [_readable(p) for p in found]


def _readable(path: str) -> str:
    # Pipes are welcome too: `ptm tokenize train <(zcat a.gz)` passes /dev/fd/63.
    if not os.access(path, os.R_OK):
        raise PtmError(f"input file {path} is not readable (permission denied)")
    return path


def total_input_bytes(paths: Sequence[str]) -> int | None:
    """Total size on disk of the inputs, for an ETA; None when stdin or a pipe is among them."""
    if STDIN in paths or not all(os.path.isfile(p) for p in paths):
        return None
    return sum(os.path.getsize(p) for p in paths)


def detect_format(path: str, head: bytes) -> str:
    """Guess "text" | "jsonl" | "wikiextractor" | "tsv" from a file name and its first (decompressed) bytes."""
    body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    if body.lstrip().startswith(b"<doc "):
        return "wikiextractor"
    if _plain_suffix(path) in (".tsv", ".csv"):
        return "tsv"
    start = 0
    while start < len(body):
        end = body.find(b"\n", start)
        line = body[start:] if end < 0 else body[start:end]
        if line.strip():
            # A first line longer than the head is cut off; judge it by its start.
            complete = end >= 0 or len(head) < HEAD_BYTES
            return "jsonl" if formats.looks_like_json_object(line.strip(), complete) else "text"
        if end < 0:
            break
        start = end + 1
    return "text"


def _plain_suffix(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return os.path.splitext(name)[1].lower()


def iter_documents(
    inputs: Sequence[str],
    fmt: str = "auto",
    text_field: str = "text",
    tsv_column: str | int | None = None,
    errors: str = "strict",
    stats: ReadStats | None = None,
    boundary: str = "blank",
) -> Iterator[Document]:
    """Documents from every input in order (see the module docstring for formats).

    ``inputs`` are expanded with ``expand_inputs``. ``errors`` decides what an
    invalid UTF-8 line (or an unparsable JSON line / short TSV row) does:
    "strict" raises PtmError naming file:line, "replace" substitutes U+FFFD,
    "skip" drops the line; both are counted in ``stats``. ``boundary`` says what
    ends a document of plain text (``formats.parse_text``).
    Raises PtmError "no text found in ..." when no document results at all.
    """
    if fmt not in FORMATS:
        raise PtmError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if errors not in ERROR_MODES:
        raise PtmError(f"unknown --errors mode {errors!r}; choose one of {', '.join(ERROR_MODES)}")
    if boundary not in formats.DOCUMENT_BOUNDARIES:
        raise PtmError(f"--document-boundary {boundary!r}: choose one of {', '.join(formats.DOCUMENT_BOUNDARIES)}")
    stats = stats if stats is not None else ReadStats()
    paths = expand_inputs(inputs)
    documents_before = stats.documents
    for path in paths:
        for document in _iter_file(path, fmt, text_field, tsv_column, errors, stats, boundary):
            stats.documents += 1
            yield document
    if stats.documents == documents_before:
        shown = ", ".join(STDIN_NAME if p == STDIN else p for p in paths[:3])
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        raise PtmError(f"no text found in {shown}{more}")


def iter_texts(
    inputs: Sequence[str],
    fmt: str = "auto",
    text_field: str = "text",
    tsv_column: str | int | None = None,
    errors: str = "strict",
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """The paragraphs of ``iter_documents`` one by one (what tokenizer training reads)."""
    for document in iter_documents(inputs, fmt, text_field, tsv_column, errors, stats):
        yield from document.paragraphs


def _iter_file(path: str, fmt: str, text_field: str, tsv_column: str | int | None,
               errors: str, stats: ReadStats, boundary: str = "blank") -> Iterator[Document]:
    lines = TextLines(path, errors=errors, advice=ERRORS_ADVICE, stats=stats)
    name = lines.name
    try:
        head = lines.head(HEAD_BYTES)
        if b"\x00" in head:
            raise PtmError(f"{name} looks binary (NUL bytes in its first {len(head)} bytes); "
                           "ptm reads UTF-8 text, optionally gzip-compressed")
        file_fmt = detect_format(path, head) if fmt == "auto" else fmt
        stats.files += 1
        if file_fmt == "text":
            yield from formats.parse_text(lines, name, boundary, stats.unbroken_files)
        elif file_fmt == "jsonl":
            yield from formats.parse_jsonl(lines, name, text_field, errors, stats)
        elif file_fmt == "wikiextractor":
            yield from formats.parse_wikiextractor(lines, name)
        else:
            delimiter = "," if file_fmt == "csv" or _plain_suffix(path) == ".csv" else "\t"
            yield from formats.parse_table(lines, name, delimiter, tsv_column, text_field, errors, stats)
    finally:
        lines.close()
