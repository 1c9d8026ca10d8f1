"""gensim's fastText skip-gram replayed step by step, to find what separates its vectors from ptm's.

gensim 4's fastText (skip-gram, negative sampling) is re-run here as a numba
loop from the same vocabulary, n-gram buckets, initial vectors and random
streams: its per-job 48-bit linear congruential generator for subsampling and
noise words, its ``RandomState`` for window sizes, one learning rate per job
of 10,000 words. With every switch at gensim's setting the replay's vectors
give gensim's figures (``--check`` compares the weights with gensim's own
``train()`` on a short prefix). Each switch then swaps one piece for ptm's:

- ``--streams numpy``: independent numpy draws for subsampling, windows and
  noise words, through ptm's own keep probabilities and noise sampler,
  instead of gensim's generators;
- ``--divisor rows``: a word's input is the mean of its own row and its
  n-gram rows (fastText's definition, and ptm's until it took gensim's)
  rather than their sum over the number of n-grams alone (gensim's, ptm's);
- ``--sigmoid exact`` and ``--saturate 6``: the exact logistic and ptm's
  no-update band (|score| >= 6) instead of gensim's fastText table (512 bins,
  no update at |score| >= 8);
- ``--ptm-loop``: the training itself by ptm's compiled loop
  (``ptmcli.static.subword_skipgram_kernel``) fed the same words, windows and
  noise words (needs ``--streams numpy --divisor ngrams --saturate 6``).

    python benchmarks/fasttext_replay.py --check --max-words 30000 --epochs 2 --dim 20
    python benchmarks/fasttext_replay.py --check --max-words 30000 --epochs 2 --dim 20 --streams numpy --saturate 6 \
        --sigmoid exact --ptm-loop                                                  # ptm's loop = the replay's
    python benchmarks/fasttext_replay.py --seed 1                                   # gensim's figures
    python benchmarks/fasttext_replay.py --seed 1 --streams numpy --divisor rows    # one piece at a time
"""

from __future__ import annotations

import argparse
import copy
import time

import numba
import numpy as np
from bench_static_vectors import DEFAULT_INPUT, quality, read_sentences

from ptmcli.static.subword_skipgram_kernel import train_skipgram_chunk
from ptmcli.static.vocab import NegativeSampler, keep_probabilities
from ptmcli.static.windows import windows_of_reach

MAX_SENTENCE = 10_000  # gensim's words per job (MAX_WORDS_IN_BATCH), also its cap on one job's kept words
LCG_MULTIPLIER, LCG_INCREMENT, LCG_MASK = np.uint64(25214903917), np.uint64(11), np.uint64((1 << 48) - 1)
SHIFT = np.uint64(16)


@numba.njit
def _next(state):
    return (state * LCG_MULTIPLIER + LCG_INCREMENT) & LCG_MASK


@numba.njit
def _subsample(tokens, bounds, state, sample_int, use_state, kept, sentence_starts):  # pragma: no cover - compiled
    """gensim's ``populate_ft_config``: kept words (out-of-vocabulary ones are -1 in ``tokens``) and sentence starts."""
    count = 0
    sentences = 0
    sentence_starts[0] = 0
    for s in range(bounds.size - 1):
        if bounds[s + 1] == bounds[s]:
            continue
        for t in range(bounds[s], bounds[s + 1]):
            word = tokens[t]
            if word < 0:
                continue
            if use_state:
                draw = state >> SHIFT
                state = _next(state)
                if np.uint64(sample_int[word]) < draw:
                    continue
            kept[count] = word
            count += 1
            if count == MAX_SENTENCE:
                break
        sentences += 1
        sentence_starts[sentences] = count
        if count == MAX_SENTENCE:
            break
    return count, sentences, state


@numba.njit
def _bisect(table, value):  # pragma: no cover - compiled
    low, high = 0, table.size
    while low < high:
        middle = (low + high) // 2
        if np.uint64(table[middle]) < value:
            low = middle + 1
        else:
            high = middle
    return low


