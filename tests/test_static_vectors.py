"""Static word-vector trainers: vocabulary, sampling, word2vec, fastText, GloVe and the feed-forward LM."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
import torch

from ptmcli.data.shards import LMRow
from ptmcli.errors import PtmError
from ptmcli.static import fasttext, glove, nnlm, word2vec
from ptmcli.static.cooccurrence import count_cooccurrences
from ptmcli.static.corpus import iter_chunks, sentences_of_rows, subsample
from ptmcli.static.huffman import build_huffman
from ptmcli.static.subwords import char_ngrams, fnv1a, fnv1a_many, ngram_buckets
from ptmcli.static.vocab import NegativeSampler, Vocabulary, count_words, keep_probabilities
from ptmcli.static.windows import context_positions, sample_windows

# ---- corpora ----


def cluster_corpus(sentences: int = 1500, length: int = 10, per_cluster: int = 10, seed: int = 0):
    """Two topics: each sentence draws its words from one cluster only (ids 0..9 and 10..19)."""
    rng = np.random.default_rng(seed)
    corpus = []
    for _ in range(sentences):
        cluster = rng.integers(2)
        corpus.append((cluster * per_cluster + rng.integers(per_cluster, size=length)).astype(np.int32))
    return corpus


def cluster_gap(vectors: np.ndarray, per_cluster: int = 10) -> tuple[float, float]:
    """Mean cosine of word pairs within a cluster and across clusters."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    cluster = np.arange(len(vectors)) // per_cluster
    same = cluster[:, None] == cluster[None, :]
    off_diagonal = ~np.eye(len(vectors), dtype=bool)
    return float(cosines[same & off_diagonal].mean()), float(cosines[~same].mean())


def vectors_by_id(vectors: np.ndarray, vocab: Vocabulary, ids: int) -> np.ndarray:
    """Rows reordered from vocabulary order (most frequent first) back to the corpus's word ids."""
    out = np.zeros((ids, vectors.shape[1]), dtype=vectors.dtype)
    out[vocab.source_ids] = vectors
    return out


# ---- vocabulary ----


def test_count_words_and_pruning():
    sentences = [np.array([0, 1, 1, 2, 2, 2]), np.array([3, 3, 3, 3, 2]), np.array([], dtype=np.int32)]
    counts = count_words(sentences)
    assert counts.tolist() == [1, 2, 4, 4]
    vocab = Vocabulary.from_counts(counts, min_count=2, words=["a", "b", "c", "d"])
    # Most frequent first, ties by id; the word seen once is pruned.
    assert vocab.source_ids.tolist() == [2, 3, 1]
    assert vocab.words == ["c", "d", "b"]
    assert vocab.counts.tolist() == [4, 4, 2]
    assert vocab.total == 10
    assert vocab.encode(np.array([0, 1, 2, 3, 7])).tolist() == [2, 0, 1]
    assert Vocabulary.from_counts(counts, min_count=1, max_vocab=2).source_ids.tolist() == [2, 3]
    with pytest.raises(PtmError):
        Vocabulary.from_counts(counts, min_count=5)


def test_negative_sampler_follows_count_to_the_three_quarters():
    counts = np.array([1000, 400, 90, 10, 1, 1])
    sampler = NegativeSampler(counts)
    expected = counts**0.75 / (counts**0.75).sum()
    # The alias table gives each word exactly its probability...
    n = counts.size
    exact = sampler.accept.copy()
    np.add.at(exact, sampler.alias, 1.0 - sampler.accept)
    np.testing.assert_allclose(exact / n, expected, rtol=1e-9, atol=1e-12)
    # ...and draws follow it.
    draws = sampler.sample(np.random.default_rng(0), 400_000)
    observed = np.bincount(draws, minlength=n) / draws.size
    np.testing.assert_allclose(observed, expected, atol=3e-3)


