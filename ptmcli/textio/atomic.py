"""Writing an output directory so that readers see either the old one whole or the new one whole."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptmcli.errors import PtmError


def check_output_dir(target: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; call before long work so it fails fast."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise PtmError(f"output {target} exists and is not a directory")
        if not overwrite:
            raise PtmError(f"output directory {target} already exists; pass --overwrite to replace it")
    return target


@contextlib.contextmanager
def atomic_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; on success it replaces ``target`` in one rename.

    Files are fsynced before the rename. On any error the temporary directory is
    removed and ``target`` is left as it was.
    """
    target = check_output_dir(target, overwrite)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as err:
        raise PtmError(f"cannot create output directory {target}: {err.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rename(target, retired / target.name)
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
