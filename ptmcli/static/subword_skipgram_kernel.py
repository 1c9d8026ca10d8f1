"""fastText's skip-gram with negative sampling as one compiled loop over a chunk (numba), for the CPU.

The batched path (``fasttext._skipgram_step``) scores each centre word's
vector against all its context words at once with one shared draw of noise
words, and adds the summed step to the word's rows afterwards. This loop is
fastText's and gensim's own: for each (centre, context) pair in corpus order,
sum the centre word's rows (its own and its n-grams') over its number of
n-grams (gensim's scale, ``fasttext`` says why), score the context word and
the pair's own noise words, update those output rows, and add the error to
every one of the centre's rows before the next pair reads them.
Fresh noise per pair is what the batched path trades away; on the Wikipedia
sample it is worth 0.03 of SimLex-999 rho and 0.013 of semantic analogy
accuracy (docs/results.md).
"""

from __future__ import annotations

import numpy as np

from ptmcli.static.compiled import available, compiled, negative_sampling_step


@compiled
def _skipgram_subwords(words, left, count, rows, starts, counts, noise, alphas, inputs, outputs,
                       hidden, error):  # pragma: no cover - compiled
    """SGD over every (centre, context) pair of a chunk; returns (loss sum, pairs trained).

    ``rows[starts[w] : starts[w] + counts[w]]`` are word ``w``'s input rows;
    ``noise`` [pairs, negative] holds each pair's draws in the order the pairs
    are visited (centres in order, contexts left to right).
    """
    dim = inputs.shape[1]
    loss = 0.0
    pair = 0
    for centre in range(words.size):
        contexts = count[centre]
        if contexts == 0:
            continue
        first = centre - left[centre]
        word = words[centre]
        begin = starts[word]
        end = begin + counts[word]
        inverse = np.float32(1.0) / np.float32(max(1, counts[word] - 1))  # gensim's scale (fasttext.py)
        for position in range(first, first + contexts + 1):
            if position == centre:
                continue
            target = words[position]
            for k in range(dim):
                hidden[k] = 0.0
                error[k] = 0.0
            for at in range(begin, end):
                row = rows[at]
                for k in range(dim):
                    hidden[k] += inputs[row, k]
            for k in range(dim):
                hidden[k] *= inverse
            loss += negative_sampling_step(hidden, error, outputs, target, noise, pair, alphas[centre])
            for at in range(begin, end):
                row = rows[at]
                for k in range(dim):
                    inputs[row, k] += error[k]
            pair += 1
    return loss, pair


def train_skipgram_chunk(words: np.ndarray, left: np.ndarray, count: np.ndarray, rows: np.ndarray,
                         starts: np.ndarray, counts: np.ndarray, noise: np.ndarray, alphas: np.ndarray,
                         inputs: np.ndarray, outputs: np.ndarray) -> tuple[float, int]:
    """Run the compiled loop on one chunk; ``inputs`` and ``outputs`` (float32) change in place."""
    dim = inputs.shape[1]
    hidden = np.empty(dim, dtype=np.float32)
    error = np.empty(dim, dtype=np.float32)
    loss, pairs = _skipgram_subwords(words, left, count, rows, starts, counts, noise, alphas, inputs, outputs,
                                     hidden, error)
    return float(loss), int(pairs)


def compile_now() -> None:
    """Compile (or load from numba's cache) before worker processes fork, so each does not on its own."""
    if not available():
        return
    empty = np.zeros(1, dtype=np.int64)
    one = np.ones(1, dtype=np.int64)
    matrix = np.zeros((1, 2), dtype=np.float32)
    train_skipgram_chunk(empty, empty, empty, empty, empty, one, np.zeros((1, 1), dtype=np.int64),
                         np.zeros(1, dtype=np.float32), matrix, matrix.copy())
