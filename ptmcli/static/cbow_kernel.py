"""CBOW with negative sampling as one compiled loop over a chunk (numba), for the CPU.

The batched torch path (``word2vec._cbow_step``) spends most of its time in
per-word gathers and ``index_add_`` calls: CBOW does little arithmetic per
window (one mean, ``negative + 1`` dot products), so the memory traffic of
materialising every window's rows dominates. This loop does what word2vec.c
and gensim do instead: for each centre word in corpus order, average the
context rows, score the target and its own noise words, update those output
rows at once and add the error to every context row before the next window.
That is plain sequential SGD (no shared noise, no row cap needed), so its
vectors are the original algorithm's, and it runs at about gensim's speed
(docs/results.md, "Static word vectors").

Without numba (or on CUDA, or with hierarchical softmax) CBOW takes the
batched torch path (``compiled``).
"""

from __future__ import annotations

import numpy as np

from ptmcli.static.compiled import available, compiled, negative_sampling_step


@compiled
def _cbow_negative(words, left, count, noise, alphas, inputs, outputs, hidden, error):  # pragma: no cover - compiled
    """SGD over every window of a chunk; returns (loss sum, windows trained).

    ``words`` [n] ids; ``left`` / ``count`` [n] contexts before the centre and
    in all; ``noise`` [n, negative] draws; ``alphas`` [n] learning rates;
    ``inputs`` / ``outputs`` [V, d] updated in place; ``hidden`` / ``error``
    [d] scratch.
    """
    dim = inputs.shape[1]
    loss = 0.0
    windows = 0
    for centre in range(words.size):
        contexts = count[centre]
        if contexts == 0:
            continue
        first = centre - left[centre]
        for k in range(dim):
            hidden[k] = 0.0
            error[k] = 0.0
        for position in range(first, first + contexts + 1):
            if position != centre:
                row = words[position]
                for k in range(dim):
                    hidden[k] += inputs[row, k]
        inverse = np.float32(1.0) / np.float32(contexts)
        for k in range(dim):
            hidden[k] *= inverse
        loss += negative_sampling_step(hidden, error, outputs, words[centre], noise, centre, alphas[centre])
        for position in range(first, first + contexts + 1):
            if position != centre:
                row = words[position]
                for k in range(dim):
                    inputs[row, k] += error[k]
        windows += 1
    return loss, windows


def train_cbow_chunk(words: np.ndarray, left: np.ndarray, count: np.ndarray, noise: np.ndarray,
                     alphas: np.ndarray, inputs: np.ndarray, outputs: np.ndarray) -> tuple[float, int]:
    """Run the compiled loop on one chunk; ``inputs`` and ``outputs`` (float32) change in place."""
    dim = inputs.shape[1]
    hidden = np.empty(dim, dtype=np.float32)
    error = np.empty(dim, dtype=np.float32)
    loss, windows = _cbow_negative(words, left, count, noise, alphas, inputs, outputs, hidden, error)
    return float(loss), int(windows)


def compile_now() -> None:
    """Compile (or load from numba's cache) before worker processes fork, so each does not on its own."""
    if not available():
        return
    empty = np.zeros(1, dtype=np.int64)
    rows = np.zeros((1, 2), dtype=np.float32)
    train_cbow_chunk(empty, empty, empty, np.zeros((1, 1), dtype=np.int64), np.zeros(1, dtype=np.float32),
                     rows, rows.copy())
