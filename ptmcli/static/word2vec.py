"""word2vec (Mikolov et al., 2013): skip-gram and CBOW with negative sampling or hierarchical softmax.

Plain SGD on sparse rows, as the original: a step gathers the rows a batch of
centre words touches, scores them with small matrix products and adds the
updates back with ``index_add_``; nothing dense is differentiated. Batches
hold ``batch_words`` centre words whose windows have the same number of
contexts, so each batch is a few ``[n, m, d] x [n, d, K]`` products. A row
that one batch updates many times has those steps capped (``row_updates``).
Workers (forked processes on the CPU) take chunks of the corpus and share
the weights (``hogwild``); the learning rate falls linearly over all epochs
(``epochs``).

Skip-gram follows the original's pairing: each context word's input vector
predicts the centre word. The centre word and its negative samples are the
output rows of the whole window, so a window's ``m`` pairs share their noise
words (word2vec draws fresh ones per pair; sharing them is what makes the
window one matrix product, and costs no measurable accuracy, see
``output_layer``). CBOW predicts the centre word from the mean of the context
vectors and, as the original does, adds the whole error to every context
row; groups of ``cbow_noise_share`` windows share their noise draws.

On the CPU, CBOW with negative sampling takes a compiled loop instead
(``cbow_kernel``, numba): CBOW's work per window is too small for the batched
path's gathers to pay off, and the loop is the original's sequential SGD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.static import cbow_kernel
from ptmcli.static.compiled import KERNELS, rates_along, use_compiled_loop
from ptmcli.static.corpus import Chunk, SentenceSource, subsample
from ptmcli.static.epochs import EpochStats, Rate, resolve_device, train_epochs
from ptmcli.static.hogwild import shared_tensor
from ptmcli.static.output_layer import OutputLayer
from ptmcli.static.progress import ProgressCallback
from ptmcli.static.row_updates import RowUpdater
from ptmcli.static.vocab import Vocabulary, keep_probabilities
from ptmcli.static.windows import (
    Windows,
    batches_by_count,
    context_positions,
    groups_by_count,
    sample_windows,
)

ARCHITECTURES = ("skipgram", "cbow")


@dataclass
class Word2VecSettings:
    architecture: str = "skipgram"  # or "cbow"
    dim: int = 100
    window: int = 5  # largest distance between centre and context; each centre draws 1..window
    negative: int = 5  # noise words per window; 0 with hierarchical_softmax for that alone
    hierarchical_softmax: bool = False
    epochs: int = 5
    min_count: int = 5  # for building the Vocabulary (Vocabulary.from_counts)
    max_vocab: int | None = None
    sample: float = 1e-3  # frequent-word subsampling threshold; 0 keeps every word
    alpha: float | None = None  # first learning rate; None: 0.025 skip-gram, 0.05 CBOW
    min_alpha: float = 1e-4  # the learning rate at the end of the last epoch
    workers: int = 0  # 0: one per CPU. One worker gives the same vectors for the same seed
    seed: int = 1
    batch_words: int = 1024  # centre words per SGD step
    cbow_noise_share: int = 8  # CBOW windows that share one draw of noise words (see output_layer)
    max_row_updates: int = 16  # most steps a row takes from one batch before they are scaled (row_updates)
    chunk_words: int = 50_000  # words a worker takes at a time
    device: str = "auto"  # "cpu", "cuda", or "auto" (CUDA when available)
    # With negative sampling on the CPU, word2vec's CBOW and fastText's skip-gram have a compiled per-window
    # loop ("fused", needs numba; ``compiled``); "batched" is the torch path; "auto" takes the loop where it runs.
    kernel: str = "auto"

    def learning_rate(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 0.025 if self.architecture == "skipgram" else 0.05

    def check(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise PtmError(f"unknown word2vec architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        for name in ("dim", "window", "epochs", "batch_words", "chunk_words", "cbow_noise_share", "max_row_updates"):
            if getattr(self, name) < 1:
                raise PtmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kernel not in KERNELS:
            raise PtmError(f"unknown kernel {self.kernel!r}; use one of {', '.join(KERNELS)}")
        if self.negative < 0:
            raise PtmError(f"negative must not be negative, got {self.negative}")
        if self.negative == 0 and not self.hierarchical_softmax:
            raise PtmError("set negative > 0, hierarchical softmax, or both: there is no output layer otherwise")
        if self.learning_rate() <= 0 or self.min_alpha < 0:
            raise PtmError("the learning rates must be positive")


@dataclass
class Word2VecResult:
    vectors: np.ndarray  # float32 [V, dim]: the input vectors, the word vectors one exports
    output_vectors: np.ndarray | None  # float32 [V, dim]: negative-sampling output rows, if trained
    vocab: Vocabulary
    settings: Word2VecSettings
    seconds: float = 0.0
    words: int = 0  # words read over all epochs, before subsampling
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def words_per_second(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else 0.0


def initial_vectors(rows: int, dim: int, scale: float, seed: int, device: torch.device) -> torch.Tensor:
    """Uniform in [-scale, scale), the same for the same seed on any device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.empty(rows, dim).uniform_(-scale, scale, generator=generator).to(device)


