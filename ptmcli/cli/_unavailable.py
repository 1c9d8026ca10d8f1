"""Shared body for subcommands that are listed but not built yet."""

from __future__ import annotations

from ptmcli.errors import PtmError


def unavailable(command: str) -> None:
    raise PtmError(f"`ptm {command}` is not available in this version of ptm yet (see `ptm --help`)")
