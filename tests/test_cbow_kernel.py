"""The compiled CBOW loop against a plain reference of word2vec's per-window SGD."""

from __future__ import annotations

import numpy as np
import pytest

from ptmcli.static import cbow_kernel

pytestmark = pytest.mark.skipif(not cbow_kernel.available(), reason="numba is not installed")


def reference(words, left, count, noise, alphas, inputs, outputs):
    """word2vec.c's CBOW with negative sampling, one window at a time, in float64."""
    loss, windows = 0.0, 0
    for centre in range(words.size):
        if count[centre] == 0:
            continue
        first = centre - left[centre]
        contexts = [words[p] for p in range(first, first + count[centre] + 1) if p != centre]
        hidden = inputs[contexts].mean(axis=0)
        error = np.zeros_like(hidden)
        draws = [(words[centre], 1.0)] + [(w, 0.0) for w in noise[centre] if w != words[centre]]
        for row, label in draws:
            probability = 1.0 / (1.0 + np.exp(-hidden @ outputs[row]))
            loss -= np.log(probability if label else 1.0 - probability)
            gradient = (label - probability) * alphas[centre]
            error += gradient * outputs[row]
            outputs[row] += gradient * hidden
        for row in contexts:
            inputs[row] += error
        windows += 1
    return loss, windows


def test_matches_sequential_sgd_window_by_window():
    rng = np.random.default_rng(0)
    vocab, dim, n, negative = 7, 5, 40, 3
    words = rng.integers(0, vocab, n)
    # Windows inside two sentences (0..24, 25..39), some with no context at all.
    left = np.array([min(i if i < 25 else i - 25, 2) for i in range(n)])
    right = np.array([min((24 if i < 25 else 39) - i, 2) for i in range(n)])
    count = left + right
    count[[0, 30]] = 0
    left[[0, 30]] = 0
    noise = rng.integers(0, vocab, (n, negative))
    noise[3, 1] = words[3]  # a noise word equal to its target is skipped, as in the original
    alphas = np.linspace(0.05, 0.01, n)
    inputs = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    outputs = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    expected_inputs, expected_outputs = inputs.astype(np.float64), outputs.astype(np.float64)
    expected_loss, expected_windows = reference(words, left, count, noise, alphas, expected_inputs, expected_outputs)

    loss, windows = cbow_kernel.train_cbow_chunk(words, left, count, noise, alphas, inputs, outputs)

    assert windows == expected_windows == n - 2
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    # Every window reads rows its predecessors changed, so any batching of the updates would differ here.
    np.testing.assert_allclose(inputs, expected_inputs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-4, atol=1e-5)
