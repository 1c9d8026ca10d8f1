"""Word co-occurrence counts for GloVe, streamed over the corpus in bounded memory.

Within a sentence, each pair of words ``d <= window`` apart adds ``1 / d`` to
``X[left, right]`` (and to ``X[right, left]`` when symmetric), as GloVe's
reference counter does. Pairs are keyed ``left * V + right`` and summed
chunk by chunk in memory; when the buffer would pass ``max_entries``, it is
reduced, sorted and spilled to a temporary ``.npy`` run. At the end the runs
are merged in key order a block at a time, so memory stays near
``max_entries`` entries however large the corpus.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.static.corpus import iter_chunks
from ptmcli.static.vocab import Vocabulary

BYTES_PER_ENTRY = 16  # int64 key + float64 value
_WORKING_COPIES = 3  # sorting and reducing a buffer holds about three copies of it


def entries_for_memory(memory_bytes: int) -> int:
    """How many entries a counting buffer may hold within ``memory_bytes``."""
    return max(1024, memory_bytes // (BYTES_PER_ENTRY * _WORKING_COPIES))


@dataclass
class Cooccurrences:
    """Non-zero ``X[i, j]`` as blocks of (sorted keys ``i * V + j``, values), in memory or memory-mapped."""

    vocab_size: int
    blocks: list[tuple[np.ndarray, np.ndarray]]
    spilled_runs: int = 0  # how many sorted runs went to disk while counting
    _directory: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(int(keys.size) for keys, _ in self.blocks)

    def triples(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of one block."""
        keys, values = self.blocks[block]
        keys = np.asarray(keys)
        return keys // self.vocab_size, keys % self.vocab_size, np.asarray(values)

    def to_dense(self) -> np.ndarray:
        """``[V, V]`` float64 matrix (small vocabularies only: tests and inspection)."""
        dense = np.zeros((self.vocab_size, self.vocab_size))
        for block in range(len(self.blocks)):
            rows, cols, values = self.triples(block)
            dense[rows, cols] = values
        return dense

    def close(self) -> None:
        """Remove the temporary files now rather than at garbage collection."""
        self.blocks = []
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None


def window_pairs(words: np.ndarray, bounds: np.ndarray, window: int, symmetric: bool,
                 vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys and ``1 / distance`` weights of every pair within ``window`` in a chunk of sentences."""
    sentence_of = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    keys, weights = [], []
    for distance in range(1, window + 1):
        left = np.flatnonzero(sentence_of[:-distance] == sentence_of[distance:]) if words.size > distance else []
        if len(left) == 0:
            continue
        first, second = words[left], words[left + distance]
        keys.append(first * vocab_size + second)
        if symmetric:
            keys.append(second * vocab_size + first)
        weights.extend([np.full(left.size, 1.0 / distance)] * (2 if symmetric else 1))
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(keys), np.concatenate(weights)


def reduce_pairs(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum values of equal keys; returns unique sorted keys and their sums."""
    if keys.size == 0:
        return keys, values
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts], np.add.reduceat(values, starts)


def count_cooccurrences(sentences: Iterable[np.ndarray], vocab: Vocabulary, window: int = 10,
                        symmetric: bool = True, max_entries: int = 32_000_000, chunk_words: int = 65_536,
                        spill_dir: str | os.PathLike | None = None) -> Cooccurrences:
    """Count co-occurrences of ``vocab`` words in ``sentences`` holding at most about ``max_entries`` at once."""
    if window < 1:
        raise PtmError(f"window must be at least 1, got {window}")
    vocab_size = len(vocab)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    pending_entries = 0
    runs: list[str] = []
    directory: tempfile.TemporaryDirectory | None = None

    def spill() -> None:
        nonlocal directory, pending, pending_entries
        if directory is None:
            directory = tempfile.TemporaryDirectory(prefix="ptm-cooccur-", dir=spill_dir)
        keys, values = _reduce_all(pending)
        path = os.path.join(directory.name, f"run-{len(runs):05d}")
        np.save(path + "-keys.npy", keys)
        np.save(path + "-values.npy", values)
        runs.append(path)
        pending, pending_entries = [], 0

    for chunk in iter_chunks(sentences, vocab, chunk_words):
        keys, values = reduce_pairs(*window_pairs(chunk.words, chunk.bounds, window, symmetric, vocab_size))
        if pending_entries + keys.size > max_entries and pending:
            pending = [_reduce_all(pending)]
            pending_entries = int(pending[0][0].size)
            if pending_entries + keys.size > max_entries:
                spill()
        pending.append((keys, values))
        pending_entries += keys.size
    if not runs:
        return Cooccurrences(vocab_size, [_reduce_all(pending)] if pending else [])
    if pending:
        spill()
    blocks = list(_merge_runs(runs, directory.name, max_entries))
    return Cooccurrences(vocab_size, blocks, spilled_runs=len(runs), _directory=directory)


def _reduce_all(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return reduce_pairs(np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts]))


def _merge_runs(runs: list[str], directory: str, max_entries: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """K-way merge of sorted runs into sorted, reduced blocks saved as .npy and memory-mapped back."""
    keys = [np.load(run + "-keys.npy", mmap_mode="r") for run in runs]
    values = [np.load(run + "-values.npy", mmap_mode="r") for run in runs]
    # Each step takes at most `step` entries from every run: every run's entries up
    # to the smallest of the runs' step-th next keys, so no key is split between steps.
    step = max(1, max_entries // (2 * len(runs)))
    cursors = [0] * len(runs)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    out_entries = 0
    written = 0

    def emit() -> tuple[np.ndarray, np.ndarray]:
        nonlocal written, out, out_entries
        merged_keys = np.concatenate([k for k, _ in out])
        merged_values = np.concatenate([v for _, v in out])
        path = os.path.join(directory, f"merged-{written:05d}")
        np.save(path + "-keys.npy", merged_keys)
        np.save(path + "-values.npy", merged_values)
        written += 1
        out, out_entries = [], 0
        return np.load(path + "-keys.npy", mmap_mode="r"), np.load(path + "-values.npy", mmap_mode="r")

    while True:
        live = [r for r in range(len(runs)) if cursors[r] < keys[r].size]
        if not live:
            break
        boundary = min(int(keys[r][min(cursors[r] + step, keys[r].size) - 1]) for r in live)
        taken_keys, taken_values = [], []
        for r in live:
            end = cursors[r] + int(np.searchsorted(keys[r][cursors[r]:cursors[r] + step], boundary, side="right"))
            taken_keys.append(np.asarray(keys[r][cursors[r]:end]))
            taken_values.append(np.asarray(values[r][cursors[r]:end]))
            cursors[r] = end
        block = reduce_pairs(np.concatenate(taken_keys), np.concatenate(taken_values))
        out.append(block)
        out_entries += block[0].size
        if out_entries >= max_entries // 2:
            yield emit()
    if out:
        yield emit()
    for run in runs:
        os.remove(run + "-keys.npy")
        os.remove(run + "-values.npy")
