"""Static word vectors: ptm's word2vec (skip-gram, CBOW) and fastText against gensim's, speed and quality.

Both tools train on the same tokens with the same dim, window, negative,
epochs, min_count, sample, learning rates and workers. Speed is corpus words
(before pruning and subsampling) times epochs over training seconds: gensim's
``train()``, ptm's epochs, both without the vocabulary scan and weight
initialisation. "cpu w/s" divides by the CPU seconds of the whole training
call instead (all threads and worker processes; ptm's includes its weight
initialisation), which other work on a shared machine disturbs less. With ``--repeat N`` the tools
alternate N times and each keeps its fastest run. Quality, computed here
with numpy for both:

- Spearman's rho between cosine similarity and the human scores of WordSim-353
  and SimLex-999 (pairs with a word outside the vocabulary are left out and
  counted);
- analogy accuracy on Google's questions-words.txt by 3CosAdd over the 30000
  most frequent words (questions with a word outside them are skipped, as
  gensim's ``evaluate_word_analogies`` does).

    python benchmarks/bench_static_vectors.py [--epochs 1] [--dim 100] [--max-words N] [--models sg,cbow,fasttext]
                                              [--repeat 1] [--buckets 2000000] [--workers 2]

The text is WikiExtractor output: ``<doc ...>``/``</doc>`` lines are skipped,
each other line is a sentence, lowercased and split into runs of letters and
digits (an apostrophe inside a word kept).
"""

from __future__ import annotations

import argparse
import re
import resource
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_INPUT = DATA / "enwiki-sample" / "enwiki_sample.txt"
SIMILARITY_SETS = {"wordsim353": DATA / "word-similarity" / "wordsim353.tsv",
                   "simlex999": DATA / "word-similarity" / "simlex999.txt"}
ANALOGIES = DATA / "word-similarity" / "questions-words.txt"
ANALOGY_RESTRICT = 30000
TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def read_sentences(path: Path, max_words: int | None) -> list[list[str]]:
    sentences, total = [], 0
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.startswith("<doc") or line.startswith("</doc>"):
                continue
            words = TOKEN.findall(line.lower())
            if not words:
                continue
            if max_words is not None and total + len(words) > max_words:
                words = words[: max_words - total]
            sentences.append(words)
            total += len(words)
            if max_words is not None and total >= max_words:
                break
    return sentences


def encode(sentences: list[list[str]]) -> tuple[list[np.ndarray], list[str]]:
    """Word ids in order of first appearance, as a word-level tokenizer would give."""
    ids: dict[str, int] = {}
    encoded = [np.fromiter((ids.setdefault(w, len(ids)) for w in s), dtype=np.int32, count=len(s)) for s in sentences]
    return encoded, list(ids)


# ---- quality, the same code for both tools ----

def read_similarity(path: Path) -> list[tuple[str, str, float]]:
    pairs = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.startswith("#") or not line.strip():
                continue
            first, second, score = line.rstrip("\n").split("\t")[:3]
            pairs.append((first.lower(), second.lower(), float(score)))
    return pairs


def similarity_rho(words: list[str], vectors: np.ndarray, pairs: list[tuple[str, str, float]]) -> tuple[float, int]:
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines, human, missing = [], [], 0
    for first, second, score in pairs:
        if first not in index or second not in index:
            missing += 1
            continue
        cosines.append(float(unit[index[first]] @ unit[index[second]]))
        human.append(score)
    rho = spearmanr(cosines, human).statistic if len(cosines) > 2 else float("nan")
    return float(rho), missing


def read_analogies(path: Path) -> dict[str, list[tuple[str, str, str, str]]]:
    """Questions by kind: ``semantic`` (the sections whose name does not start with ``gram``) and ``syntactic``."""
    questions: dict[str, list] = {"semantic": [], "syntactic": []}
    kind = "semantic"
    with open(path, encoding="utf-8") as file:
        for line in file:
            if line.startswith(":"):
                kind = "syntactic" if line[1:].strip().startswith("gram") else "semantic"
            elif line.strip():
                questions[kind].append(tuple(line.lower().split()))
    return questions


