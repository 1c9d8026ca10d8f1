"""`ptm pretrain`."""

from __future__ import annotations

import typer

SHORT_HELP = "Pretrain a model (BERT MLM+NSP, ...) on token shards."
HELP = SHORT_HELP
EPILOG = ""


def pretrain(ctx: typer.Context) -> None:
    from ptmcli.cli._unavailable import unavailable

    unavailable("pretrain")