class Word2VecTrainer:
    """The weights and the per-chunk SGD of word2vec; fastText's trainer changes only the input side."""

    def __init__(self, vocab: Vocabulary, settings: Word2VecSettings, device: torch.device) -> None:
        self.settings = settings
        self.device = device
        self.input = self.initial_input(vocab).to(device)
        self.updater = RowUpdater(settings.max_row_updates)
        self.outputs = OutputLayer(vocab.counts, settings.dim, settings.negative, settings.hierarchical_softmax,
                                   device, self.updater)
        self.keep = keep_probabilities(vocab.counts, settings.sample) if settings.sample > 0 else None
        self.cbow = settings.architecture == "cbow"
        self.fused = self._uses_compiled_loop()

    def _uses_compiled_loop(self) -> bool:
        """Whether chunks take the compiled CBOW loop (``cbow_kernel``) rather than the batched path."""
        settings = self.settings
        possible = (self.cbow and settings.negative > 0 and not settings.hierarchical_softmax
                    and self.device.type == "cpu")
        if not use_compiled_loop(settings.kernel, possible, "word2vec's CBOW with negative sampling on the CPU"):
            return False
        cbow_kernel.compile_now()
        return True

    def share_weights(self) -> None:
        """Move every trained tensor to shared memory, for forked workers (``hogwild``)."""
        self.input = shared_tensor(self.input)
        self.outputs.share_weights()

    def initial_input(self, vocab: Vocabulary) -> torch.Tensor:
        """The input rows before training: uniform in +-1 / dim, as gensim and fastText draw them.

        word2vec.c draws +-0.5 / dim; on the Wikipedia sample the wider start gave
        CBOW about 0.005 more analogy accuracy over four seeds (docs/results.md).
        """
        return initial_vectors(len(vocab), self.settings.dim, 1.0 / self.settings.dim, self.settings.seed,
                               torch.device("cpu"))

    def train_chunk(self, chunk: Chunk, epoch: int, rate: Rate) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng((self.settings.seed, epoch, chunk.index))
        words, bounds = subsample(chunk, self.keep, rng)
        windows = sample_windows(bounds, self.settings.window, words.size, rng)
        if self.fused:
            return self._train_fused(words, windows, rate, rng)
        batches = list(batches_by_count(windows, self.settings.batch_words))
        loss = torch.zeros((), device=self.device)
        examples = 0
        for number, centres in enumerate(batches):
            alpha = rate(number / len(batches))
            for width, group in groups_by_count(centres, windows.count):
                contexts = words[context_positions(group, windows.left[group], width)]
                loss = loss + self._step(words[group], contexts, alpha, rng)
                examples += group.size if self.cbow else contexts.size
        return loss, examples

    def _train_fused(self, words: np.ndarray, windows: Windows, rate: Rate,
                     rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        noise = self.outputs.sampler.sample(rng, (words.size, self.settings.negative))
        loss, examples = cbow_kernel.train_cbow_chunk(
            words, windows.left, windows.count, noise, rates_along(rate, words.size),
            self.input.numpy(), self.outputs.noise_rows.numpy())
        return torch.tensor(loss), examples

    def _step(self, centres: np.ndarray, contexts: np.ndarray, alpha: float, rng: np.random.Generator) -> torch.Tensor:
        if self.cbow:
            return self._cbow_step(centres, contexts, alpha, rng)
        return self._skipgram_step(centres, contexts, alpha, rng)

    def _skipgram_step(self, centres: np.ndarray, contexts: np.ndarray, alpha: float,
                       rng: np.random.Generator) -> torch.Tensor:
        n, width = contexts.shape
        context_rows = torch.from_numpy(contexts.reshape(-1)).to(self.device, non_blocking=True)
        inputs = self.input.index_select(0, context_rows).view(n, width, -1)
        scale = self.updater.scale(context_rows, self.input.shape[0])
        step, loss = self.outputs.train(inputs, centres, alpha, rng,
                                        input_scale=None if scale is None else scale.view(n, width))
        self.input.index_add_(0, context_rows, step.reshape(n * width, -1))
        return loss

    def _cbow_step(self, centres: np.ndarray, contexts: np.ndarray, alpha: float,
                   rng: np.random.Generator) -> torch.Tensor:
        n = contexts.shape[0]
        # Gathering and averaging in one kernel, and one index_add_ per window slot,
        # spare the [n, m, d] copies that would dominate CBOW's cost.
        by_slot = torch.from_numpy(np.ascontiguousarray(contexts.T)).to(self.device, non_blocking=True)
        inputs = F.embedding_bag(by_slot.t(), self.input, mode="mean").unsqueeze(1)
        step, loss = self.outputs.train(inputs, centres, alpha, rng, self.settings.cbow_noise_share)
        self.updater.add_to_slots(self.input, by_slot, step.view(n, -1))
        return loss


def train(sentences: SentenceSource, vocab: Vocabulary, settings: Word2VecSettings | None = None,
          progress: ProgressCallback | None = None) -> Word2VecResult:
    """Train word2vec on ``sentences()`` (a fresh iterable of word-id arrays per call, one per epoch)."""
    settings = settings or Word2VecSettings()
    settings.check()
    device = resolve_device(settings.device)
    trainer = Word2VecTrainer(vocab, settings, device)
    stats: EpochStats = train_epochs(sentences, vocab, trainer.train_chunk, epochs=settings.epochs,
                                     alpha=settings.learning_rate(), min_alpha=settings.min_alpha,
                                     chunk_words=settings.chunk_words, workers=settings.workers, device=device,
                                     share_weights=trainer.share_weights, progress=progress)
    noise_rows = trainer.outputs.noise_rows
    return Word2VecResult(
        vectors=trainer.input.cpu().numpy(),
        output_vectors=noise_rows.cpu().numpy() if noise_rows is not None else None,
        vocab=vocab, settings=settings, seconds=stats.seconds, words=stats.words, epoch_losses=stats.epoch_losses)
