"""The epoch loop of the windowed trainers (word2vec, fastText).

Each epoch re-reads the corpus and hands chunks to the workers
(``hogwild``). The learning rate falls linearly from ``alpha`` to
``min_alpha`` with the words trained, counted over all epochs as word2vec
does; a chunk's rate depends only on where the chunk lies in the corpus, not
on which worker takes it or when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ptmcli.errors import PtmError
from ptmcli.static.corpus import Chunk, SentenceSource, iter_chunks
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

Rate = Callable[[float], float]  # fraction of the chunk done -> learning rate
ChunkTrainer = Callable[[Chunk, int, Rate], tuple[torch.Tensor, int]]  # -> (loss sum, examples)


@dataclass
class EpochStats:
    seconds: float = 0.0
    words: int = 0  # kept words read, over all epochs, before subsampling
    epoch_losses: list[float] = field(default_factory=list)  # mean loss per example of each epoch


class _Tally:
    """Loss and examples of an epoch so far, and since the last progress report."""

    def __init__(self) -> None:
        self.loss, self.examples = 0.0, 0
        self._recent_loss, self._recent_examples = 0.0, 0

    def add(self, loss: float, examples: int) -> None:
        self.loss += loss
        self.examples += examples
        self._recent_loss += loss
        self._recent_examples += examples

    def recent_loss(self) -> float:
        """Mean loss per example since the previous call."""
        mean = self._recent_loss / max(1, self._recent_examples)
        self._recent_loss, self._recent_examples = 0.0, 0
        return mean


def train_epochs(sentences: SentenceSource, vocab: Vocabulary, train_chunk: ChunkTrainer, *, epochs: int,
                 alpha: float, min_alpha: float, chunk_words: int, workers: int, device: torch.device,
                 share_weights: Callable[[], None], progress: ProgressCallback | None = None) -> EpochStats:
    """Run ``train_chunk`` over every chunk of every epoch; returns timing and losses.

    ``share_weights`` moves the trainer's weights to shared memory; it is
    called before worker processes are forked, and only then.
    """
    per_epoch = vocab.total
    planned = max(1, epochs * per_epoch)
    stats = EpochStats()
    start = time.perf_counter()

    def rate_at(words: float) -> float:
        """The learning rate after ``words`` words of the whole run."""
        return max(min_alpha, alpha - (alpha - min_alpha) * min(1.0, words / planned))

    def rate_for(epoch: int, chunk: Chunk) -> Rate:
        before = epoch * per_epoch + chunk.first_word
        return lambda fraction: rate_at(before + fraction * len(chunk))

    workers = resolve_workers(workers)
    if workers > 1 and can_fork(device):
        share_weights()
        _run_forked(sentences, vocab, train_chunk, rate_for, rate_at, epochs, chunk_words, workers, progress, stats,
                    start)
        stats.seconds = time.perf_counter() - start
        return stats
    with single_threaded_kernels(device):
        for epoch in range(epochs):
            tally = _Tally()

            def work(chunk: Chunk, epoch: int = epoch) -> tuple[float, int]:
                loss, examples = train_chunk(chunk, epoch, rate_for(epoch, chunk))
                return float(loss), examples

            def finished(chunk: Chunk, outcome: tuple[float, int], epoch: int = epoch, tally: _Tally = tally) -> None:
                tally.add(*outcome)
                stats.words += len(chunk)
                if progress is not None:
                    progress(Progress(epoch=epoch + 1, epochs=epochs, done=stats.words, total=epochs * per_epoch,
                                      learning_rate=rate_for(epoch, chunk)(1.0), loss=tally.recent_loss(),
                                      seconds=time.perf_counter() - start))

            run_jobs(iter_chunks(sentences(), vocab, chunk_words), work, workers, finished)
            if tally.examples == 0:
                raise PtmError("the corpus has no window with two vocabulary words; give more text or lower --min-count")
            stats.epoch_losses.append(tally.loss / tally.examples)
    stats.seconds = time.perf_counter() - start
    return stats


def _run_forked(sentences: SentenceSource, vocab: Vocabulary, train_chunk: ChunkTrainer,
                rate_for: Callable[[int, Chunk], Rate], rate_at: Callable[[float], float], epochs: int,
                chunk_words: int, workers: int,
                progress: ProgressCallback | None, stats: EpochStats, start: float) -> None:
    """Every process reads the corpus and trains the chunks whose index is its rank modulo ``workers``."""
    # Per epoch and worker: words read, loss sum, examples; each process writes only its own row.
    tallies = shared_tensor(torch.zeros(epochs, workers, 3, dtype=torch.float64))

    def body(rank: int) -> None:
        for epoch in range(epochs):
            for chunk in iter_chunks(sentences(), vocab, chunk_words):
                if chunk.index % workers == rank:
                    loss, examples = train_chunk(chunk, epoch, rate_for(epoch, chunk))
                    tallies[epoch, rank] += torch.tensor([len(chunk), float(loss), examples], dtype=torch.float64)

    per_epoch = max(1, vocab.total)
    last = torch.zeros(3, dtype=torch.float64)

    def poll() -> None:
        if progress is None:
            return
        totals = tallies.sum(dim=1)
        now = totals.sum(dim=0)
        if now[0] <= last[0]:
            return
        words = int(now[0])
        epoch = min(epochs, 1 + int(torch.count_nonzero(totals[:, 0] >= per_epoch)))
        recent = now - last
        last.copy_(now)
        progress(Progress(epoch=epoch, epochs=epochs, done=words, total=epochs * per_epoch, learning_rate=rate_at(words),
                          loss=float(recent[1]) / max(1.0, float(recent[2])), seconds=time.perf_counter() - start))

    run_forked(workers, body, poll)
    totals = tallies.sum(dim=1)
    stats.words = int(totals[:, 0].sum())
    if bool((totals[:, 2] == 0).any()):
        raise PtmError("the corpus has no window with two vocabulary words; give more text or lower --min-count")
    stats.epoch_losses.extend((totals[:, 1] / totals[:, 2]).tolist())


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise PtmError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PtmError(f"device {device!r} asked for, but CUDA is not available")
    return resolved
