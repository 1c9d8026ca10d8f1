"""fastText word vectors (Bojanowski et al., 2017): word2vec over words and their character n-grams.

A word's vector is the mean of its own row and the rows of its n-grams
(``subwords``), so words that share n-grams share parameters, and a word
never seen in training still gets a vector from its n-grams. The
objectives and the output layer are word2vec's (``output_layer``), trained
the same way; as in fastText, skip-gram predicts each context word from the
centre word's vector, and every row of an input receives the whole step.

In skip-gram training the centre word's input is the sum of its rows over
its number of n-grams, not over the number of rows (fastText's mean): gensim
trains with that scale, and it is the only difference between the two
tools' updates (``benchmarks/fasttext_replay.py`` replays gensim's training
piece by piece). Over six seeds on the Wikipedia sample it was worth 0.007
of analogy accuracy and 0.007 of SimLex-999 rho (WS-353 equal), and it
makes ptm's vectors gensim's in quality (docs/results.md). The vectors
ptm exports are the mean, as fastText's and gensim's are.

Only buckets that some vocabulary word's n-grams hash to are ever trained;
those rows are trained as one compact matrix and written back into the full
``buckets x dim`` n-gram matrix, whose other rows keep their random
initial values (as in fastText, where an unseen n-gram adds noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.static import subword_skipgram_kernel
from ptmcli.static.compiled import rates_along, use_compiled_loop
from ptmcli.static.corpus import SentenceSource
from ptmcli.static.epochs import EpochStats, Rate, resolve_device, train_epochs
from ptmcli.static.progress import ProgressCallback
from ptmcli.static.subwords import ngram_buckets, subword_vector
from ptmcli.static.vocab import Vocabulary
from ptmcli.static.windows import Windows
from ptmcli.static.word2vec import Word2VecSettings, Word2VecTrainer, initial_vectors


@dataclass
class FastTextSettings(Word2VecSettings):
    min_n: int = 3  # shortest character n-gram; with max_n < min_n, words only (plain word2vec)
    max_n: int = 6
    buckets: int = 2_000_000  # hash buckets for n-grams

    def check(self) -> None:
        super().check()
        if self.buckets < 1:
            raise PtmError(f"buckets must be at least 1, got {self.buckets}")
        if self.min_n < 1:
            raise PtmError(f"min_n must be at least 1, got {self.min_n}")


@dataclass
class Subwords:
    """Each vocabulary word's input rows: its own row, then its n-grams' rows (CSR)."""

    rows: np.ndarray  # int64 flat row ids into the training matrix
    starts: np.ndarray  # int64 [V]
    counts: np.ndarray  # int64 [V]

    def gather(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``words`` back to back, and how many belong to each word."""
        counts = self.counts[words]
        before = np.cumsum(counts) - counts
        flat = np.arange(int(counts.sum())) + np.repeat(self.starts[words] - before, counts)
        return self.rows[flat], counts


@dataclass
class FastTextResult:
    word_vectors: np.ndarray  # float32 [V, dim]: each vocabulary word's vector (its row and n-grams averaged)
    word_rows: np.ndarray  # float32 [V, dim]: the words' own input rows
    ngram_vectors: np.ndarray  # float32 [buckets, dim]: the n-gram rows by hash bucket
    output_vectors: np.ndarray | None
    vocab: Vocabulary
    settings: FastTextSettings
    seconds: float = 0.0
    words: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0

    def vector(self, word: str) -> np.ndarray:
        """The vector of any word: trained for vocabulary words, from n-grams otherwise."""
        if self._index is None:
            self._index = self.vocab.index()
        found = self._index.get(word)
        if found is not None:
            return self.word_vectors[found]
        return oov_vector(self, word)


def oov_vector(result: FastTextResult, word: str) -> np.ndarray:
    """A vector for a word outside the vocabulary: the mean of its n-gram rows (zeros if it has none)."""
    settings = result.settings
    found = subword_vector(result.ngram_vectors, word, settings.min_n, settings.max_n, settings.buckets)
    return found if found is not None else np.zeros(result.ngram_vectors.shape[1], dtype=np.float32)


