"""The compiled loops (word2vec's CBOW, fastText's skip-gram) against plain references of the per-window SGD."""

from __future__ import annotations

import numpy as np
import pytest

from ptmcli.static import cbow_kernel, subword_skipgram_kernel

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
            score = hidden @ outputs[row]
            probability = 1.0 / (1.0 + np.exp(-score))
            loss -= np.log(probability if label else 1.0 - probability)
            if abs(score) >= 6.0:  # saturated: no update (gensim's rule)
                continue
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
    inputs = np.abs(rng.normal(0, 0.5, (vocab, dim))).astype(np.float32)
    outputs = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    outputs[6] = 10.0  # scores far past 6 (the inputs are positive): saturated, so never updated
    expected_inputs, expected_outputs = inputs.astype(np.float64), outputs.astype(np.float64)
    expected_loss, expected_windows = reference(words, left, count, noise, alphas, expected_inputs, expected_outputs)

    loss, windows = cbow_kernel.train_cbow_chunk(words, left, count, noise, alphas, inputs, outputs)

    assert windows == expected_windows == n - 2
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    # Every window reads rows its predecessors changed, so any batching of the updates would differ here.
    np.testing.assert_allclose(inputs, expected_inputs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-4, atol=1e-5)


def reference_skipgram(words, left, count, rows, starts, counts, noise, alphas, inputs, outputs):
    """fastText's skip-gram: each (centre, context) pair in order, the centre's rows summed afresh over its
    number of n-grams (gensim's scale: rows - 1)."""
    loss, pair = 0.0, 0
    for centre in range(words.size):
        first = centre - left[centre]
        own = rows[starts[words[centre]]:starts[words[centre]] + counts[words[centre]]]
        for position in range(first, first + count[centre] + 1):
            if position == centre:
                continue
            target = words[position]
            hidden = inputs[own].sum(axis=0) / max(1, len(own) - 1)
            error = np.zeros_like(hidden)
            for row, label in [(target, 1.0)] + [(w, 0.0) for w in noise[pair] if w != target]:
                score = hidden @ outputs[row]
                probability = 1.0 / (1.0 + np.exp(-score))
                loss -= np.log(probability if label else 1.0 - probability)
                if abs(score) >= 6.0:
                    continue
                gradient = (label - probability) * alphas[centre]
                error += gradient * outputs[row]
                outputs[row] += gradient * hidden
            for row in own:  # a row listed twice (two n-grams in one bucket) takes the step twice
                inputs[row] += error
            pair += 1
    return loss, pair


def test_subword_skipgram_matches_sequential_sgd_pair_by_pair():
    rng = np.random.default_rng(1)
    vocab, extra_rows, dim, n, negative = 6, 9, 4, 30, 2
    words = rng.integers(0, vocab, n)
    left = np.minimum(np.arange(n), 2)
    count = left + np.minimum(n - 1 - np.arange(n), 2)
    # Word w's rows: itself, then a few n-gram rows (shared between words, one repeated).
    grams = [rng.integers(vocab, vocab + extra_rows, rng.integers(1, 4)) for _ in range(vocab)]
    grams[2] = np.array([vocab + 1, vocab + 1])
    per_word = [np.concatenate([[w], g]) for w, g in enumerate(grams)]
    counts = np.array([len(r) for r in per_word])
    starts = np.cumsum(counts) - counts
    rows = np.concatenate(per_word).astype(np.int64)
    noise = rng.integers(0, vocab, (int(count.sum()), negative))
    alphas = np.linspace(0.05, 0.02, n)
    inputs = rng.normal(0, 0.5, (vocab + extra_rows, dim)).astype(np.float32)
    outputs = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    expected_inputs, expected_outputs = inputs.astype(np.float64), outputs.astype(np.float64)
    expected = reference_skipgram(words, left, count, rows, starts, counts, noise, alphas, expected_inputs,
                                  expected_outputs)

    loss, pairs = subword_skipgram_kernel.train_skipgram_chunk(words, left, count, rows, starts, counts, noise,
                                                                alphas, inputs, outputs)

    assert pairs == expected[1] == count.sum()
    assert loss == pytest.approx(expected[0], rel=1e-4)
    np.testing.assert_allclose(inputs, expected_inputs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-4, atol=1e-5)
