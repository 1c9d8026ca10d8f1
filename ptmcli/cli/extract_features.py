"""`ptm extract-features`: not built yet; listed so the command map is complete."""

from __future__ import annotations

import typer

SHORT_HELP = "Extract contextual features (ELMo/BERT style) from a checkpoint (not available yet)."
HELP = SHORT_HELP


def extract_features(ctx: typer.Context) -> None:
    from ptmcli.cli._unavailable import unavailable

    unavailable("extract-features")
