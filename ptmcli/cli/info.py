"""`ptm info`: flags for ptmcli.commands.info (reads files only; no model is built)."""

from __future__ import annotations

import typer

SHORT_HELP = "Describe a checkpoint or run: family, objective, parameters, tokenizer, steps, last metrics."
HELP = """Describe a checkpoint, or a run directory's newest step checkpoint: its family and objective, parameter count (from the safetensors header, without loading the weights), tokenizer, steps, tokens seen, training time, last logged metrics and last evaluation, and where it was finetuned or converted from.

A table for people by default; --json prints one JSON object for scripts.

Examples:

ptm info runs/bert-mini

ptm info runs/sst2/best --json | jq .parameters
"""


def info(
    path: str = typer.Argument(..., metavar="CHECKPOINT_OR_RUN", help="A checkpoint directory, or a run directory (its newest step checkpoint)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table.", show_default=False, metavar=""),
) -> None:
    from ptmcli.commands.info import run

    run(path, as_json)
