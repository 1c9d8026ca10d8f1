"""`ptm finetune`: not built yet; listed so the command map is complete."""

from __future__ import annotations

import typer

SHORT_HELP = "Finetune a pretrained checkpoint on a labeled task (not available yet)."
HELP = SHORT_HELP


def finetune(ctx: typer.Context) -> None:
    from ptmcli.cli._unavailable import unavailable

    unavailable("finetune")
