"""Word-vector files: word2vec text and binary, GloVe text and fastText ``.vec``, read and written.

- word2vec text (also fastText's ``.vec``): a header ``COUNT DIM``, then one
  line per word, ``word v1 ... vDIM`` separated by single spaces;
- word2vec binary: the same header line, then per word its UTF-8 bytes, a
  space and DIM little-endian float32, usually followed by a newline;
- GloVe text: the word2vec text rows with no header.

The format is found from the content, not the name; gzip is read through.
Files are read row by row into one float32 matrix (memory: the matrix, not
the file), and every disagreement with the header or the first row (a row
count, a row width) is one ``PtmError`` naming the file and line (row, for
binary files). Rows keep their order, which for published and trained files
is by decreasing word frequency. Files are written under a temporary name and
renamed when complete; numbers as text have 9 significant digits, so float32
values survive exactly.

fastText's ``.bin`` model is not a vector file: ``ptm convert`` reads it into a
checkpoint (``ptmcli.static.fasttext_bin``, n-grams kept); read here it is
refused with one line pointing there and to the ``.vec`` file.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.textio.lines import BOM, GZIP_MAGIC, TextLines, open_file

WORD2VEC_TEXT = "word2vec"
WORD2VEC_BINARY = "word2vec-binary"
GLOVE = "glove"
FORMATS = (WORD2VEC_TEXT, WORD2VEC_BINARY, GLOVE)
FORMAT_NAMES = {WORD2VEC_TEXT: "word2vec text", WORD2VEC_BINARY: "word2vec binary", GLOVE: "GloVe text"}

_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")
_HEADER = re.compile(rb"\s*(\d+)\s+(\d+)\s*")
_HEAD_LIMIT = 1 << 22  # enough for a header and a first row of any width in use
_ROWS_PER_PARSE = 4096
_ROWS_PER_WRITE = 2048
_READ_BLOCK = 1 << 20


@dataclass
class WordVectors:
    """The rows of a vector file, in file order."""

    words: list[str]
    vectors: np.ndarray
    """``[len(words), dim]`` float32."""
    format: str
    """One of ``FORMATS``."""

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# -- reading ---------------------------------------------------------------------------------------


def detect_vector_format(path: str | Path) -> str:
    """Which of ``FORMATS`` the file holds; a PtmError when it is none of them."""
    head = _head(path).removeprefix(BOM)
    name = str(path)
    if head.startswith(_FASTTEXT_MAGIC):
        raise PtmError(f"{name} is a fastText .bin model, not a vector file: convert it to a checkpoint first "
                       f"(ptm convert {name} -o CKPT, n-grams kept), or use the .vec file fastText writes beside it")
    first, newline, rest = head.partition(b"\n")
    if _HEADER.fullmatch(first):
        dim = int(_HEADER.fullmatch(first).group(2))
        return WORD2VEC_TEXT if _looks_like_text_row(rest, dim) else WORD2VEC_BINARY
    if not newline and len(head) >= _HEAD_LIMIT:
        raise PtmError(f"{name}:1: not a word-vector file (a first line longer than {_HEAD_LIMIT} bytes)")
    if _looks_like_text_row(head, None):
        return GLOVE
    raise PtmError(f"{name}:1: not a word-vector file: expected a 'COUNT DIM' header (word2vec text or binary, "
                   "fastText .vec) or a row 'word v1 v2 ...' (GloVe)")


def read_vectors(path: str | Path, limit: int | None = None) -> WordVectors:
    """Every row of a vector file (the first ``limit`` rows when given), in file order."""
    fmt = detect_vector_format(path)
    if fmt == WORD2VEC_BINARY:
        words, vectors = _read_binary(str(path), limit)
    else:
        words, vectors = _read_text(str(path), fmt == WORD2VEC_TEXT, limit)
    return WordVectors(words, vectors, fmt)


def _head(path: str | Path) -> bytes:
    with _open_bytes(str(path)) as stream:
        head = b""
        while head.count(b"\n") < 2 and len(head) < _HEAD_LIMIT:
            block = stream.read(min(_READ_BLOCK, _HEAD_LIMIT - len(head)))
            if not block:
                break
            head += block
    if not head.strip():
        raise PtmError(f"{path}: empty file, not a word-vector file")
    return head


def _open_bytes(path: str) -> BinaryIO:
    raw = open_file(path)
    magic = raw.read(len(GZIP_MAGIC))
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw


def _looks_like_text_row(data: bytes, dim: int | None) -> bool:
    """Whether ``data`` starts with a text row ``word n1 n2 ...`` (of ``dim`` numbers, if given)."""
    line = data.split(b"\n", 1)[0]
    try:
        fields = line.decode("utf-8").rstrip().split(" ")
    except UnicodeDecodeError:
        return False
    if len(fields) < 2 or (dim is not None and len(fields) != dim + 1):
        return False
    try:
        np.array(fields[1:], dtype=np.float32)
    except ValueError:
        return False
    return True


def _read_text(path: str, has_header: bool, limit: int | None) -> tuple[list[str], np.ndarray]:
    lines = TextLines(path)
    numbered = iter(lines)
    count, dim = None, None
    try:
        if has_header:
            number, header = next(numbered)
            count, dim = (int(x) for x in header.split())
        words: list[str] = []
        blocks: list[np.ndarray] = []
        pending: list[tuple[int, str]] = []
        wanted = count if limit is None else (limit if count is None else min(count, limit))
        last_line = 1 if has_header else 0
        for number, line in numbered:
            last_line = number
            if not line.strip():
                continue
            if wanted is not None and len(words) + len(pending) >= wanted:
                if wanted == count:
                    raise PtmError(f"{path}:{number}: a row beyond the {count} the header announces")
                break  # the first ``limit`` rows were asked for
            pending.append((number, line))
            if len(pending) == _ROWS_PER_PARSE:
                dim = _parse_rows(path, pending, dim, has_header, words, blocks)
                pending = []
        if pending:
            dim = _parse_rows(path, pending, dim, has_header, words, blocks)
    finally:
        lines.close()
    if count is not None and len(words) < (count if limit is None else min(count, limit)):
        raise PtmError(f"{path}:{last_line + 1}: the file ends after {len(words)} of the {count} vectors its header announces")
    if not words:
        raise PtmError(f"{path}: no vectors")
    return words, np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _parse_rows(path: str, rows: list[tuple[int, str]], dim: int | None, has_header: bool,
                words: list[str], blocks: list[np.ndarray]) -> int:
    """Parse text rows into ``words`` and one more float32 block; returns the width."""
    numbers: list[str] = []
    for number, line in rows:
        word, _, rest = line.rstrip().partition(" ")
        if dim is None:
            dim = rest.count(" ") + 1 if rest else 0  # a GloVe file: the first row sets the width
        if rest.count(" ") + 1 != dim or not rest:
            word, rest = _odd_row(path, number, line, dim, has_header)
        words.append(word)
        numbers.append(rest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy only warns when a field is not a number
            block = np.fromstring(" ".join(numbers), dtype=np.float32, sep=" ")
    except (ValueError, DeprecationWarning):
        block = np.empty(0, dtype=np.float32)
    if block.size != len(rows) * dim:
        for (number, _), rest in zip(rows, numbers):
            for field in rest.split(" "):
                if not _is_number(field):
                    raise PtmError(f"{path}:{number}: {field!r} is not a number") from None
        raise PtmError(f"{path}: rows {rows[0][0]}-{rows[-1][0]} do not read as {dim} numbers each")
    blocks.append(block.reshape(len(rows), dim))
    return dim


def _odd_row(path: str, number: int, line: str, dim: int, has_header: bool) -> tuple[str, str]:
    """(word, numbers) of a row whose width differs from ``dim``: a word with spaces, else an error."""
    fields = line.rstrip().split(" ")
    extra = len(fields) - 1 - dim
    if extra > 0 and dim > 0 and not _is_number(fields[1]):
        # A word with spaces (a few rows of GloVe's 840B file): the numbers are the last ``dim`` fields.
        return " ".join(fields[: extra + 1]), " ".join(fields[extra + 1:])
    source = "the header says" if has_header else "the first row has"
    raise PtmError(f"{path}:{number}: {len(fields) - 1} numbers where {source} {dim}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_binary(path: str, limit: int | None) -> tuple[list[str], np.ndarray]:
    with _open_bytes(path) as stream:
        reader = _ByteReader(stream)
        header = _HEADER.fullmatch((reader.until(b"\n") or b"").removeprefix(BOM))
        if header is None:
            raise PtmError(f"{path}:1: expected a 'COUNT DIM' header")
        count, dim = int(header.group(1)), int(header.group(2))
        wanted = count if limit is None else min(count, limit)
        width = 4 * dim
        words: list[str] = []
        vectors = np.empty((wanted, dim), dtype=np.float32)
        for row in range(wanted):
            reader.skip(b"\n")
            start = reader.offset
            word = reader.until(b" ")
            data = reader.take(width)
            if word is None or data is None:
                raise PtmError(f"{path}: row {row + 1} (byte {start}): the file ends after {row} of the "
                               f"{count} vectors its header announces")
            try:
                words.append(word.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise PtmError(f"{path}: row {row + 1} (byte {start}): the word is not UTF-8 ({err.reason})") from None
            vectors[row] = np.frombuffer(data, dtype="<f4")
        if wanted == count:
            reader.skip(b"\n")
            trailing = reader.take(1)
            if trailing is not None:
                raise PtmError(f"{path}: byte {reader.offset - 1}: data beyond the {count} vectors the header announces")
    if not words:
        raise PtmError(f"{path}: no vectors")
    return words, vectors


class _ByteReader:
    """Bytes of a stream, taken piece by piece from a buffer refilled in blocks."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.buffer, self.position, self.consumed = stream, b"", 0, 0

    @property
    def offset(self) -> int:
        return self.consumed + self.position

    def _fill(self) -> bool:
        block = self.stream.read(_READ_BLOCK)
        if not block:
            return False
        self.consumed += self.position
        self.buffer, self.position = self.buffer[self.position:] + block, 0
        return True

    def until(self, separator: bytes) -> bytes | None:
        """The bytes up to ``separator`` (which is consumed); None at the end of the stream."""
        while True:
            end = self.buffer.find(separator, self.position)
            if end >= 0:
                piece, self.position = self.buffer[self.position:end], end + 1
                return piece
            if not self._fill():
                return None

    def take(self, size: int) -> bytes | None:
        while len(self.buffer) - self.position < size:
            if not self._fill():
                return None
        piece = self.buffer[self.position:self.position + size]
        self.position += size
        return piece

    def skip(self, byte: bytes) -> None:
        """Consume any run of ``byte`` (the newlines between binary rows)."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position:self.position + 1] == byte:
                self.position += 1
            if self.position < len(self.buffer) or not self._fill():
                return


# -- writing ---------------------------------------------------------------------------------------


def write_vectors(target: str | Path, words: Sequence[str], matrix: np.ndarray, fmt: str,
                  rows: Sequence[int] | None = None) -> Path:
    """Write ``words`` with their vectors (``matrix[rows[i]]``, or row i) in ``fmt``; returns the path.

    Words must not contain whitespace: no reader could split them from their numbers.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown vector format {fmt!r}")
    rows = list(range(len(words))) if rows is None else list(rows)
    target = Path(target)
    _write_atomically(target, lambda handle: _write(handle, words, matrix, rows, fmt))
    return target


def _write(handle: BinaryIO, words: Sequence[str], matrix: np.ndarray, rows: list[int], fmt: str) -> None:
    dim = matrix.shape[1]
    if fmt != GLOVE:
        handle.write(f"{len(words)} {dim}\n".encode())
    row_format = " ".join(["%.9g"] * dim)
    for start in range(0, len(words), _ROWS_PER_WRITE):
        chunk = words[start:start + _ROWS_PER_WRITE]
        block = np.asarray(matrix[rows[start:start + _ROWS_PER_WRITE]], dtype=np.float32)
        if fmt == WORD2VEC_BINARY:
            vectors = block.astype("<f4")
            handle.write(b"".join(w.encode("utf-8") + b" " + v.tobytes() + b"\n" for w, v in zip(chunk, vectors)))
        else:
            lines = (f"{w} {row_format % tuple(v)}\n" for w, v in zip(chunk, block.tolist()))
            handle.write("".join(lines).encode("utf-8"))


def _write_atomically(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write under a temporary name beside ``target``, fsync, then rename over it."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=parent)
    except OSError as err:
        raise PtmError(f"cannot write {target}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise PtmError(f"cannot write {target}: {err.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
