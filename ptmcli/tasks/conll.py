"""CoNLL column files: one word per line, its tag in a column; a blank line ends a sentence."""

from __future__ import annotations

from ptmcli.errors import PtmError, where
from ptmcli.tasks.examples import LabeledExample, LabeledFile

DOCSTART = "-DOCSTART-"


def read_conll(name: str, lines: list[str], label_index: int, require_labels: bool) -> LabeledFile:
    """Whitespace-separated columns, the word first; a blank line ends a sentence; -DOCSTART- lines are skipped."""
    examples: list[LabeledExample] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    columns = 0
    first_line = 0
    tag_column: int | None = None

    def flush() -> None:
        if words:
            examples.append(LabeledExample(texts=(" ".join(words),), label=None, words=tuple(words),
                                           word_labels=tuple(tags) if tag_column is not None else None,
                                           line=start))
        words.clear()
        tags.clear()

    _refuse_tables(name, lines)
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            continue
        if not columns:
            columns, first_line = len(fields), number
            if columns > 1:
                tag_column = label_index if label_index >= 0 else columns + label_index
                if not 1 <= tag_column < columns:
                    raise PtmError(f"{where(name, number)}: label column {label_index} is out of range for "
                                   f"{columns} columns (the word is column 0)")
            elif require_labels:
                raise PtmError(f"{where(name, number)}: the line has a word but no label column")
        elif len(fields) != columns:
            raise PtmError(f"{where(name, number)}: the line has {len(fields)} columns, the first token line "
                           f"(line {first_line}) has {columns}")
        if not words:
            start = number
        words.append(fields[0])
        if tag_column is not None:
            tags.append(fields[tag_column])
    flush()
    return LabeledFile(name, "conll", examples, ["0"], None if tag_column is None else str(tag_column))


def _refuse_tables(name: str, lines: list[str]) -> None:
    """A TSV/CSV of whole sentences given as CoNLL would fail later on a column count that explains nothing."""
    seen = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split("\t")
        if len(cells) > 1 and any(" " in cell.strip() for cell in cells):
            raise PtmError(f"{where(name, number)}: this looks like a TSV table (tab-separated cells holding several "
                           "words), not CoNLL columns; --task token-classification reads one word per line with its "
                           "tag in a column and a blank line between sentences")
        seen += 1
        if seen == 5:
            return