def test_keep_probabilities_use_word2vec_formula():
    counts = np.array([100_000, 10_000, 1_000, 10], dtype=np.int64)
    total = counts.sum()
    sample = 1e-3
    keep = keep_probabilities(counts, sample)
    threshold = sample * total
    for count, p in zip(counts, keep):
        assert p == pytest.approx(min(1.0, (math.sqrt(count / threshold) + 1) * threshold / count))
    assert keep[-1] == 1.0 and keep[0] < 0.2
    assert keep_probabilities(counts, 0).tolist() == [1.0] * 4


def test_huffman_codes_are_optimal_prefix_codes():
    counts = np.array([50, 20, 10, 8, 6, 3, 2, 1])
    tree = build_huffman(counts)
    codes = ["".join(str(int(b)) for b in tree.codes[i, :tree.lengths[i]]) for i in range(counts.size)]
    for i, a in enumerate(codes):
        for j, b in enumerate(codes):
            assert i == j or not b.startswith(a)
    assert sum(2.0 ** -len(c) for c in codes) == pytest.approx(1.0)
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    optimal = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        optimal += merged
        heapq.heappush(heap, merged)
    assert int((counts * tree.lengths).sum()) == optimal
    # Paths start at the root (the last inner node) and stay within the inner nodes.
    assert (tree.points[:, 0] == counts.size - 2).all()
    assert tree.points.max() <= counts.size - 2


# ---- chunks and windows ----


