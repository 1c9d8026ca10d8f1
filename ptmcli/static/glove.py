"""GloVe (Pennington et al., 2014): word vectors from a weighted least-squares fit to log co-occurrences.

Minimises ``sum f(X_ij) (w_i . c_j + b_i + b~_j - log X_ij)^2`` over the
non-zero counts, with ``f(x) = min(1, (x / x_max) ** power)``, by AdaGrad on
batches of shuffled entries. A batch's gradients for the same row are summed
before the AdaGrad step (AdaGrad's per-coordinate scaling keeps large sums in
check). The exported vector of a word is ``w + c``, its word and context
vectors summed, as the reference implementation writes by default.

Workers take slices of the shuffled entries and update the shared
parameters without locks, as the reference's threads do (``hogwild``).
Counts are visited a block at a time (``cooccurrence``), blocks in random
order and entries shuffled within each, so training memory stays bounded
like counting does; when the counts fit in memory there is one block and the
shuffle is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.static.cooccurrence import Cooccurrences, count_cooccurrences, entries_for_memory
from ptmcli.static.corpus import SentenceSource
from ptmcli.static.epochs import resolve_device
from ptmcli.static.hogwild import (
    can_fork,
    resolve_workers,
    run_forked,
    run_jobs,
    shared_tensor,
    single_threaded_kernels,
)
from ptmcli.static.progress import Progress, ProgressCallback
from ptmcli.static.vocab import Vocabulary


@dataclass
class GloveSettings:
    dim: int = 100
    window: int = 10
    symmetric: bool = True
    x_max: float = 100.0
    power: float = 0.75  # the paper's alpha in f(x) = (x / x_max) ** alpha
    learning_rate: float = 0.05
    epochs: int = 25
    min_count: int = 5  # for building the Vocabulary
    max_vocab: int | None = None
    memory_mb: int = 1024  # for co-occurrence counting; above it, sorted runs go to disk
    batch_size: int = 16_384  # co-occurrence entries per AdaGrad step
    workers: int = 0  # workers updating the shared vectors (Hogwild, as the reference); 0: one per CPU
    seed: int = 1
    device: str = "auto"
    spill_dir: str | None = None  # where spilled runs go (default: the system's temporary directory)

    def check(self) -> None:
        for name in ("dim", "window", "epochs", "batch_size", "memory_mb"):
            if getattr(self, name) < 1:
                raise PtmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.x_max <= 0 or self.learning_rate <= 0:
            raise PtmError("x_max and learning_rate must be positive")


@dataclass
class GloveResult:
    vectors: np.ndarray  # float32 [V, dim]: word + context vectors
    word_vectors: np.ndarray
    context_vectors: np.ndarray
    word_biases: np.ndarray
    context_biases: np.ndarray
    vocab: Vocabulary
    settings: GloveSettings
    cooccurrences: int = 0  # non-zero entries trained on
    seconds: float = 0.0  # training, not counting
    epoch_losses: list[float] = field(default_factory=list)  # mean 0.5 * f * diff^2 per entry


_BATCHES_PER_JOB = 8  # batches a worker takes at a time


class _AdaGradRows:
    """A parameter matrix with AdaGrad's sums of squared steps, updated a batch of rows at a time.

    As in the reference implementation, the sums start at 1 and add the squares
    of the steps (learning rate times gradient), not of the bare gradients,
    which keeps later steps larger than textbook AdaGrad at the same rate.
    """

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values
        self.squares = torch.ones_like(values)

    def share_weights(self) -> None:
        """Move both tensors to shared memory, for forked workers."""
        self.values = shared_tensor(self.values)
        self.squares = shared_tensor(self.squares)

    def step(self, rows: torch.Tensor, gradients: torch.Tensor, learning_rate: float) -> None:
        unique, inverse = torch.unique(rows, return_inverse=True)
        steps = torch.zeros((unique.numel(),) + gradients.shape[1:], dtype=gradients.dtype, device=gradients.device)
        steps.index_add_(0, inverse, gradients, alpha=learning_rate)
        squares = self.squares.index_select(0, unique)
        self.values.index_add_(0, unique, steps / squares.sqrt(), alpha=-1.0)
        self.squares.index_add_(0, unique, steps * steps)


def _batch_step(params: dict[str, _AdaGradRows], rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor,
                settings: GloveSettings) -> torch.Tensor:
    words = params["words"].values.index_select(0, rows)
    contexts = params["contexts"].values.index_select(0, cols)
    diff = ((words * contexts).sum(dim=1) + params["word_biases"].values.index_select(0, rows)
            + params["context_biases"].values.index_select(0, cols) - counts.log())
    weight = (counts / settings.x_max).pow(settings.power).clamp(max=1.0)
    weighted = weight * diff
    rate = settings.learning_rate
    params["words"].step(rows, weighted.unsqueeze(1) * contexts, rate)
    params["contexts"].step(cols, weighted.unsqueeze(1) * words, rate)
    params["word_biases"].step(rows, weighted, rate)
    params["context_biases"].step(cols, weighted, rate)
    return 0.5 * (weighted * diff).sum()


def fit(cooccurrences: Cooccurrences, vocab: Vocabulary, settings: GloveSettings,
        progress: ProgressCallback | None = None) -> GloveResult:
    """Fit GloVe vectors to counted co-occurrences."""
    settings.check()
    device = resolve_device(settings.device)
    size, dim = len(vocab), settings.dim
    generator = torch.Generator().manual_seed(settings.seed)

    def initial(*shape: int) -> torch.Tensor:
        return torch.empty(*shape).uniform_(-0.5 / dim, 0.5 / dim, generator=generator).to(device)

    params = {"words": _AdaGradRows(initial(size, dim)), "contexts": _AdaGradRows(initial(size, dim)),
              "word_biases": _AdaGradRows(initial(size)), "context_biases": _AdaGradRows(initial(size))}
    total = len(cooccurrences)
    if total == 0:
        raise PtmError("no two vocabulary words occur within the window; give more text or lower --min-count")
    job_size = settings.batch_size * _BATCHES_PER_JOB
    start = time.perf_counter()

    def jobs(epoch: int):
        """The epoch's shuffled slices of entries; the same in every worker process, from the seed."""
        rng = np.random.default_rng((settings.seed, epoch))
        for block in rng.permutation(len(cooccurrences.blocks)):
            triples = cooccurrences.triples(int(block))
            order = rng.permutation(triples[0].size)
            for first in range(0, order.size, job_size):
                yield triples, order[first:first + job_size]

    def work(job: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> tuple[float, int]:
        (rows, cols, values), picked_all = job
        loss = torch.zeros((), dtype=torch.float64, device=device)
        for first in range(0, picked_all.size, settings.batch_size):
            picked = picked_all[first:first + settings.batch_size]
            rows_t, cols_t = (torch.from_numpy(np.ascontiguousarray(a[picked])).to(device) for a in (rows, cols))
            counts = torch.from_numpy(values[picked].astype(np.float32)).to(device)
            loss += _batch_step(params, rows_t, cols_t, counts, settings)
        return float(loss), int(picked_all.size)

    # Per epoch and worker: loss sum and entries; each worker writes only its own row.
    workers = resolve_workers(settings.workers)
    forked = workers > 1 and can_fork(device)
    tallies = torch.zeros(settings.epochs, workers, 2, dtype=torch.float64)

    def report() -> None:
        if progress is None:
            return
        per_epoch = tallies.sum(dim=1)
        done = int(per_epoch[:, 1].sum())
        epoch = min(settings.epochs, 1 + int(torch.count_nonzero(per_epoch[:, 1] >= total)))
        current = per_epoch[epoch - 1]
        progress(Progress(epoch=epoch, epochs=settings.epochs, done=done, total=settings.epochs * total,
                          learning_rate=settings.learning_rate, loss=float(current[0]) / max(1.0, float(current[1])),
                          seconds=time.perf_counter() - start))

    if forked:
        for param in params.values():
            param.share_weights()
        tallies = shared_tensor(tallies)

        def body(rank: int) -> None:
            for epoch in range(settings.epochs):
                for number, job in enumerate(jobs(epoch)):
                    if number % workers == rank:
                        tallies[epoch, rank] += torch.tensor(work(job), dtype=torch.float64)

        run_forked(workers, body, report)
    else:
        with single_threaded_kernels(device):
            for epoch in range(settings.epochs):

                def finished(job, outcome: tuple[float, int], epoch: int = epoch) -> None:
                    tallies[epoch, 0] += torch.tensor(outcome, dtype=torch.float64)
                    report()

                run_jobs(jobs(epoch), work, workers, finished)
    losses = (tallies[:, :, 0].sum(dim=1) / total).tolist()
    words, contexts = params["words"].values.cpu().numpy(), params["contexts"].values.cpu().numpy()
    return GloveResult(vectors=words + contexts, word_vectors=words, context_vectors=contexts,
                       word_biases=params["word_biases"].values.cpu().numpy(),
                       context_biases=params["context_biases"].values.cpu().numpy(), vocab=vocab, settings=settings,
                       cooccurrences=total, seconds=time.perf_counter() - start, epoch_losses=losses)


def train(sentences: SentenceSource, vocab: Vocabulary, settings: GloveSettings | None = None,
          progress: ProgressCallback | None = None) -> GloveResult:
    """Count co-occurrences in ``sentences()`` (one pass), then fit GloVe vectors to them."""
    settings = settings or GloveSettings()
    settings.check()
    counts = count_cooccurrences(sentences(), vocab, settings.window, settings.symmetric,
                                 max_entries=entries_for_memory(settings.memory_mb << 20), spill_dir=settings.spill_dir)
    try:
        return fit(counts, vocab, settings, progress)
    finally:
        counts.close()
