"""`ptm tokenize show`: print the tokens and ids of texts, for people or pipelines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from ptmcli.errors import PtmError, where

_PIPE_BATCH = 512


def run(tokenizer_dir: str, texts: list[str] | None, ids: bool = False, tokens: bool = False,
        as_json: bool = False) -> None:
    """Tokenize ``texts`` (or stdin lines) and write one result per input line to stdout."""
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    if ids + tokens + as_json > 1:
        raise PtmError("choose one of --ids, --tokens and --json")
    tokenizer = PtmTokenizer.load(_tokenizer_location(tokenizer_dir))
    mode = "ids" if ids else "tokens" if tokens else "json" if as_json else None
    if mode is None:
        mode = "table" if sys.stdout.isatty() else "tsv"
    batches = [texts] if texts is not None else _stdin_batches()
    for batch in batches:
        encoded = tokenizer.encode_batch(batch)
        rows = [(text, tokenizer.convert_ids_to_tokens(row), row) for text, row in zip(batch, encoded, strict=True)]
        if mode == "table":
            _print_table(rows)
        else:
            sys.stdout.write("".join(_line(mode, *row) + "\n" for row in rows))
            sys.stdout.flush()


def _tokenizer_location(path: str) -> str:
    """A tokenizer directory, checkpoint, or run directory (the tokenizer of its checkpoints)."""
    from pathlib import Path

    directory = Path(path)
    if (directory / "checkpoints").is_dir() and not (directory / "tokenizer_config.json").is_file():
        from ptmcli.checkpoint import resolve_checkpoint

        return str(resolve_checkpoint(directory))
    return path


def _line(mode: str, text: str, pieces: list[str], row: list[int]) -> str:
    if mode == "ids":
        return " ".join(map(str, row))
    if mode == "tokens":
        return " ".join(pieces)
    if mode == "json":
        return json.dumps({"text": text, "tokens": pieces, "ids": row}, ensure_ascii=False)
    return " ".join(pieces) + "\t" + " ".join(map(str, row))


def _print_table(rows: list[tuple[str, list[str], list[int]]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("n", justify="right", style="dim")
    table.add_column("tokens")
    table.add_column("ids", style="dim")
    for _, pieces, row in rows:
        shown = Text()
        for i, piece in enumerate(pieces):
            # Alternating colours make token boundaries visible without separators.
            shown.append(piece, style="cyan" if i % 2 == 0 else "magenta")
            shown.append(" ")
        table.add_row(str(len(row)), shown, " ".join(map(str, row)))
    Console().print(table)


def _stdin_batches() -> Iterator[list[str]]:
    """Stdin lines in batches; one line at a time when a person is typing them."""
    interactive = sys.stdin.isatty()
    batch: list[str] = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PtmError(f"{where('<stdin>', number)}: invalid UTF-8 (byte 0x{raw[err.start]:02x})") from None
        batch.append(text.rstrip("\r\n"))
        if interactive or len(batch) >= _PIPE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