def test_chunks_split_long_sentences_and_subsample_keeps_bounds():
    vocab = Vocabulary.from_counts(np.ones(5, dtype=np.int64) * 10, min_count=1)
    sentences = [np.arange(5), np.arange(3), np.arange(5)]
    chunks = list(iter_chunks(sentences, vocab, chunk_words=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 1]
    assert [c.first_word for c in chunks] == [0, 4, 8, 12]
    assert chunks[1].bounds.tolist() == [0, 1, 4]
    keep = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    words, bounds = subsample(chunks[1], keep, np.random.default_rng(0))
    assert words.tolist() == [vocab.lookup()[4], vocab.lookup()[0], vocab.lookup()[2]]
    assert bounds.tolist() == [0, 1, 3]


def test_shard_rows_become_sentences():
    rows = [LMRow(np.array([4, 5, 6, 7, 8], dtype=np.int32), np.array([2, 5], dtype=np.int32), None),
            LMRow(np.array([9], dtype=np.int32), np.array([1], dtype=np.int32), None)]
    assert [s.tolist() for s in sentences_of_rows(rows)] == [[4, 5], [6, 7, 8], [9]]
    assert [s.tolist() for s in sentences_of_rows(rows, by_sentence=False)] == [[4, 5, 6, 7, 8], [9]]


def test_windows_stay_inside_sentences():
    bounds = np.array([0, 4, 4, 11])
    windows = sample_windows(bounds, size=3, words=11, rng=np.random.default_rng(1))
    for centre in range(11):
        start, end = (0, 4) if centre < 4 else (4, 11)
        width = int(windows.count[centre])
        positions = context_positions(np.array([centre]), windows.left[[centre]], width)[0] if width else []
        assert all(start <= p < end and p != centre and abs(p - centre) <= 3 for p in positions)
        assert len(set(positions)) == width


# ---- word2vec ----


def _train_w2v(progress=None, **overrides):
    corpus = cluster_corpus()
    vocab = Vocabulary.from_sentences(corpus, min_count=1)
    options = dict(dim=16, window=3, negative=5, epochs=5, sample=0, workers=1, seed=3, device="cpu",
                   batch_words=128, chunk_words=4096)
    options.update(overrides)
    return word2vec.train(lambda: corpus, vocab, word2vec.Word2VecSettings(**options), progress)


@pytest.mark.parametrize("architecture,extra", [
    ("skipgram", {}),
    ("cbow", {}),
    ("cbow", {"kernel": "batched"}),
    ("cbow", {"kernel": "fused", "workers": 2, "sample": 1e-3}),
    ("skipgram", {"negative": 0, "hierarchical_softmax": True}),
    ("cbow", {"hierarchical_softmax": True}),
    ("skipgram", {"workers": 2, "sample": 1e-3}),
])
def test_word2vec_learns_planted_clusters(architecture, extra):
    result = _train_w2v(architecture=architecture, **extra)
    within, across = cluster_gap(vectors_by_id(result.vectors, result.vocab, 20))
    assert within > 0.5 and within - across > 0.5, (within, across)
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (20, 16)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_word2vec_workers_as_threads_and_as_processes(monkeypatch):
    reports = []
    forked = _train_w2v(workers=2, chunk_words=1000, progress=reports.append)
    assert reports and reports[-1].done == forked.words == 5 * forked.vocab.total
    assert len(forked.epoch_losses) == 5
    # Threads, where fork is unavailable (and on GPUs).
    monkeypatch.setattr("ptmcli.static.epochs.can_fork", lambda device: False)
    threaded = _train_w2v(workers=2, chunk_words=1000)
    for result in (forked, threaded):
        within, across = cluster_gap(vectors_by_id(result.vectors, result.vocab, 20))
        assert within - across > 0.5, (within, across)


def test_a_failing_worker_process_stops_training(capfd):
    vocab = Vocabulary.from_sentences(cluster_corpus(sentences=10), min_count=1)

    def broken_corpus():
        raise ValueError("unreadable shard")

    settings = word2vec.Word2VecSettings(workers=2, device="cpu", epochs=1)
    with pytest.raises(PtmError, match="worker stopped"):
        word2vec.train(broken_corpus, vocab, settings)
    assert "unreadable shard" in capfd.readouterr().err


@pytest.mark.parametrize("architecture", ["skipgram", "cbow"])
def test_word2vec_is_deterministic_with_one_worker(architecture):
    first = _train_w2v(epochs=1, sample=1e-3, architecture=architecture)
    again = _train_w2v(epochs=1, sample=1e-3, architecture=architecture)
    other = _train_w2v(epochs=1, sample=1e-3, seed=4, architecture=architecture)
    np.testing.assert_array_equal(first.vectors, again.vectors)
    assert not np.array_equal(first.vectors, other.vectors)


def test_word2vec_progress_and_linear_learning_rate():
    reports = []
    result = _train_w2v(epochs=2, chunk_words=2000, alpha=0.04, min_alpha=0.001, progress=reports.append)
    assert [r.epoch for r in reports] == sorted(r.epoch for r in reports) and reports[-1].epoch == 2
    assert all(b.done > a.done for a, b in zip(reports, reports[1:]))
    assert reports[-1].done == result.words == 2 * result.vocab.total
    assert reports[-1].fraction == 1.0
    rates = [r.learning_rate for r in reports]
    assert all(b < a for a, b in zip(rates, rates[1:]))
    # Linear in the words trained: the rate after a chunk is alpha minus that share of the range.
    for report in reports:
        assert report.learning_rate == pytest.approx(0.04 - (0.04 - 0.001) * report.fraction)


def test_word2vec_rejects_bad_settings():
    vocab = Vocabulary.from_counts(np.array([5, 5]), min_count=1)
    with pytest.raises(PtmError):
        word2vec.train(lambda: [], vocab, word2vec.Word2VecSettings(architecture="glove", device="cpu"))
    with pytest.raises(PtmError):
        word2vec.train(lambda: [], vocab, word2vec.Word2VecSettings(negative=0, device="cpu"))
    with pytest.raises(PtmError):
        word2vec.train(lambda: [np.array([0])], vocab, word2vec.Word2VecSettings(device="cpu", workers=1))
    with pytest.raises(PtmError, match="unknown kernel"):
        word2vec.train(lambda: [], vocab, word2vec.Word2VecSettings(kernel="cuda", device="cpu"))
    # The compiled loop is CBOW with negative sampling only; asked for elsewhere, it says so.
    with pytest.raises(PtmError, match="fused kernel is word2vec's CBOW"):
        word2vec.train(lambda: [], vocab, word2vec.Word2VecSettings(kernel="fused", device="cpu"))
    with pytest.raises(PtmError, match="fused kernel is word2vec's CBOW"):
        word2vec.train(lambda: [], vocab, word2vec.Word2VecSettings(
            architecture="cbow", kernel="fused", negative=0, hierarchical_softmax=True, device="cpu"))


# ---- fastText ----


def _fnv1a_by_hand(data: bytes, signed_bytes: bool = True) -> int:
    """32-bit FNV-1a as published: xor the byte, multiply by the prime, modulo 2**32."""
    h = 0x811C9DC5
    for byte in data:
        if signed_bytes and byte >= 0x80:
            byte |= 0xFFFFFF00  # fastText reads bytes as signed chars
        h = ((h ^ byte) * 0x01000193) % 2**32
    return h


def test_fnv1a_matches_the_published_algorithm():
    assert fnv1a(b"") == 0x811C9DC5
    assert fnv1a(b"a") == 0xE40C292C
    assert fnv1a(b"foobar") == 0xBF9CF968
    words = [b"<wh", b"where>", b"<a>", "caf\u00e9".encode(), "\u65e5\u672c".encode()]
    assert fnv1a_many(words).tolist() == [_fnv1a_by_hand(w) for w in words]
    assert fnv1a("caf\u00e9".encode()) != _fnv1a_by_hand("caf\u00e9".encode(), signed_bytes=False)


def test_char_ngrams_and_buckets():
    assert char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]
    grams = char_ngrams("where", 3, 6)
    assert len(grams) == 5 + 4 + 3 + 2 and "<where" in grams and "where>" in grams and "<where>" not in grams
    assert "<a>" in char_ngrams("a", 3, 6)
    assert char_ngrams("caf\u00e9", 3, 3)[-1] == "f\u00e9>"  # characters, not bytes
    ids, offsets = ngram_buckets(["where", "a"], 3, 6, 1000)
    assert offsets.tolist() == [0, 14, 15]
    assert ids[0] == _fnv1a_by_hand(b"<wh") % 1000
    assert ((ids >= 0) & (ids < 1000)).all()


