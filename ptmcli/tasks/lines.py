"""Labeled data as lines: the shared text reader, with what labeled data adds to it.

Labeled files are read through ``ptmcli.textio.lines.TextLines`` (line by line,
gzip, ``-`` for stdin, a byte-order mark dropped: MRPC's files start with
one), so a bad byte or an unreadable file is one ``PtmError`` naming the file
and line. Labeled data has no ``--errors`` option: invalid UTF-8 is an error.
"""

from __future__ import annotations

import hashlib
import sys

from ptmcli.textio.lines import STDIN, TextLines, open_file

__all__ = ["STDIN", "UTF8_ADVICE", "content_sha256", "labeled_lines", "read_bytes"]

# What a UTF-8 error in labeled data suggests.
UTF8_ADVICE = "convert the file to UTF-8"


def labeled_lines(path: str, data: bytes | None = None) -> TextLines:
    """The lines of the labeled input ``path`` (or of ``data``, its content when already read)."""
    return TextLines(path, advice=UTF8_ADVICE, data=data)


def read_bytes(path: str) -> bytes:
    """The whole content of ``path`` or stdin, as stored (stdin can be read only once, so it is kept)."""
    if path == STDIN:
        return sys.stdin.buffer.read()
    with open_file(path) as handle:
        return handle.read()


def content_sha256(path: str, data: bytes | None = None) -> str:
    """sha256 of the file's bytes as stored, read in chunks (``data``: the content already in memory)."""
    if data is not None:
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open_file(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
