"""`ptm tokenize`: train tokenizers, encode text to shards, show tokens."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train a tokenizer, encode text into Arrow shards, or show how text tokenizes.", no_args_is_help=True)