def analogy_accuracy(words: list[str], vectors: np.ndarray, questions: list[tuple[str, str, str, str]],
                     restrict: int = ANALOGY_RESTRICT) -> tuple[float, int, int]:
    """3CosAdd over the first ``restrict`` words (most frequent first); returns (accuracy, answered, skipped)."""
    words, vectors = words[:restrict], vectors[:restrict]
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kept = [tuple(index[w] for w in q) for q in questions if all(w in index for w in q)]
    if not kept:
        return float("nan"), 0, len(questions)
    ids = np.array(kept)
    correct = 0
    for start in range(0, len(ids), 1024):
        a, b, c, d = ids[start:start + 1024].T
        scores = (unit[b] - unit[a] + unit[c]) @ unit.T
        rows = np.arange(len(a))
        for asked in (a, b, c):
            scores[rows, asked] = -np.inf
        correct += int((scores.argmax(axis=1) == d).sum())
    return correct / len(kept), len(kept), len(questions) - len(kept)


def quality(words: list[str], vectors: np.ndarray) -> dict[str, float]:
    result = {}
    for name, path in SIMILARITY_SETS.items():
        result[name], result[f"{name}_oov"] = similarity_rho(words, vectors, read_similarity(path))
    by_kind = read_analogies(ANALOGIES)
    result["analogy"], result["analogy_n"], _ = analogy_accuracy(words, vectors, by_kind["semantic"] + by_kind["syntactic"])
    result["semantic"], _, _ = analogy_accuracy(words, vectors, by_kind["semantic"])
    result["syntactic"], _, _ = analogy_accuracy(words, vectors, by_kind["syntactic"])
    return result


