"""`ptm tokenize train`: read text, train a tokenizer, write its directory."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ptmcli.errors import PtmError


@dataclass(frozen=True)
class TrainRequest:
    """Everything `ptm tokenize train` was asked to do (see its --help for each flag)."""

    inputs: tuple[str, ...]
    output: str
    model: str = "wordpiece"
    vocab_size: int = 30000
    min_frequency: int = 2
    limit_alphabet: int = 1000
    overwrite: bool = False
    lowercase: bool | None = None
    strip_accents: bool | None = None
    split_cjk: bool | None = None
    special_tokens: str | None = None
    vocab: str | None = None
    input_format: str = "auto"
    text_field: str = "text"
    tsv_column: str | None = None
    errors: str = "strict"
    max_length: int = 512


def run(request: TrainRequest):
    """Train (or, with --vocab, build) the tokenizer and save it; returns the PtmTokenizer."""
    from ptmcli.textio.atomic import check_output_dir
    from ptmcli.textio.inputs import ReadStats, expand_inputs, iter_texts, total_input_bytes
    from ptmcli.tokenization.train import resolve_settings

    # Everything that can be refused is refused before any reading or training.
    check_output_dir(request.output, request.overwrite)
    resolve_settings(request.model, request.lowercase, request.strip_accents, request.split_cjk,
                     request.special_tokens, request.max_length)
    start = time.perf_counter()
    if request.vocab is not None:
        if request.inputs:
            raise PtmError("--vocab builds the tokenizer from the vocabulary alone; give no INPUT files with it")
        tokenizer = _build((), request)
        tokenizer.save(request.output, overwrite=request.overwrite)
        _say(f"built a {tokenizer.vocab_size:,}-token wordpiece tokenizer from {request.vocab} -> {request.output}")
        return tokenizer
    if not request.inputs:
        raise PtmError("give INPUT files to train on (or - for stdin), or --vocab vocab.txt")
    paths = expand_inputs(request.inputs)
    stats = ReadStats()
    texts = iter_texts(paths, request.input_format, request.text_field, request.tsv_column, request.errors, stats)
    with _Progress(stats, total_input_bytes(paths), request) as progress:
        tokenizer = _build(progress.follow(texts), request)
    tokenizer.save(request.output, overwrite=request.overwrite)
    _summarise(tokenizer, request, stats, time.perf_counter() - start)
    return tokenizer


def _build(texts: Iterable[str], request: TrainRequest):
    from ptmcli.tokenization.train import train_tokenizer

    return train_tokenizer(
        texts, request.model, request.vocab_size, min_frequency=request.min_frequency, limit_alphabet=request.limit_alphabet,
        lowercase=request.lowercase, strip_accents=request.strip_accents, split_cjk=request.split_cjk,
        special=request.special_tokens, vocab_file=request.vocab, max_length=request.max_length,
    )


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"ptm: {message}", markup=False)


def _summarise(tokenizer, request: TrainRequest, stats, seconds: float) -> None:
    size = tokenizer.vocab_size
    short = f" (asked for {request.vocab_size:,}; the text supports no more)" if size < request.vocab_size else ""
    _say(f"trained a {size:,}-token {tokenizer.kind} tokenizer{short} on {stats.documents:,} documents "
         f"({stats.lines:,} lines, {_megabytes(stats.bytes_read)}, {stats.files} file"
         f"{'s' if stats.files != 1 else ''}) in {seconds:.1f} s -> {request.output}")
    if stats.skipped_lines:
        _say(f"note: {stats.skipped_lines:,} lines could not be read and were skipped (--errors skip)")
    if stats.replaced_lines:
        _say(f"note: {stats.replaced_lines:,} lines had invalid UTF-8, replaced by U+FFFD (--errors replace)")


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"


class _Progress:
    """A progress bar on stderr (terminals only): bytes read, then the learning phase."""

    def __init__(self, stats, total: int | None, request: TrainRequest) -> None:
        self.stats = stats
        self.total = total
        self.request = request
        self.enabled = sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), TimeElapsedColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("reading", total=self.total)
        return self

    def follow(self, texts: Iterable[str]) -> Iterator[str]:
        """Pass ``texts`` through, updating the bar as they are read."""
        for count, text in enumerate(texts):
            yield text
            if self.bar is not None and count % 2048 == 0:
                self.bar.update(self.task, completed=self.stats.bytes_read)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.stats.bytes_read,
                            description=f"learning a {self.request.vocab_size:,}-token {self.request.model} vocabulary")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
