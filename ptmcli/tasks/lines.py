"""Labeled data as bytes and numbered lines: files, stdin, gzip, UTF-8 with a byte-order mark.

What ``ptmcli.tasks.readers`` parses into examples reads through here, so a
bad byte or an unreadable file is one ``PtmError`` naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator

from ptmcli.errors import PtmError, where

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"


def read_bytes(path: str) -> bytes:
    if path == STDIN:
        return sys.stdin.buffer.read()
    with _open_file(path) as handle:
        return handle.read()


def _open_file(path: str):
    """The labeled data file ``path`` opened for bytes; one line naming it when it cannot be."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise PtmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PtmError(f"{path}: is a directory, not a labeled data file") from None
    except OSError as err:
        raise PtmError(f"{path}: cannot read: {err.strerror}") from None


def _not_utf8(name: str, line: int, byte: int, column: int) -> str:
    return (f"{where(name, line)}: not valid UTF-8 (byte 0x{byte:02x} at column {column}); "
            "convert the file to UTF-8")


def raw_lines(path: str, data: bytes | None) -> Iterator[bytes]:
    """The byte lines of ``data``, of stdin or of the file ``path``, endings kept; gzip is undone."""
    owned = None
    if data is not None:
        stream = io.BufferedReader(io.BytesIO(data))
    elif path == STDIN:
        stream = sys.stdin.buffer
        if not hasattr(stream, "peek"):
            stream = io.BufferedReader(stream)
    else:
        stream = owned = _open_file(path)
    try:
        if stream.peek(2)[:2] == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        try:
            yield from stream
        except (OSError, EOFError) as err:
            raise PtmError(f"{path}: cannot read: {err}") from None
    finally:
        if owned is not None:
            owned.close()


def without_ending(line: str) -> str:
    # Only \n ends a line (str.splitlines would also split inside a text at \x1c, \u2028 ...).
    if line.endswith("\n"):
        line = line[:-1]
    return line[:-1] if line.endswith("\r") else line


class Lines:
    """Numbered, decoded lines of one input, with a look at the first ones before they are read."""

    def __init__(self, name: str, raw: Iterator[bytes]) -> None:
        self.name = name
        self._raw = raw
        self._ahead: list[tuple[int, str]] = []  # decoded, endings kept
        self._read = 0

    def _decode(self, number: int, line: bytes) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PtmError(_not_utf8(self.name, number, line[err.start], err.start + 1)) from None

    def peek_nonblank(self, count: int) -> list[str]:
        """Up to ``count`` first non-blank lines (without their endings); nothing is consumed."""
        found = [without_ending(line) for _, line in self._ahead if line.strip()]
        for line in self._raw:
            self._read += 1
            if self._read == 1 and line.startswith(BOM):
                line = line[3:]  # MRPC's files start with a byte-order mark
            text = self._decode(self._read, line)
            self._ahead.append((self._read, text))
            if text.strip():
                found.append(without_ending(text))
            if len(found) >= count:
                break
        return found[:count]

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """The lines with their endings."""
        return self._lines(strip=False)

    def stripped(self) -> Iterator[tuple[int, str]]:
        """The lines without their endings."""
        return self._lines(strip=True)

    def _lines(self, strip: bool) -> Iterator[tuple[int, str]]:
        for number, text in self._ahead:
            yield number, without_ending(text) if strip else text
        self._ahead = []
        # The first line (and its byte-order mark) always went through peek_nonblank.
        for number, line in enumerate(self._raw, self._read + 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = self._decode(number, line)
            if strip:
                if text[-1:] == "\n":
                    text = text[:-1]
                if text[-1:] == "\r":
                    text = text[:-1]
            yield number, text