class _FastTextTrainer(Word2VecTrainer):
    def __init__(self, vocab: Vocabulary, settings: FastTextSettings, device: torch.device) -> None:
        if vocab.words is None:
            raise PtmError("fastText needs the text of each vocabulary word for its character n-grams")
        bucket_ids, offsets = ngram_buckets(vocab.words, settings.min_n, settings.max_n, settings.buckets)
        self.used_buckets, compact = np.unique(bucket_ids, return_inverse=True)
        self.vocab_size = len(vocab)
        self.subwords = _subword_rows(self.vocab_size, compact.reshape(-1), offsets)
        super().__init__(vocab, settings, device)

    def initial_input(self, vocab: Vocabulary) -> torch.Tensor:
        """Word rows, then the rows of the buckets in use, all uniform in +-1 / dim as in fastText.

        The full n-gram matrix is drawn first so that every bucket's initial row
        is the same whichever words the vocabulary holds.
        """
        scale = 1.0 / self.settings.dim
        cpu = torch.device("cpu")
        self.ngrams = initial_vectors(self.settings.buckets, self.settings.dim, scale, self.settings.seed + 1, cpu)
        words = initial_vectors(len(vocab), self.settings.dim, scale, self.settings.seed, cpu)
        return torch.cat([words, self.ngrams.index_select(0, torch.from_numpy(self.used_buckets))])

    def _uses_compiled_loop(self) -> bool:
        """Whether chunks take the compiled skip-gram loop (``subword_skipgram_kernel``)."""
        settings = self.settings
        possible = (not self.cbow and settings.negative > 0 and not settings.hierarchical_softmax
                    and self.device.type == "cpu")
        if not use_compiled_loop(settings.kernel, possible, "fastText's skip-gram with negative sampling on the CPU"):
            return False
        subword_skipgram_kernel.compile_now()
        return True

    def _train_fused(self, words: np.ndarray, windows: Windows, rate: Rate,
                     rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        noise = self.outputs.sampler.sample(rng, (int(windows.count.sum()), self.settings.negative))
        loss, examples = subword_skipgram_kernel.train_skipgram_chunk(
            words, windows.left, windows.count, self.subwords.rows,
            self.subwords.starts, self.subwords.counts, noise, rates_along(rate, words.size), self.input.numpy(),
            self.outputs.noise_rows.numpy())
        return torch.tensor(loss), examples

    def _skipgram_step(self, centres: np.ndarray, contexts: np.ndarray, alpha: float,
                       rng: np.random.Generator) -> torch.Tensor:
        rows, counts = self.subwords.gather(centres)
        inputs = self._mean_rows(rows, counts, mode="sum") / self._tensor(np.maximum(counts - 1, 1)).unsqueeze(1)  # gensim's scale (above)
        step, loss = self.outputs.train_window(inputs.unsqueeze(1), contexts, alpha, rng)
        self._apply(rows, counts, step.squeeze(1))
        return loss

    def _cbow_step(self, centres: np.ndarray, contexts: np.ndarray, alpha: float,
                   rng: np.random.Generator) -> torch.Tensor:
        rows, counts = self.subwords.gather(contexts.reshape(-1))
        per_window = counts.reshape(contexts.shape).sum(axis=1)
        inputs = self._mean_rows(rows, per_window)
        step, loss = self.outputs.train(inputs.unsqueeze(1), centres, alpha, rng, self.settings.cbow_noise_share)
        self._apply(rows, per_window, step.squeeze(1))
        return loss

    def _mean_rows(self, rows: np.ndarray, counts: np.ndarray, mode: str = "mean") -> torch.Tensor:
        """Each input's rows (``counts`` of them, back to back in ``rows``) averaged, or summed with ``mode="sum"``."""
        offsets = np.cumsum(counts) - counts
        return F.embedding_bag(self._tensor(rows), self.input, self._tensor(offsets), mode=mode)

    def _apply(self, rows: np.ndarray, counts: np.ndarray, step: torch.Tensor) -> None:
        """Add each input's step to all of its rows."""
        owner = self._tensor(np.repeat(np.arange(counts.size), counts))
        self.updater.add(self.input, self._tensor(rows), step.index_select(0, owner))

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    def word_vectors(self) -> np.ndarray:
        rows, counts = self.subwords.gather(np.arange(self.vocab_size))
        with torch.no_grad():
            return self._mean_rows(rows, counts).cpu().numpy()

    def ngram_matrix(self) -> np.ndarray:
        trained = self.input[self.vocab_size:].cpu()
        self.ngrams.index_copy_(0, torch.from_numpy(self.used_buckets), trained)
        return self.ngrams.numpy()


def _subword_rows(vocab_size: int, compact_buckets: np.ndarray, offsets: np.ndarray) -> Subwords:
    """Word i's rows: i, then vocab_size + the compact index of each of its n-gram buckets."""
    grams = np.diff(offsets)
    counts = grams + 1
    starts = np.cumsum(counts) - counts
    rows = np.empty(int(counts.sum()), dtype=np.int64)
    rows[starts] = np.arange(vocab_size)
    is_gram = np.ones(rows.size, dtype=bool)
    is_gram[starts] = False
    rows[is_gram] = vocab_size + compact_buckets
    return Subwords(rows=rows, starts=starts, counts=counts)


def train(sentences: SentenceSource, vocab: Vocabulary, settings: FastTextSettings | None = None,
          progress: ProgressCallback | None = None) -> FastTextResult:
    """Train fastText vectors on ``sentences()`` (a fresh iterable of word-id arrays per call, one per epoch)."""
    settings = settings or FastTextSettings()
    settings.check()
    device = resolve_device(settings.device)
    trainer = _FastTextTrainer(vocab, settings, device)
    stats: EpochStats = train_epochs(sentences, vocab, trainer.train_chunk, epochs=settings.epochs,
                                     alpha=settings.learning_rate(), min_alpha=settings.min_alpha,
                                     chunk_words=settings.chunk_words, workers=settings.workers, device=device,
                                     share_weights=trainer.share_weights, progress=progress)
    noise_rows = trainer.outputs.noise_rows
    return FastTextResult(
        word_vectors=trainer.word_vectors(), word_rows=trainer.input[:len(vocab)].cpu().numpy(),
        ngram_vectors=trainer.ngram_matrix(),
        output_vectors=noise_rows.cpu().numpy() if noise_rows is not None else None,
        vocab=vocab, settings=settings, seconds=stats.seconds, words=stats.words, epoch_losses=stats.epoch_losses)