def _fasttext_corpus():
    """Two clusters of words that also share spelling within a cluster."""
    stems = ["walking", "talking", "stalking", "balking", "chalking", "baking", "making", "taking"]
    others = ["zebra", "zebras", "zeppelin", "zeppelins", "zenith", "zeniths", "zero", "zeros"]
    names = stems + others
    corpus = [np.array(ids) + (0 if c else 8) for c, ids in
              ((c, np.random.default_rng(i).integers(8, size=8)) for i, c in
               enumerate(np.random.default_rng(1).integers(2, size=1200)))]
    return corpus, names


@pytest.mark.parametrize("architecture,kernel,workers", [
    ("skipgram", "auto", 1), ("skipgram", "batched", 1), ("skipgram", "fused", 2), ("cbow", "auto", 1)])
def test_fasttext_learns_and_builds_oov_vectors(architecture, kernel, workers):
    corpus, names = _fasttext_corpus()
    vocab = Vocabulary.from_sentences(corpus, min_count=1, words=names)
    settings = fasttext.FastTextSettings(architecture=architecture, dim=16, window=3, epochs=5, sample=0,
                                         workers=workers, seed=2, device="cpu", buckets=5000, batch_words=128,
                                         chunk_words=4096, kernel=kernel)
    result = fasttext.train(lambda: corpus, vocab, settings)
    assert result.ngram_vectors.shape == (5000, 16) and result.word_vectors.shape == (16, 16)
    within, across = cluster_gap(vectors_by_id(result.word_vectors, vocab, 16), per_cluster=8)
    assert within - across > 0.3, (within, across)
    # A word's vector is the mean of its own row and its n-gram rows.
    index = vocab.index()
    ids, _ = ngram_buckets(["zebra"], 3, 6, 5000)
    rows = np.vstack([result.word_rows[index["zebra"]], result.ngram_vectors[ids]])
    np.testing.assert_allclose(result.word_vectors[index["zebra"]], rows.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert np.array_equal(result.vector("walking"), result.word_vectors[index["walking"]])


def test_fasttext_oov_vector_is_near_the_word_sharing_its_ngrams():
    # Words with unrelated spellings and distinct contexts (a random Markov chain).
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    names = sorted({"".join(rng.choice(letters, size=7)) for _ in range(24)})
    successors = rng.integers(len(names), size=(len(names), 3))
    corpus = []
    for _ in range(400):
        word, sentence = rng.integers(len(names)), []
        for _ in range(10):
            sentence.append(word)
            word = successors[word, rng.integers(3)]
        corpus.append(np.array(sentence))
    vocab = Vocabulary.from_sentences(corpus, min_count=1, words=names)
    settings = fasttext.FastTextSettings(dim=16, window=2, epochs=3, sample=0, workers=1, device="cpu",
                                         buckets=20_000, batch_words=64, chunk_words=4096)
    result = fasttext.train(lambda: corpus, vocab, settings)
    stem = vocab.words[0]
    unseen = result.vector(stem + "s")
    assert stem + "s" not in vocab.index()
    unit = result.word_vectors / np.linalg.norm(result.word_vectors, axis=1, keepdims=True)
    cosines = unit @ (unseen / np.linalg.norm(unseen))
    assert int(cosines.argmax()) == 0 and cosines[0] > 0.7, cosines
    np.testing.assert_allclose(unseen, fasttext.oov_vector(result, stem + "s"))
    assert not fasttext.oov_vector(result, "").any()  # "<>" has no 3-gram


def test_fasttext_skipgram_trains_on_gensims_input_scale_in_both_paths(monkeypatch):
    """A skip-gram centre's input is its rows summed over its number of n-grams (gensim's scale), batched or not."""
    corpus, names = _fasttext_corpus()
    vocab = Vocabulary.from_sentences(corpus, min_count=1, words=names)
    settings = fasttext.FastTextSettings(dim=8, window=2, sample=0, workers=1, device="cpu", buckets=5000, kernel="batched")
    trainer = fasttext._FastTextTrainer(vocab, settings, torch.device("cpu"))
    seen = []
    monkeypatch.setattr(trainer.outputs, "train_window", lambda inputs, *rest: seen.append(inputs.clone()) or (
        torch.zeros_like(inputs), torch.zeros(())))
    centres = np.array([vocab.index()["zebra"], vocab.index()["walking"]])
    trainer._skipgram_step(centres, np.zeros((2, 1), dtype=np.int64), 0.025, np.random.default_rng(0))
    for centre, got in zip(centres, seen[0][:, 0]):
        rows = trainer.subwords.rows[trainer.subwords.starts[centre]:][:trainer.subwords.counts[centre]]
        expected = trainer.input[torch.from_numpy(rows)].sum(0) / (rows.size - 1)
        torch.testing.assert_close(got, expected)


def test_fasttext_needs_word_texts():
    vocab = Vocabulary.from_counts(np.array([5, 5]), min_count=1)
    with pytest.raises(PtmError):
        fasttext.train(lambda: [], vocab, fasttext.FastTextSettings(device="cpu", buckets=10))


def test_fasttext_cbow_keeps_the_batched_path():
    """fastText's compiled loop is its skip-gram; CBOW (words and n-grams per context) is batched."""
    corpus = cluster_corpus(sentences=50)
    vocab = Vocabulary.from_sentences(corpus, min_count=1, words=[f"word{i}" for i in range(20)])
    options = dict(architecture="cbow", device="cpu", buckets=100, workers=1, epochs=1, dim=8)
    with pytest.raises(PtmError, match="fused kernel is fastText's skip-gram"):
        fasttext.train(lambda: corpus, vocab, fasttext.FastTextSettings(kernel="fused", **options))
    assert fasttext.train(lambda: corpus, vocab, fasttext.FastTextSettings(**options)).word_vectors.shape == (20, 8)


# ---- GloVe ----


def _brute_force_cooccurrences(corpus, vocab, window, symmetric):
    size = len(vocab)
    dense = np.zeros((size, size))
    for sentence in corpus:
        words = vocab.encode(sentence)
        for i in range(words.size):
            for distance in range(1, window + 1):
                if i + distance < words.size:
                    dense[words[i], words[i + distance]] += 1.0 / distance
                    if symmetric:
                        dense[words[i + distance], words[i]] += 1.0 / distance
    return dense


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("max_entries", [10_000_000, 24])
def test_cooccurrence_counts_match_brute_force(symmetric, max_entries, tmp_path):
    rng = np.random.default_rng(5)
    corpus = [rng.integers(0, 30, size=rng.integers(1, 25)) for _ in range(60)]
    vocab = Vocabulary.from_sentences(corpus, min_count=2)
    counts = count_cooccurrences(corpus, vocab, window=4, symmetric=symmetric, max_entries=max_entries,
                                 chunk_words=40, spill_dir=tmp_path)
    try:
        if max_entries < 100:
            assert counts.spilled_runs > 1 and len(counts.blocks) > 1
            assert any(tmp_path.iterdir())
        else:
            assert counts.spilled_runs == 0
        np.testing.assert_allclose(counts.to_dense(), _brute_force_cooccurrences(corpus, vocab, 4, symmetric),
                                   rtol=1e-12)
        for block in range(len(counts.blocks)):
            keys = np.asarray(counts.blocks[block][0])
            assert (np.diff(keys) > 0).all()
    finally:
        counts.close()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_glove_loss_decreases_and_learns_clusters(workers):
    corpus = cluster_corpus(sentences=800)
    vocab = Vocabulary.from_sentences(corpus, min_count=1)
    settings = glove.GloveSettings(dim=16, window=4, epochs=30, x_max=10, batch_size=16, workers=workers,
                                   device="cpu")
    result = glove.train(lambda: corpus, vocab, settings)
    assert result.epoch_losses[-1] < 0.5 * result.epoch_losses[0]
    # Once the fit is near exact, Hogwild's racing updates make the tiny remaining loss jitter by a few
    # percent between epochs; before that it must fall every epoch.
    floor = 0.01 * result.epoch_losses[0]
    assert all(b <= a * 1.05 or b < floor for a, b in zip(result.epoch_losses, result.epoch_losses[1:])), \
        result.epoch_losses
    np.testing.assert_allclose(result.vectors, result.word_vectors + result.context_vectors)
    within, across = cluster_gap(vectors_by_id(result.vectors, result.vocab, 20))
    assert within - across > 0.3, (within, across)


# ---- NNLM ----


def test_nnlm_loss_decreases_on_a_repetitive_corpus():
    # Rotations of one cycle: the first word of a sentence is one of 10, the other 7 follow from it,
    # so the best mean loss is ln(10) / 8 = 0.29 nats per word.
    pattern = np.arange(10)
    corpus = [np.roll(pattern, -k)[:8] for k in range(10)] * 20
    vocab = Vocabulary.from_sentences(corpus, min_count=1)
    settings = nnlm.NNLMSettings(dim=16, context=3, hidden=32, epochs=4, batch_size=32, learning_rate=3e-3,
                                 device="cpu")
    result = nnlm.train(lambda: corpus, vocab, settings)
    assert all(b < a for a, b in zip(result.epoch_losses, result.epoch_losses[1:])), result.epoch_losses
    loss, perplexity = nnlm.evaluate(result.model, corpus, vocab, settings)
    assert perplexity == pytest.approx(math.exp(loss))
    assert loss < 0.4 < result.epoch_losses[0]
    assert result.vectors.shape == (10, 16)


def test_nnlm_direct_connections_only():
    corpus = [np.array([0, 1, 2, 3])] * 50
    vocab = Vocabulary.from_sentences(corpus, min_count=1)
    settings = nnlm.NNLMSettings(dim=8, context=2, hidden=0, direct=True, epochs=3, batch_size=16,
                                 learning_rate=1e-2, device="cpu")
    result = nnlm.train(lambda: corpus, vocab, settings)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    examples, targets = nnlm.examples(np.array([5, 6, 7]), np.array([0, 1, 3]), 2, boundary=9)
    assert examples.tolist() == [[9, 9], [9, 9], [9, 6]] and targets.tolist() == [5, 6, 7]
