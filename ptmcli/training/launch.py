"""What torchrun told this process, read from its environment without importing torch.

The CLI asks it before anything heavy is imported (which command runs on
every rank), and resuming uses it to settle the batch before any process
group exists; ``training.distributed`` joins the group itself.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ptmcli.errors import PtmError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def from_torchrun_env() -> Distributed:
    """This process's place in a torchrun launch (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); a plain launch is one process."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    except ValueError:
        raise PtmError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world_size <= 1:
        return SINGLE
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


def resume_batch_size(saved_batch: int, saved_world: int, ckpt: Path) -> dict:
    """``{"batch_size": b}`` that keeps the saved run's global batch at this world size ({} if unchanged).

    Read from torchrun's environment before any process group exists, so the
    resumed configuration is settled before anything is built.
    """
    launch = from_torchrun_env()
    world = launch.world_size
    if world == saved_world:
        return {}
    global_batch = saved_batch * saved_world
    if global_batch % world:
        raise PtmError(
            f"--resume {ckpt}: its global batch of {global_batch} (batch {saved_batch} x {saved_world} processes) "
            f"cannot be split over {world} processes; resume with a world size that divides it"
        )
    if launch.is_main:
        print(f"ptm: resuming a {saved_world}-process run on {world}: batch {global_batch // world} per device keeps the global batch of {global_batch}",
              file=sys.stderr)
    return {"batch_size": global_batch // world}
