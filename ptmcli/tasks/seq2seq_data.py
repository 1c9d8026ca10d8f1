"""Source/target text pairs for sequence-to-sequence finetuning and evaluation.

Three layouts, each read line by line through ``textio.lines.TextLines`` (gzip,
``-`` for stdin, a byte-order mark dropped, invalid UTF-8 an error naming the
file and line):

- **TSV**: ``source<TAB>target`` on each line, no header needed (a first line
  that is exactly ``source<TAB>target`` is taken as one and skipped). A row
  without its second column, or with a third, is an error naming ``file:line``.
  A tab cannot be part of a text, so a tab inside a text needs the JSONL layout.
- **JSONL**: one object per line; the texts are under ``source`` and ``target``
  (or one of the other pairs of ``KEY_PAIRS``, the first pair the first object
  has; every object must then have both keys).
- **Parallel files**: line ``i`` of one file is the source of line ``i`` of the
  other (Multi30k's ``train.en`` / ``train.de``). Files of unequal length are an
  error naming the line where one of them ends.

Blank lines of a TSV or JSONL file are skipped; in parallel files every line is
a pair, since skipping one side's blank line would shift the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ptmcli.errors import PtmError, where
from ptmcli.tasks.lines import UTF8_ADVICE
from ptmcli.textio.json_lines import json_object
from ptmcli.textio.lines import TextLines

# JSONL keys of a pair, tried in this order (the first object decides for the file).
KEY_PAIRS = (("source", "target"), ("src", "tgt"), ("input", "output"), ("document", "summary"),
             ("article", "highlights"))
_JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class TextPair:
    source: str
    target: str | None
    """None when the input has no targets (``require_targets=False``)."""
    line: int
    """The line of the input it came from (1-based; the source file's line for parallel files)."""


def _format(name: str, lines: TextLines) -> str:
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(_JSONL_EXTENSIONS):
        return "jsonl"
    if base.endswith((".tsv", ".tab")):
        return "tsv"
    return "jsonl" if lines.looks_like_jsonl(parse=True) else "tsv"


def read_pairs(path: str, *, require_targets: bool = True) -> list[TextPair]:
    """The pairs of one TSV or JSONL file (format from its extension, else from its first line)."""
    lines = TextLines(path, advice=UTF8_ADVICE)
    try:
        fmt = _format(str(path), lines)
        pairs = list(_jsonl_pairs(lines, require_targets) if fmt == "jsonl" else _tsv_pairs(lines, require_targets))
    finally:
        lines.close()
    if not pairs:
        raise PtmError(f"{lines.name}: no examples in the file")
    return pairs


def _tsv_pairs(lines: TextLines, require_targets: bool) -> Iterator[TextPair]:
    for number, text in lines:
        if not text.strip():
            continue
        cells = text.split("\t")
        if number == 1 and [c.strip().lower() for c in cells] == ["source", "target"]:
            continue
        if len(cells) > 2:
            raise PtmError(f"{where(lines.name, number)}: {len(cells)} tab-separated columns; a seq2seq TSV row is "
                           "source<TAB>target (a text with a tab in it needs JSONL)")
        if len(cells) == 1:
            if require_targets:
                raise PtmError(f"{where(lines.name, number)}: no target column (a seq2seq TSV row is source<TAB>target)")
            yield TextPair(cells[0], None, number)
            continue
        yield TextPair(cells[0], cells[1], number)


def _jsonl_pairs(lines: TextLines, require_targets: bool) -> Iterator[TextPair]:
    keys: tuple[str, str] | None = None
    for number, text in lines:
        if not text.strip():
            continue
        try:
            record = json_object(text)
        except ValueError as err:
            raise PtmError(f"{where(lines.name, number)}: {err}") from None
        if keys is None:
            keys = next((pair for pair in KEY_PAIRS if pair[0] in record), None)
            if keys is None:
                wanted = " or ".join(f"{s!r}/{t!r}" for s, t in KEY_PAIRS[:2])
                raise PtmError(f"{where(lines.name, number)}: no source field (expected {wanted}, ...; see docs/finetune.md)")
        source_key, target_key = keys
        source = record.get(source_key)
        target = record.get(target_key)
        if not isinstance(source, str):
            raise PtmError(f"{where(lines.name, number)}: {source_key!r} is {'missing' if source is None else 'not a string'}")
        if target is None and not require_targets:
            yield TextPair(source, None, number)
            continue
        if not isinstance(target, str):
            raise PtmError(f"{where(lines.name, number)}: {target_key!r} is {'missing' if target is None else 'not a string'}")
        yield TextPair(source, target, number)


def read_parallel(source_path: str, target_path: str | None) -> list[TextPair]:
    """The pairs of two line-aligned files (``target_path`` None: sources alone)."""
    if target_path is not None and os.path.abspath(source_path) == os.path.abspath(target_path):
        raise PtmError(f"{source_path}: given as both the source and the target file")
    sources = TextLines(source_path, advice=UTF8_ADVICE)
    targets = TextLines(target_path, advice=UTF8_ADVICE) if target_path is not None else None
    pairs: list[TextPair] = []
    try:
        source_iter = iter(sources)
        target_iter = iter(targets) if targets is not None else None
        for number, source in source_iter:
            target = None
            if target_iter is not None:
                got = next(target_iter, None)
                if got is None:
                    raise PtmError(f"{where(sources.name, number)}: no partner line, {targets.name} ends at line "
                                   f"{number - 1} (parallel files need as many lines)")
                target = got[1]
            pairs.append(TextPair(source, target, number))
        if target_iter is not None:
            extra = next(target_iter, None)
            if extra is not None:
                raise PtmError(f"{where(targets.name, extra[0])}: no partner line, {sources.name} ends at line "
                               f"{extra[0] - 1} (parallel files need as many lines)")
    finally:
        sources.close()
        if targets is not None:
            targets.close()
    if not pairs:
        raise PtmError(f"{sources.name}: no examples in the file")
    return pairs


def read_set(data: str | None, source_file: str | None, target_file: str | None, data_flag: str, prefix: str = "",
             require_targets: bool = True) -> list[TextPair] | None:
    """One data set given as a TSV/JSONL file (``data``, the value of ``data_flag``) or as parallel files
    (``--{prefix}source-file`` / ``--{prefix}target-file``); None when neither is given."""
    sources, targets = f"--{prefix}source-file", f"--{prefix}target-file"
    if data is not None and (source_file or target_file):
        raise PtmError(f"give {data_flag} or {sources}/{targets}, not both")
    if data is not None:
        return read_pairs(data, require_targets=require_targets)
    if source_file is None and target_file is None:
        return None
    if source_file is None:
        raise PtmError(f"{targets} needs its {sources}")
    if target_file is None and require_targets:
        raise PtmError(f"{sources} needs its {targets}")
    return read_parallel(source_file, target_file)
