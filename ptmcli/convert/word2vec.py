"""``--to word2vec``: a model's input token embeddings as static word vectors.

The word2vec formats that gensim's ``KeyedVectors.load_word2vec_format`` and
fastText read: a header line ``<count> <dim>``, then one line per token, the
token and its vector. Text writes each number with 9 significant digits (the
float32 value survives exactly); ``--binary`` writes the token, a space and the
vector as little-endian float32, then a newline. Tokens that contain whitespace
cannot be written in either format and are left out (and counted).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ptmcli.convert.sources import Model
from ptmcli.errors import PtmError

_ROWS_PER_WRITE = 2048


def write_word2vec(model: Model, target: str | Path, binary: bool, overwrite: bool) -> tuple[Path, int, list[str]]:
    """Write the vectors; returns the path, the number of vectors and the tokens left out."""
    if model.tokenizer is None:
        raise PtmError("--to word2vec needs the tokenizer to name each vector, and the source has none")
    matrix = model.state[model.spec.input_embedding].float().numpy()
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(model.tokenizer.vocab_size)))
    kept = [(i, t) for i, t in enumerate(tokens) if t and not any(c.isspace() for c in t)]
    skipped = [t for t in tokens if not t or any(c.isspace() for c in t)]
    target = Path(target)
    if target.exists() and not overwrite:
        raise PtmError(f"output {target} already exists; pass --overwrite to replace it")
    if target.is_dir():
        raise PtmError(f"output {target} is a directory; --to word2vec writes one file")
    _write_atomically(target, lambda handle: _write(handle, matrix, kept, binary))
    return target, len(kept), skipped


def _write(handle, matrix: np.ndarray, kept: list[tuple[int, str]], binary: bool) -> None:
    dim = matrix.shape[1]
    handle.write(f"{len(kept)} {dim}\n".encode())
    row_format = " ".join(["%.9g"] * dim)
    for start in range(0, len(kept), _ROWS_PER_WRITE):
        chunk = kept[start:start + _ROWS_PER_WRITE]
        rows = matrix[[i for i, _ in chunk]]
        if binary:
            vectors = rows.astype("<f4")
            handle.write(b"".join(t.encode("utf-8") + b" " + v.tobytes() + b"\n" for (_, t), v in zip(chunk, vectors)))
        else:
            lines = (f"{t} {row_format % tuple(v)}\n" for (_, t), v in zip(chunk, rows.tolist()))
            handle.write("".join(lines).encode("utf-8"))


def _write_atomically(target: Path, write) -> None:
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_word2vec(path: str | Path, binary: bool) -> tuple[list[str], np.ndarray]:
    """Read either format back (for checks without gensim)."""
    data = Path(path).read_bytes()
    header, _, body = data.partition(b"\n")
    count, dim = (int(x) for x in header.split())
    tokens, vectors = [], np.empty((count, dim), dtype=np.float32)
    if not binary:
        for row, line in enumerate(body.decode("utf-8").split("\n")[:count]):
            token, *numbers = line.split(" ")
            tokens.append(token)
            vectors[row] = np.array(numbers, dtype=np.float32)
        return tokens, vectors
    pos = 0
    for row in range(count):
        space = body.index(b" ", pos)
        tokens.append(body[pos:space].decode("utf-8"))
        vectors[row] = np.frombuffer(body[space + 1:space + 1 + 4 * dim], dtype="<f4")
        pos = space + 1 + 4 * dim + 1  # the vector, then its newline
    return tokens, vectors
