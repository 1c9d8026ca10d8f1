"""Numbered, decoded lines of one text input: the byte layer under every reader of text.

Corpora (``textio.inputs``), ``ptm extract-features`` input
(``features.readers``) and labeled task data (``tasks.readers``) all read
through :class:`TextLines`, so they share one behaviour:

- an input is a file path, ``-`` for stdin, or bytes already in memory;
- gzip is recognised by its magic bytes (so compressed stdin works too); a
  file named ``*.gz`` that is not gzip data is an error;
- it is read line by line as bytes and each line is decoded on its own, so
  memory stays flat on any input size and a bad byte is named by file:line;
- a UTF-8 byte-order mark at the start is dropped;
- invalid UTF-8 follows ``errors``: "strict" raises PtmError naming the file,
  line and byte, "replace" substitutes U+FFFD, "skip" drops the line (both
  counted in the ``ReadStats`` given);
- only ``\\n`` ends a line (``\\r\\n`` endings are taken off with it).

Each caller keeps its own parsing (formats, columns, JSON fields) on top.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterator

from ptmcli.errors import PtmError, where
from ptmcli.textio.records import ReadStats

STDIN = "-"
STDIN_NAME = "<stdin>"
ERROR_MODES = ("strict", "replace", "skip")
HEAD_BYTES = 8192
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
_READ_BUFFER = 1 << 20
_READ_ERRORS = (OSError, EOFError, zlib.error)

__all__ = ["BOM", "ERROR_MODES", "GZIP_MAGIC", "HEAD_BYTES", "STDIN", "STDIN_NAME", "TextLines", "display_name",
           "open_file", "starts_json_object"]


def display_name(path: str) -> str:
    """How messages name an input: the path, or ``<stdin>`` for ``-``."""
    return STDIN_NAME if path == STDIN else str(path)


def open_file(path: str, buffering: int = -1):
    """The file ``path`` opened for bytes; a PtmError naming it when it cannot be."""
    try:
        return open(path, "rb", buffering=buffering)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise PtmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PtmError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise PtmError(f"{path}: cannot read: {err.strerror}") from None


def starts_json_object(line: str, parse: bool = False) -> bool:
    """Whether a (first non-blank) line makes its input JSON lines: it starts with ``{``.

    With ``parse`` it must also hold a whole JSON object (plain text may start with a brace).
    """
    stripped = line.strip()
    if not stripped.startswith("{"):
        return False
    if not parse:
        return True
    try:
        return isinstance(json.loads(stripped), dict)
    except ValueError:
        return False


class TextLines:
    """The lines of one input, numbered from 1 and decoded, read as they are asked for.

    The input is opened, and gzip recognised, when the object is made (a
    missing file or a broken gzip header fails there). ``head`` and
    ``peek_nonblank`` look at the start without consuming it; iterating gives
    ``(line number, text)`` with the line ending taken off (``numbered(True)``
    keeps it). The input is closed when iteration ends or on ``close``.

    ``advice`` ends the message of a strict UTF-8 error (say, which option to
    use instead); ``stats`` counts lines, bytes read (compressed bytes for
    gzip, comparable with the file's size) and replaced or skipped lines.
    """

    def __init__(self, path: str, *, errors: str = "strict", advice: str = "", stats: ReadStats | None = None,
                 data: bytes | None = None) -> None:
        if errors not in ERROR_MODES:
            raise PtmError(f"unknown --errors mode {errors!r}; choose one of {', '.join(ERROR_MODES)}")
        self.path = path
        self.name = display_name(path)
        self.errors = errors
        self.advice = advice
        self.stats = stats if stats is not None else ReadStats()
        self._file = None  # what we opened and must close
        self._gzip: gzip.GzipFile | None = None
        self._ahead: list[tuple[int, bytes]] = []  # lines read by peek_nonblank, not yet handed out
        self._number = 0  # lines read from the stream so far
        self._started = False
        self._head: bytes | None = None
        self.compressed = False
        if data is not None:
            raw = io.BytesIO(data)
        elif path == STDIN:
            raw = sys.stdin.buffer
        else:
            raw = self._file = open_file(path, _READ_BUFFER)
        try:
            magic, stream = _lookahead(raw, len(GZIP_MAGIC))
            self.compressed = magic == GZIP_MAGIC
            if self.compressed:
                stream = self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")
            elif path != STDIN and str(path).endswith(".gz"):
                raise PtmError(f"{path} has a .gz name but is not gzip data")
        except _READ_ERRORS as err:
            self.close()
            raise PtmError(f"cannot read {self.name}: {err}") from None
        except PtmError:
            self.close()
            raise
        self._stream = stream
        # Compressed progress is the position in the stored file (tell() fails on pipes).
        seekable = self._file is not None and self._file.seekable()
        self._compressed_file = self._file if self.compressed and seekable else None
        self._reported = 0

    # -- looking ahead -----------------------------------------------------------------------

    def head(self, size: int = HEAD_BYTES) -> bytes:
        """The first ``size`` bytes of the (decompressed) content, byte-order mark included; nothing is consumed.

        Asked before any line is read; later calls give what the first one read.
        """
        if self._head is None:
            if self._started or self._ahead:
                raise RuntimeError("head() must come before the lines are read")
            try:
                self._head, self._stream = _lookahead(self._stream, size)
            except _READ_ERRORS as err:
                raise PtmError(f"cannot read {self.name}: {err}") from None
        return self._head

    def peek_nonblank(self, count: int) -> list[str]:
        """Up to ``count`` first non-blank lines, without endings; nothing is consumed (or counted as skipped)."""
        found = []
        for number, raw_line in self._ahead:
            text = self._decode_peeked(number, raw_line)
            if text.strip():
                found.append(text)
        while len(found) < count:
            raw_line = self._read_line()
            if raw_line is None:
                break
            self._ahead.append((self._number, raw_line))
            text = self._decode_peeked(self._number, raw_line)
            if text.strip():
                found.append(text)
        return found[:count]

    def first_nonblank(self) -> str | None:
        """The first non-blank line, or None when there is none."""
        found = self.peek_nonblank(1)
        return found[0] if found else None

    def looks_like_jsonl(self, parse: bool = False) -> bool:
        """Whether the input is JSON lines: its first non-blank line starts with ``{`` (see ``starts_json_object``)."""
        first = self.first_nonblank()
        return first is not None and starts_json_object(first, parse)

    # -- reading -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return self.numbered()

    def numbered(self, keep_endings: bool = False) -> Iterator[tuple[int, str]]:
        """(line number, text) for each line; a line dropped by errors="skip" is not yielded at all."""
        if self._started:
            raise RuntimeError(f"the lines of {self.name} are read once")
        self._started = True
        try:
            while self._ahead:
                number, raw_line = self._ahead.pop(0)
                text = self._decode(number, raw_line)
                if text is not None:
                    yield number, text if keep_endings else text.rstrip("\r\n")
            # The loop of _read_line, written out: this runs once per line of every corpus.
            stats, counted = self.stats, self._compressed_file is None
            number = self._number
            try:
                for raw_line in self._stream:
                    number += 1
                    self._number = number
                    stats.lines += 1
                    if counted:
                        stats.bytes_read += len(raw_line)
                    else:
                        self._count_bytes(len(raw_line))
                    if number == 1 and raw_line.startswith(BOM):
                        raw_line = raw_line[len(BOM):]
                    try:
                        text = raw_line.decode("utf-8")
                    except UnicodeDecodeError:
                        text = self._decode(number, raw_line)
                        if text is None:
                            continue
                    yield number, text if keep_endings else text.rstrip("\r\n")
            except _READ_ERRORS as err:
                raise PtmError(f"{where(self.name, number + 1)}: cannot read: {err}") from None
        finally:
            self.close()

    def close(self) -> None:
        """Close the input (stdin is left open)."""
        if self._gzip is not None:
            self._gzip.close()
            self._gzip = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TextLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- bytes to text -----------------------------------------------------------------------

    def _read_line(self) -> bytes | None:
        """The next line as bytes (its ending kept), or None at the end of the input."""
        try:
            raw_line = self._stream.readline()
        except _READ_ERRORS as err:
            raise PtmError(f"{where(self.name, self._number + 1)}: cannot read: {err}") from None
        if not raw_line:
            return None
        self._number += 1
        self.stats.lines += 1
        self._count_bytes(len(raw_line))
        if self._number == 1 and raw_line.startswith(BOM):
            raw_line = raw_line[len(BOM):]
        return raw_line

    def _count_bytes(self, line_bytes: int) -> None:
        if self._compressed_file is None:
            self.stats.bytes_read += line_bytes
            return
        position = self._compressed_file.tell()
        self.stats.bytes_read += position - self._reported
        self._reported = position

    def _invalid(self, number: int, raw_line: bytes, err: UnicodeDecodeError) -> PtmError:
        advice = f"; {self.advice}" if self.advice else ""
        return PtmError(f"{where(self.name, number)}: invalid UTF-8 (byte 0x{raw_line[err.start]:02x} at byte "
                        f"{err.start + 1} of the line){advice}")

    def _decode_peeked(self, number: int, raw_line: bytes) -> str:
        try:
            return raw_line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            if self.errors == "strict":
                raise self._invalid(number, raw_line, err) from None
            return raw_line.decode("utf-8", errors="replace").rstrip("\r\n") if self.errors == "replace" else ""

    def _decode(self, number: int, raw_line: bytes) -> str | None:
        """The text of a line, or None for a line dropped under errors="skip"."""
        try:
            return raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            if self.errors == "strict":
                raise self._invalid(number, raw_line, err) from None
            if self.errors == "skip":
                self.stats.skipped_lines += 1
                return None
            self.stats.replaced_lines += 1
            return raw_line.decode("utf-8", errors="replace")


def _lookahead(stream, size: int) -> tuple[bytes, io.BufferedReader]:
    """Read the first ``size`` bytes and return them with a stream that still starts at them."""
    read = getattr(stream, "read1", stream.read)
    head = b""
    while len(head) < size:
        chunk = read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head, io.BufferedReader(_Rejoined(head, stream), buffer_size=_READ_BUFFER)


class _Rejoined(io.RawIOBase):
    """Bytes already read ahead, followed by the rest of the stream they came from."""

    def __init__(self, prefix: bytes, stream) -> None:
        self._prefix = memoryview(prefix)
        self._read1 = getattr(stream, "read1", stream.read)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        # read1 returns what is available, so piped stdin is not held back for a full buffer.
        chunk = self._read1(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)
