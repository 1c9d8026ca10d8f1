"""Source/target pair corpora: read from text, encoded into the flat buffers pair shards are written from.

Pairs come as ``source<TAB>target`` lines or JSON lines with two fields.

Each input is read through ``textio.lines.TextLines`` (gzip, stdin, a
byte-order mark and ``--errors`` handled there). Its format is ``tsv`` or
``jsonl``; ``auto`` takes JSON lines when the first non-blank line is a JSON
object, else TSV. Blank lines are skipped.

- TSV: each line is ``source<TAB>target``, split on its one tab with no
  quoting (a line with none or more than one is an error naming it). A first
  line reading ``source<TAB>target`` is a header and skipped.
- JSON lines: one object per line with a string in each of the two fields
  (``source`` and ``target`` unless named otherwise).

A malformed line is one PtmError naming its file and line; with
``errors="skip"`` it is counted in ``stats.skipped_lines`` instead.

``encode_pairs`` tokenizes a batch of pairs (each side in one batched
tokenizer call, no special tokens) into a ``PairChunk``, dropping pairs with
a side that encodes to nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ptmcli.data.shard_writer import PairChunk
from ptmcli.errors import PtmError, where
from ptmcli.textio.json_lines import json_object
from ptmcli.textio.lines import TextLines
from ptmcli.textio.records import ReadStats

PAIR_FORMATS = ("auto", "tsv", "jsonl")
ERRORS_ADVICE = "use --errors replace or --errors skip"


@dataclass
class TextPair:
    source: str
    target: str
    name: str
    """The input it came from (``<stdin>`` for ``-``)."""
    line: int


def iter_pairs(paths: Sequence[str], fmt: str = "auto", fields: tuple[str, str] = ("source", "target"),
               errors: str = "strict", stats: ReadStats | None = None) -> Iterator[TextPair]:
    """The pairs of every input in turn; ``fields`` name the JSON keys of source and target."""
    if fmt not in PAIR_FORMATS:
        raise PtmError(f"pairs are read as {', '.join(PAIR_FORMATS)}, not {fmt!r}")
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        lines = TextLines(path, errors=errors, advice=ERRORS_ADVICE, stats=stats)
        try:
            stats.files += 1
            jsonl = lines.looks_like_jsonl(parse=True) if fmt == "auto" else fmt == "jsonl"
            parse = _jsonl_pair if jsonl else _tsv_pair
            first = True
            for number, text in lines:
                if not text.strip():
                    continue
                header, first = first and not jsonl and _is_header(text), False
                if header:
                    continue
                try:
                    pair = parse(text, fields)
                except ValueError as err:
                    if errors == "skip":
                        stats.skipped_lines += 1
                        continue
                    raise PtmError(f"{where(lines.name, number)}: {err}") from None
                yield TextPair(pair[0], pair[1], lines.name, number)
        finally:
            lines.close()


def _is_header(text: str) -> bool:
    return [cell.strip().lower() for cell in text.split("\t")] == ["source", "target"]


def _tsv_pair(text: str, fields: tuple[str, str]) -> tuple[str, str]:
    cells = text.split("\t")
    if len(cells) != 2:
        raise ValueError(f"expected source<TAB>target, found {len(cells)} tab-separated field(s)")
    return cells[0], cells[1]


def _jsonl_pair(text: str, fields: tuple[str, str]) -> tuple[str, str]:
    record = json_object(text)
    values = []
    for field in fields:
        if field not in record:
            raise ValueError(f"no field {field!r} (fields: {', '.join(list(record)[:10]) or 'none'})")
        value = record[field]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise ValueError(f"field {field!r} holds {kind}, not text")
        values.append(value)
    return values[0], values[1]


def encode_pairs(tokenizer, sources: Sequence[str], targets: Sequence[str], target_tokenizer=None) -> PairChunk:
    """Token ids of each side, flattened; pairs with a side of no tokens are dropped and counted.

    ``target_tokenizer`` encodes the targets when they have a vocabulary of their own (another language).
    """
    source_ids = tokenizer.encode_batch(list(sources))
    target_ids = (target_tokenizer or tokenizer).encode_batch(list(targets))
    kept = [(s, t) for s, t in zip(source_ids, target_ids) if s and t]

    def flat(side: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter(map(len, side), dtype=np.int64, count=len(side))
        return np.fromiter(chain.from_iterable(side), dtype=np.int32, count=int(lengths.sum())), lengths

    kept_sources, source_lengths = flat([s for s, _ in kept])
    kept_targets, target_lengths = flat([t for _, t in kept])
    return PairChunk(kept_sources, source_lengths, kept_targets, target_lengths,
                     empty_pairs=len(source_ids) - len(kept))
