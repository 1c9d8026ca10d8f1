"""Where features go: the output format of a target, and files that appear only when complete.

Every writer follows the same contract (``write(row)``, ``finish()``,
``abort()``) and :func:`open_writer` picks one by format. A file is written
under a temporary name beside its target, fsynced and renamed at the end; a
directory (arrow) is built the same way by ``atomic_directory``. An error
leaves nothing behind, and an existing target is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.features.config import OUTPUT_FORMATS

STDOUT = "-"
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".h5": "hdf5", ".hdf5": "hdf5", ".npy": "npy",
             ".safetensors": "safetensors", ".arrow": "arrow"}
POOLED_ONLY = ("npy", "safetensors")


def infer_format(output: str, explicit: str | None) -> str:
    """``--output-format``, else the target's suffix; ``-`` is jsonl and anything else an arrow directory."""
    if explicit is not None:
        if explicit not in OUTPUT_FORMATS:
            raise PtmError(f"--output-format {explicit!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
        if output == STDOUT and explicit != "jsonl":
            raise PtmError(f"-o - streams jsonl only; --output-format {explicit} needs a file or directory")
        return explicit
    if output == STDOUT:
        return "jsonl"
    return _SUFFIXES.get(Path(output).suffix.lower(), "arrow")


def check_target(output: str, fmt: str, overwrite: bool) -> None:
    """Fail before any work when the target exists (without --overwrite) or has the wrong kind."""
    if output == STDOUT:
        return
    path = Path(output)
    if not path.exists():
        # Missing parent directories are created when writing starts, as every command does.
        blocking = next((p for p in path.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise PtmError(f"-o {output}: {blocking} is a file, not a directory")
        return
    if fmt == "arrow" and not path.is_dir():
        raise PtmError(f"-o {output}: exists and is not a directory (arrow output is a directory)")
    if fmt != "arrow" and path.is_dir():
        raise PtmError(f"-o {output}: is a directory; {fmt} output is a file")
    if not overwrite:
        raise PtmError(f"-o {output}: already exists (use --overwrite to replace it)")


class AtomicFile:
    """A temporary path beside ``target``; ``commit`` fsyncs and renames it into place."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent)
        except OSError as err:
            raise PtmError(f"cannot write {self.target}: {err.strerror}") from None
        os.close(fd)
        self.path = Path(name)

    def commit(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o666 & ~umask)
        os.replace(self.path, self.target)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@contextlib.contextmanager
def open_writer(fmt: str, output: str, layout, *, overwrite: bool = False, source: str = "") -> Iterator:
    """A writer for ``fmt`` at ``output``; finished on success, aborted (nothing left) on any error."""
    if fmt in POOLED_ONLY and layout.granularity != "text":
        raise PtmError(f"--output-format {fmt} holds one vector per text: add --pool cls|mean|max|last "
                       "(or write per-token features as jsonl, hdf5 or arrow)")
    check_target(output, fmt, overwrite)
    if fmt == "jsonl":
        from ptmcli.features.jsonl_writer import JsonlWriter as writer_class
    elif fmt == "hdf5":
        from ptmcli.features.hdf5_writer import Hdf5Writer as writer_class
    elif fmt == "arrow":
        from ptmcli.features.arrow_writer import ArrowWriter as writer_class
    else:
        from ptmcli.features.array_writer import ArrayWriter as writer_class
    writer = writer_class(output, layout, fmt=fmt, overwrite=overwrite, source=source)
    try:
        yield writer
        writer.finish()
    except BaseException:
        writer.abort()
        raise
