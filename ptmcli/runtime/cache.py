"""Where ptm keeps what it can rebuild: ``$PTM_CACHE``, else ``$XDG_CACHE_HOME/ptm``, else ``~/.cache/ptm``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("PTM_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ptm")
    return Path(base)
