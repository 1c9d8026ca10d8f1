"""The one error type users see.

Anything a user can get wrong (a flag, a file, a line of input) raises
``PtmError``; the CLI prints its message as one line on stderr and exits 2.
Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations


class PtmError(Exception):
    """A problem with the user's input, reported as one line, exit status 2."""

    exit_code = 2


def where(path: str, line: int | None = None) -> str:
    """Format a location for an error message: ``file:line`` or ``file``."""
    return f"{path}:{line}" if line is not None else str(path)
