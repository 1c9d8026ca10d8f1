"""`ptm eval`: not built yet; listed so the command map is complete."""

from __future__ import annotations

import typer

SHORT_HELP = "Evaluate a checkpoint: perplexity, task metrics, samples (not available yet)."
HELP = SHORT_HELP


def eval_command(ctx: typer.Context) -> None:
    from ptmcli.cli._unavailable import unavailable

    unavailable("eval")
