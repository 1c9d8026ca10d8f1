"""Bengio et al.'s feed-forward neural language model (2003, "A Neural Probabilistic Language Model").

The previous ``n - 1`` words' embeddings are concatenated into ``x``; then
``logits = b + W x + U tanh(d + H x)``, a softmax over the vocabulary. ``W``
are the optional direct connections from the embeddings to the output. Unlike
the other static-vector trainers this is an ordinary neural LM trained with
autograd (Adam, full softmax); its word vectors are the embedding rows.

Positions before a sentence's first word read a dedicated boundary
embedding (row ``V``), so every word of a sentence is predicted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.static.corpus import SentenceSource, iter_chunks
from ptmcli.static.epochs import resolve_device
from ptmcli.static.progress import Progress, ProgressCallback
from ptmcli.static.vocab import Vocabulary


@dataclass
class NNLMSettings:
    dim: int = 100  # embedding size (the paper's m)
    context: int = 4  # previous words seen (n - 1)
    hidden: int = 100  # tanh units (h); 0 leaves only the direct connections
    direct: bool = True  # the W x term from embeddings straight to the output
    epochs: int = 5
    batch_size: int = 256
    learning_rate: float = 1e-3
    min_count: int = 5  # for building the Vocabulary
    max_vocab: int | None = None
    seed: int = 1
    device: str = "auto"
    chunk_words: int = 65_536  # words shuffled together

    def check(self) -> None:
        for name in ("dim", "context", "epochs", "batch_size", "chunk_words"):
            if getattr(self, name) < 1:
                raise PtmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden < 0 or (self.hidden == 0 and not self.direct):
            raise PtmError("the NNLM needs hidden units, direct connections, or both")
        if self.learning_rate <= 0:
            raise PtmError("learning_rate must be positive")


class FeedForwardLM(nn.Module):
    """``P(w_t | w_{t-n+1} .. w_{t-1})`` by one tanh layer plus optional direct connections."""

    def __init__(self, vocab_size: int, dim: int, context: int, hidden: int, direct: bool) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.boundary = vocab_size  # the embedding row read before a sentence starts
        self.embeddings = nn.Embedding(vocab_size + 1, dim)
        width = context * dim
        self.hidden = nn.Linear(width, hidden) if hidden else None  # H and d
        self.output = nn.Linear(hidden, vocab_size) if hidden else None  # U and b
        self.direct = nn.Linear(width, vocab_size, bias=self.output is None) if direct else None  # W

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, V]`` for contexts ``[batch, n - 1]`` of word indices (oldest first)."""
        x = self.embeddings(contexts).flatten(1)
        logits = self.output(torch.tanh(self.hidden(x))) if self.hidden is not None else None
        if self.direct is not None:
            logits = self.direct(x) if logits is None else logits + self.direct(x)
        return logits


@dataclass
class NNLMResult:
    vectors: np.ndarray  # float32 [V, dim]: the embedding rows (boundary row left out)
    model: FeedForwardLM
    vocab: Vocabulary
    settings: NNLMSettings
    seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)  # mean cross-entropy (nats per word) per epoch


def examples(words: np.ndarray, bounds: np.ndarray, context: int, boundary: int) -> tuple[np.ndarray, np.ndarray]:
    """Every position of a chunk as (previous ``context`` words, word), padded with ``boundary`` at sentence starts."""
    sentence_of = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    position = np.arange(words.size)
    back = position[:, None] - np.arange(context, 0, -1)  # oldest first
    inside = back >= bounds[sentence_of][:, None]
    contexts = np.where(inside, words[np.clip(back, 0, None)], boundary)
    return contexts, words


def _batches(sentences: Iterable[np.ndarray], vocab: Vocabulary, settings: NNLMSettings,
             rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for chunk in iter_chunks(sentences, vocab, settings.chunk_words):
        contexts, targets = examples(chunk.words, chunk.bounds, settings.context, len(vocab))
        order = rng.permutation(targets.size) if rng is not None else np.arange(targets.size)
        for first in range(0, order.size, settings.batch_size):
            picked = order[first:first + settings.batch_size]
            yield contexts[picked], targets[picked]


def evaluate(model: FeedForwardLM, sentences: Iterable[np.ndarray], vocab: Vocabulary,
             settings: NNLMSettings) -> tuple[float, float]:
    """Mean cross-entropy (nats per word) and perplexity of ``model`` on ``sentences``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for contexts, targets in _batches(sentences, vocab, settings, rng=None):
            logits = model(torch.from_numpy(contexts).to(device))
            total += float(F.cross_entropy(logits, torch.from_numpy(targets).to(device), reduction="sum"))
            count += targets.size
    model.train(was_training)
    if count == 0:
        raise PtmError("no vocabulary words to evaluate on")
    loss = total / count
    return loss, math.exp(loss)


def train(sentences: SentenceSource, vocab: Vocabulary, settings: NNLMSettings | None = None,
          progress: ProgressCallback | None = None) -> NNLMResult:
    """Train the feed-forward LM on ``sentences()`` (a fresh iterable of word-id arrays per call, one per epoch)."""
    settings = settings or NNLMSettings()
    settings.check()
    device = resolve_device(settings.device)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights without resetting the caller's generator
        torch.manual_seed(settings.seed)
        model = FeedForwardLM(len(vocab), settings.dim, settings.context, settings.hidden, settings.direct)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(settings.seed)
    planned = settings.epochs * vocab.total
    losses: list[float] = []
    done = 0
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        epoch_loss = torch.zeros((), dtype=torch.float64, device=device)
        epoch_words = 0
        for contexts, targets in _batches(sentences(), vocab, settings, rng):
            logits = model(torch.from_numpy(contexts).to(device))
            loss = F.cross_entropy(logits, torch.from_numpy(targets).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.detach() * targets.size
            epoch_words += targets.size
            done += targets.size
            if progress is not None and epoch_words % (64 * settings.batch_size) < settings.batch_size:
                progress(Progress(epoch=epoch + 1, epochs=settings.epochs, done=done, total=planned,
                                  learning_rate=settings.learning_rate, loss=float(loss),
                                  seconds=time.perf_counter() - start))
        if epoch_words == 0:
            raise PtmError("the corpus has no vocabulary words; give more text or lower --min-count")
        losses.append(float(epoch_loss) / epoch_words)
    vectors = model.embeddings.weight.detach()[: len(vocab)].cpu().numpy().copy()
    return NNLMResult(vectors=vectors, model=model, vocab=vocab, settings=settings,
                      seconds=time.perf_counter() - start, epoch_losses=losses)
