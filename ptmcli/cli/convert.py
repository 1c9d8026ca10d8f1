"""`ptm convert`: not built yet; listed so the command map is complete."""

from __future__ import annotations

import typer

SHORT_HELP = "Convert checkpoints to and from Hugging Face and other formats (not available yet)."
HELP = SHORT_HELP


def convert(ctx: typer.Context) -> None:
    from ptmcli.cli._unavailable import unavailable

    unavailable("convert")