@numba.njit
def _train_job(words, sentence_starts, sentences, reduced, window, state, cum_table, buckets, starts, counts,
               divide_by_rows, sigmoid_table, use_table, saturate, word_rows, ngram_rows, outputs, alpha, negative,
               noise, use_noise):  # pragma: no cover - compiled
    """gensim's ``fasttext_train_any`` + ``fasttext_fast_sentence_sg_neg`` for one job."""
    dim = outputs.shape[1]
    hidden = np.zeros(dim, np.float32)
    error = np.zeros(dim, np.float32)
    total = np.uint64(cum_table[cum_table.size - 1])
    bins = np.float32(sigmoid_table.size / saturate / 2.0)
    drawn = 0
    for s in range(sentences):
        first, end = sentence_starts[s], sentence_starts[s + 1]
        for i in range(first, end):
            low = max(first, i - window + reduced[i])
            high = min(end, i + window + 1 - reduced[i])
            centre = words[i]
            begin, grams = starts[centre], counts[centre]
            for j in range(low, high):
                if j == i:
                    continue
                target = words[j]
                for k in range(dim):
                    hidden[k] = word_rows[centre, k]
                    error[k] = 0.0
                for at in range(begin, begin + grams):
                    for k in range(dim):
                        hidden[k] += ngram_rows[buckets[at], k]
                if grams > 0:
                    scale = np.float32(1.0) / np.float32(grams + 1 if divide_by_rows else grams)
                    for k in range(dim):
                        hidden[k] *= scale
                for d in range(negative + 1):
                    if d == 0:
                        row, label = target, np.float32(1.0)
                    else:
                        if use_noise:
                            row = noise[drawn]
                            drawn += 1
                        else:
                            row = _bisect(cum_table, (state >> SHIFT) % total)
                            state = _next(state)
                        if row == target:
                            continue
                        label = np.float32(0.0)
                    score = np.float32(0.0)
                    for k in range(dim):
                        score += hidden[k] * outputs[row, k]
                    if score <= -saturate or score >= saturate:
                        continue
                    if use_table:
                        probability = sigmoid_table[int((score + saturate) * bins)]
                    else:
                        probability = np.float32(1.0) / (np.float32(1.0) + np.exp(-score))
                    step = (label - probability) * alpha
                    for k in range(dim):
                        error[k] += step * outputs[row, k]
                    for k in range(dim):
                        outputs[row, k] += step * hidden[k]
                for k in range(dim):
                    word_rows[centre, k] += error[k]
                for at in range(begin, begin + grams):
                    for k in range(dim):
                        ngram_rows[buckets[at], k] += error[k]
    return state


def build_gensim(sentences, args):
    from gensim.models import FastText

    model = FastText(vector_size=args.dim, window=args.window, negative=args.negative, min_count=args.min_count,
                     sample=args.sample, workers=1, seed=args.seed, sg=1, alpha=args.alpha, min_alpha=args.min_alpha,
                     bucket=args.buckets, min_n=3, max_n=6)
    model.build_vocab(sentences)
    return model


