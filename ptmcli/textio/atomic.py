"""Writing an output directory so that readers see either the old one whole or the new one whole.

A directory is built under a hidden staging name beside its target
(``.NAME.tmp-*``), fsynced, then renamed into place. A process killed at any
moment leaves the target as it was, plus at most a hidden leftover that the
next write of the same target removes. Removal works the same way backwards:
one rename hides the directory (``.NAME.del-*``), then it is deleted, so no
reader ever sees a half-deleted directory under its real name. Replacing a
directory takes two renames (the old one aside to ``.NAME.old-*/NAME``, the
new one in); :func:`restore_retired` undoes a kill between them. Single files
are replaced the same way, in one rename (:func:`atomic_write_text`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ptmcli.errors import PtmError

# Errors that mean "this output cannot be written here"; others raised while building it
# (a missing input file, say) are not write failures and keep their own message.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
LEFTOVER_KINDS = ("tmp", "old", "del")


class OutputWriteError(PtmError):
    """An output directory could not be written (disk full, read-only, ...); its target is as it was."""

    def __init__(self, target: Path, err: OSError) -> None:
        self.target = target
        self.errno = err.errno
        self.reason = describe_write_error(err)
        super().__init__(f"could not write {target}: {self.reason}; {target} was left as it was")


def describe_write_error(err: OSError) -> str:
    text = err.strerror or str(err)
    return f"disk full ({text})" if err.errno in NO_SPACE else text


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
    removed and ``target`` is left as it was; a failure to write (disk full,
    read-only filesystem) is raised as :class:`OutputWriteError`.
    """
    target = check_output_dir(target, overwrite)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(parent, name=target.name)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as err:
        if err.errno in WRITE_FAILURES:
            raise OutputWriteError(target, err) from err
        raise PtmError(f"cannot create output directory {target}: {err.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    writing = True
    try:
        yield staging
        writing = False
        _fsync_tree(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rename(target, retired / target.name)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(retired / target.name, target)  # the old one goes back where it was
                shutil.rmtree(retired, ignore_errors=True)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
        _fsync_dir(parent)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if writing and err.errno not in WRITE_FAILURES:
            raise
        raise OutputWriteError(target, err) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_text(target: str | Path, text: str) -> None:
    """Replace the file ``target`` with ``text`` (UTF-8) in one rename, fsynced first.

    A kill leaves the old file or the new one, plus at most a hidden
    ``.NAME.tmp-*`` beside it, which the next write of ``target`` removes (so
    only the one process that writes ``target`` may call this). A failure to
    write (disk full, read-only filesystem, a failed fsync) is raised as
    :class:`OutputWriteError`, with ``target`` as it was and nothing left beside it.
    """
    target = Path(target)
    for entry in leftovers(target.parent, name=target.name):
        if entry.is_file():
            entry.unlink(missing_ok=True)
    staging = None
    try:
        fd, staging = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # mkstemp's 0600 would make the file private
        os.replace(staging, target)
        _fsync_dir(target.parent)
    except BaseException as err:
        if staging is not None:
            Path(staging).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputWriteError(target, err) from err
        raise


def discard_directory(path: str | Path) -> None:
    """Delete a directory so that it vanishes from its name in one step (hidden first, then removed)."""
    path = Path(path)
    hidden = path.parent / f".{path.name}.del-{secrets.token_hex(4)}"
    try:
        os.rename(path, hidden)
    except OSError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def leftovers(parent: str | Path, *, name: str | None = None, prefix: str | None = None) -> list[Path]:
    """Hidden staging, retired and half-deleted directories of interrupted writes in ``parent``.

    Only those of the output called ``name``, or of outputs whose names start with ``prefix``.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = []
    for entry in parent.iterdir():
        original, _, kind = entry.name[1:].rpartition(".")
        if not entry.name.startswith(".") or kind.split("-", 1)[0] not in LEFTOVER_KINDS or "-" not in kind:
            continue
        if (name is not None and original == name) or (prefix is not None and original.startswith(prefix)):
            found.append(entry)
    return sorted(found)


def remove_leftovers(parent: str | Path, *, name: str | None = None, prefix: str | None = None) -> None:
    """Remove what interrupted writes (see :func:`leftovers`) left behind.

    Only the one process that writes these outputs may call this. A retired copy
    (``.NAME.old-*``) is kept while ``NAME`` itself is missing: a kill between the
    two renames of a replacement leaves it the only copy under the old name.
    """
    for entry in leftovers(parent, name=name, prefix=prefix):
        original = entry.name[1:].rpartition(".")[0]
        if ".old-" in entry.name and not (Path(parent) / original).exists():
            continue
        shutil.rmtree(entry, ignore_errors=True)


def restore_retired(parent: str | Path, name: str | None = None) -> list[Path]:
    """Put back each directory of ``parent`` (only ``name``, if given) that a kill left retired.

    A kill between the two renames that replace ``NAME`` leaves no ``NAME``,
    only its previous version whole under ``.NAME.old-*/NAME``: that version
    takes its name again. Returns the directories put back. Only the one
    process that writes these outputs may call this.
    """
    parent = Path(parent)
    retired: dict[str, list[Path]] = {}
    for entry in leftovers(parent, name=name, prefix="" if name is None else None):
        original = entry.name[1:].rpartition(".")[0]
        if ".old-" in entry.name and (entry / original).is_dir():
            retired.setdefault(original, []).append(entry / original)
    restored = []
    for original, copies in sorted(retired.items()):
        target = parent / original
        if target.exists():
            continue  # the replacement was completed; the retired copy is an ordinary leftover
        # Normally one; should kills have left several, the newest is the version last in place.
        newest = max(copies, key=lambda copy: copy.stat().st_mtime)
        os.rename(newest, target)
        _fsync_dir(parent)
        shutil.rmtree(newest.parent, ignore_errors=True)
        restored.append(target)
    return restored


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
