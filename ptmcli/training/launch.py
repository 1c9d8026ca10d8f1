"""Resuming a run at another torchrun world size: keep the global batch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ptmcli.errors import PtmError


def resume_batch_size(saved_batch: int, saved_world: int, ckpt: Path) -> dict:
    """``{"batch_size": b}`` that keeps the saved run's global batch at this world size ({} if unchanged).

    Read from torchrun's environment before any process group exists, so the
    resumed configuration is settled before anything is built.
    """
    try:
        world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
        rank = int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        raise PtmError("WORLD_SIZE and RANK must be integers (they are set by torchrun)") from None
    if world == saved_world:
        return {}
    global_batch = saved_batch * saved_world
    if global_batch % world:
        raise PtmError(
            f"--resume {ckpt}: its global batch of {global_batch} (batch {saved_batch} x {saved_world} processes) "
            f"cannot be split over {world} processes; resume with a world size that divides it"
        )
    if rank == 0:
        print(f"ptm: resuming a {saved_world}-process run on {world}: batch {global_batch // world} per device keeps the global batch of {global_batch}",
              file=sys.stderr)
    return {"batch_size": global_batch // world}