def replay(model, sentences, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train a copy of ``model``'s initial weights as gensim would (with the switches); returns
    (word vectors as gensim composes them, word rows, n-gram rows)."""
    wv = model.wv
    tokens = np.array([wv.key_to_index.get(t, -1) for s in sentences for t in s], dtype=np.int64)
    lengths = np.array([len(s) for s in sentences])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    per_word = [np.asarray(b, dtype=np.int64) for b in wv.buckets_word]
    counts = np.array([b.size for b in per_word], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    buckets = np.concatenate(per_word)
    word_rows, ngram_rows = wv.vectors_vocab.copy(), wv.vectors_ngrams.copy()
    outputs = np.zeros_like(word_rows)
    saturate = np.float32(args.saturate)
    bins = int(512 * args.saturate / 8)  # gensim's fastText bin width: 512 bins over -8..8
    table = np.exp((np.arange(bins) / bins * 2 - 1) * args.saturate)
    table = (table / (table + 1)).astype(np.float32)
    sample_int = wv.expandos["sample_int"].astype(np.uint64)
    word_counts = wv.expandos["count"]
    keep = keep_probabilities(word_counts, args.sample) if args.sample > 0 else np.ones(word_counts.size)
    sampler = NegativeSampler(word_counts)
    random_state = copy.deepcopy(model.random)
    numpy_rng = np.random.default_rng(args.seed + 100)
    jobs, job, size = [], [], 0  # gensim's jobs: whole sentences up to 10,000 words
    for index, length in enumerate(lengths):
        if size + length <= MAX_SENTENCE:
            job.append(index)
            size += length
        else:
            jobs.append(job)
            job, size = [index], length
    if job:
        jobs.append(job)
    kept = np.empty(MAX_SENTENCE, np.int64)
    sentence_starts = np.empty(MAX_SENTENCE + 1, np.int64)
    ptm_inputs = ptm_rows = ptm_starts = None
    vocab = word_rows.shape[0]
    if args.ptm_loop:
        # ptm's layout: one matrix, word w's rows are w and then vocab + each of its buckets.
        ptm_inputs = np.vstack([word_rows, ngram_rows])
        ptm_rows = np.concatenate([np.concatenate([[w], vocab + per_word[w]]) for w in range(vocab)]).astype(np.int64)
        ptm_starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]]).astype(np.int64)
    numpy_streams = args.streams == "numpy"

    def rate(epoch: int, sentences_done: int) -> float:
        """gensim's rate for the next job: linear in the sentences pushed over all epochs."""
        progress = (epoch + sentences_done / len(sentences)) / args.epochs
        return max(args.min_alpha, args.alpha - (args.alpha - args.min_alpha) * progress)

    for epoch in range(args.epochs):
        done = 0
        for job in jobs:
            alpha = rate(epoch, done)
            first, last = offsets[job[0]], offsets[job[-1] + 1]
            bounds = offsets[job[0]: job[-1] + 2] - first
            state = np.uint64((2 ** 24) * random_state.randint(0, 2 ** 24) + random_state.randint(0, 2 ** 24))
            words = tokens[first:last]
            if numpy_streams:
                words = words.copy()
                known = words >= 0
                words[known & (numpy_rng.random(words.size) >= keep[np.maximum(words, 0)])] = -1
            count, sentences_kept, state = _subsample(words, bounds, state, sample_int,
                                                      args.sample > 0 and not numpy_streams, kept, sentence_starts)
            reduced = random_state.randint(0, args.window, count).astype(np.int64)
            if numpy_streams:
                reduced = numpy_rng.integers(0, args.window, count).astype(np.int64)
            windows = windows_of_reach(sentence_starts[:sentences_kept + 1], args.window - reduced)
            noise = np.empty(0, np.int64)
            if numpy_streams:
                noise = sampler.sample(numpy_rng, int(windows.count.sum()) * args.negative)
            if args.ptm_loop:
                train_skipgram_chunk(kept[:count].copy(), windows.left, windows.count, ptm_rows, ptm_starts, counts + 1,
                                     noise.reshape(-1, args.negative), np.full(count, alpha, np.float32), ptm_inputs,
                                     outputs)
            else:
                _train_job(kept, sentence_starts, sentences_kept, reduced, args.window, state, model.cum_table,
                           buckets, starts, counts, args.divisor == "rows", table, args.sigmoid == "table", saturate,
                           word_rows, ngram_rows, outputs, np.float32(alpha), args.negative, noise, numpy_streams)
            done += len(job)
    if args.ptm_loop:
        word_rows, ngram_rows = ptm_inputs[:vocab], ptm_inputs[vocab:]
    vectors = np.stack([(word_rows[w] + ngram_rows[per_word[w]].sum(0)) / (per_word[w].size + 1) for w in range(vocab)])
    return vectors.astype(np.float32), word_rows, ngram_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEFAULT_INPUT))
    parser.add_argument("--max-words", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.025)
    parser.add_argument("--min-alpha", type=float, default=1e-4)
    parser.add_argument("--buckets", type=int, default=2_000_000)
    parser.add_argument("--streams", choices=("gensim", "numpy"), default="gensim")
    parser.add_argument("--divisor", choices=("ngrams", "rows"), default="ngrams")
    parser.add_argument("--sigmoid", choices=("table", "exact"), default="table")
    parser.add_argument("--saturate", type=float, choices=(8.0, 6.0), default=8.0)
    parser.add_argument("--ptm-loop", action="store_true")
    parser.add_argument("--check", action="store_true", help="compare the replayed weights with gensim's train() "
                        "(with --ptm-loop: ptm's loop with the replay's own)")
    args = parser.parse_args()
    if args.ptm_loop and not (args.streams == "numpy" and args.divisor == "ngrams" and args.saturate == 6.0):
        parser.error("--ptm-loop runs ptm's loop: it needs --streams numpy --divisor ngrams --saturate 6")
    sentences = read_sentences(args.input, args.max_words)
    model = build_gensim(sentences, args)
    start = time.perf_counter()
    vectors, word_rows, ngram_rows = replay(model, sentences, args)
    seconds = time.perf_counter() - start
    if args.check and args.ptm_loop:
        _, own_words, own_ngrams = replay(model, sentences, argparse.Namespace(**{**vars(args), "ptm_loop": False}))
        print(f"largest difference from the replay's own loop: word rows {np.abs(word_rows - own_words).max():.2e}, "
              f"n-gram rows {np.abs(ngram_rows - own_ngrams).max():.2e} (mean |weight| {np.abs(own_words).mean():.2e})")
        return
    if args.check:
        model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
        print(f"largest difference from gensim's train(): word rows {np.abs(word_rows - model.wv.vectors_vocab).max():.2e}, "
              f"n-gram rows {np.abs(ngram_rows - model.wv.vectors_ngrams).max():.2e} "
              f"(mean |weight| {np.abs(model.wv.vectors_vocab).mean():.2e})")
        return
    figures = quality(list(model.wv.index_to_key), vectors)
    switches = f"streams {args.streams}, divisor {args.divisor}, sigmoid {args.sigmoid}, saturate {args.saturate:g}"
    print(f"seed {args.seed} | {switches}{', ptm loop' if args.ptm_loop else ''} | {seconds:.0f} s | "
          f"WS-353 {figures['wordsim353']:.3f} SimLex {figures['simlex999']:.3f} analogy {figures['analogy']:.3f} "
          f"(sem {figures['semantic']:.3f} syn {figures['syntactic']:.3f})", flush=True)


if __name__ == "__main__":
    main()