def save_vectors(path: Path, words: list[str], vectors: np.ndarray) -> None:
    """word2vec text, most frequent word first: ``ptm eval --probe`` and gensim's KeyedVectors read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            file.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")


# ---- the two tools ----

def train_gensim(model: str, sentences: list[list[str]], args) -> tuple[float, float, list[str], np.ndarray]:
    from gensim.models import FastText, Word2Vec

    options = dict(vector_size=args.dim, window=args.window, negative=0 if args.hs else args.negative,
                   min_count=args.min_count, sample=args.sample, workers=args.workers, seed=args.seed,
                   sg=0 if model == "cbow" else 1, alpha=alpha_of(model, args), min_alpha=args.min_alpha,
                   hs=1 if args.hs else 0)
    if model == "fasttext":
        built = FastText(bucket=args.buckets, min_n=3, max_n=6, **options)
    else:
        built = Word2Vec(**options)
    built.build_vocab(sentences)
    start, cpu = time.perf_counter(), cpu_seconds()
    built.train(sentences, total_examples=len(sentences), epochs=args.epochs)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return seconds, cpu, list(built.wv.index_to_key), built.wv.vectors


def train_ptm(model: str, encoded: list[np.ndarray], names: list[str], args) -> tuple[float, float, list[str], np.ndarray]:
    from ptmcli.static import fasttext, word2vec
    from ptmcli.static.vocab import Vocabulary

    vocab = Vocabulary.from_sentences(encoded, min_count=args.min_count, words=names)
    common = dict(dim=args.dim, window=args.window, negative=0 if args.hs else args.negative,
                  hierarchical_softmax=args.hs, epochs=args.epochs, sample=args.sample,
                  alpha=alpha_of(model, args), min_alpha=args.min_alpha, workers=args.workers, seed=args.seed,
                  min_count=args.min_count, device=args.device, max_row_updates=args.max_row_updates,
                  batch_words=args.batch_words, kernel=args.kernel)
    cpu = cpu_seconds()
    if model == "fasttext":
        result = fasttext.train(lambda: encoded, vocab, fasttext.FastTextSettings(buckets=args.buckets, **common))
        vectors = result.word_vectors
    else:
        settings = word2vec.Word2VecSettings(architecture="cbow" if model == "cbow" else "skipgram", **common)
        result = word2vec.train(lambda: encoded, vocab, settings)
        vectors = result.vectors
    return result.seconds, cpu_seconds() - cpu, vocab.words, vectors


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (ptm's training workers are processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def alpha_of(model: str, args) -> float:
    if args.alpha is not None:
        return args.alpha
    return 0.05 if model == "cbow" else 0.025


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--models", default="sg,cbow,fasttext")
    parser.add_argument("--tools", default="gensim,ptm")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--hs", action="store_true", help="hierarchical softmax instead of negative sampling")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=None, help="default: 0.025 skip-gram and fastText, 0.05 CBOW")
    parser.add_argument("--min-alpha", type=float, default=1e-4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buckets", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-words", type=int, default=None, help="use only the first N words of the corpus")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-row-updates", type=int, default=16, help="ptm: steps a row takes from one batch unscaled")
    parser.add_argument("--kernel", default="auto", choices=("auto", "batched", "fused"),
                        help="ptm's word2vec CBOW and fastText skip-gram: the compiled loop (fused, needs numba) "
                             "or the batched torch path; auto: the loop where it runs")
    parser.add_argument("--batch-words", type=int, default=1024, help="ptm: centre words per SGD step")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the tools N times, keep each one's fastest run")
    parser.add_argument("--save-vectors", type=Path, default=None,
                        help="write each tool's kept vectors to DIR/{model}-{tool}.txt (word2vec text), after timing")
    args = parser.parse_args()

    sentences = read_sentences(args.input, args.max_words)
    encoded, names = encode(sentences)
    corpus_words = sum(len(s) for s in sentences)
    print(f"corpus: {corpus_words:,} words, {len(sentences):,} sentences, {len(names):,} distinct words; "
          f"dim {args.dim}, window {args.window}, negative {args.negative}, epochs {args.epochs}, "
          f"min_count {args.min_count}, sample {args.sample:g}, workers {args.workers}, buckets {args.buckets:,}"
          f"{', hierarchical softmax' if args.hs else ''}")
    header = (f"{'model':<9} {'tool':<7} {'seconds':>8} {'words/s':>10} {'ratio':>6} {'cpu w/s':>10} {'ratio':>6} "
              f"{'vocab':>7} {'ws353 rho':>9} {'oov':>4} {'simlex rho':>10} {'oov':>4} {'analogy':>8} {'sem':>6} {'syn':>6} {'asked':>6}")
    print(header)
    print("-" * len(header))
    tools = args.tools.split(",")
    for model in args.models.split(","):
        best: dict[str, tuple] = {}
        for _ in range(args.repeat):
            for tool in tools:
                if tool == "gensim":
                    run = train_gensim(model, sentences, args)
                else:
                    run = train_ptm(model, encoded, names, args)
                if tool not in best or run[0] < best[tool][0]:
                    best[tool] = run
        for tool in tools:
            seconds, cpu, words, vectors = best[tool]
            speed, cpu_speed = corpus_words * args.epochs / seconds, corpus_words * args.epochs / cpu
            ratio = cpu_ratio = ""
            if tool != "gensim" and "gensim" in best:
                ratio = f"{seconds and best['gensim'][0] / seconds:.2f}"
                cpu_ratio = f"{best['gensim'][1] / cpu:.2f}"
            vectors = np.asarray(vectors, dtype=np.float32)
            if args.save_vectors is not None:
                save_vectors(args.save_vectors / f"{model}-{tool}.txt", words, vectors)
            q = quality(words, vectors)
            print(f"{model:<9} {tool:<7} {seconds:>8.1f} {speed:>10,.0f} {ratio:>6} {cpu_speed:>10,.0f} {cpu_ratio:>6} "
                  f"{len(words):>7,} {q['wordsim353']:>9.3f} {q['wordsim353_oov']:>4} {q['simlex999']:>10.3f} "
                  f"{q['simlex999_oov']:>4} {q['analogy']:>8.3f} {q['semantic']:>6.3f} {q['syntactic']:>6.3f} "
                  f"{q['analogy_n']:>6}", flush=True)

if __name__ == "__main__":
    main()
