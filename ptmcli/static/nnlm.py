"""Training Bengio et al.'s feed-forward neural language model (the model: ``ptmcli.models.nnlm``).

Unlike the other static-vector trainers this is an ordinary neural LM trained
with autograd (Adam, full softmax); its word vectors are the embedding rows.
Positions before a sentence's first word read a dedicated boundary
embedding (row ``V``), so every word of a sentence is predicted.

``score`` is the one way text is scored, by the run's held-out evaluation and
by ``ptm eval`` alike: each sentence (of vocabulary indices) on its own, every
word predicted from the ``context`` words before it in the sentence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.models.nnlm import FeedForwardLM, NNLMConfig
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


def model_config(vocab: Vocabulary, settings: NNLMSettings) -> NNLMConfig:
    """The model's shape: one embedding row per word, then the boundary row."""
    return NNLMConfig(vocab_size=len(vocab) + 1, dim=settings.dim, context=settings.context,
                      hidden_units=settings.hidden, direct=settings.direct)


def sentence_batches(sentences: Iterable[np.ndarray], context: int, boundary: int,
                     positions: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(contexts, targets) of every word of ``sentences`` in order, at most ``positions`` per batch.

    Sentences are never cut: a context always reaches back to its sentence's
    start (or the boundary), however the sentences fall into batches.
    """
    pieces: list[np.ndarray] = []
    size = 0

    def flush() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        lengths = np.fromiter((p.size for p in pieces), dtype=np.int64, count=len(pieces))
        bounds = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        contexts, targets = examples(np.concatenate(pieces), bounds, context, boundary)
        for first in range(0, targets.size, positions):
            yield contexts[first:first + positions], targets[first:first + positions]

    for sentence in sentences:
        if sentence.size == 0:
            continue
        pieces.append(np.asarray(sentence, dtype=np.int64))
        size += sentence.size
        if size >= positions:
            yield from flush()
            pieces, size = [], 0
    if pieces:
        yield from flush()


def score(model: FeedForwardLM, sentences: Iterable[np.ndarray], positions: int,
          on_batch: Callable[[float, int], None] | None = None) -> tuple[float, int]:
    """Summed cross-entropy (nats) and words scored of ``model`` on sentences of vocabulary indices."""
    device = next(model.parameters()).device
    config = model.config
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for contexts, targets in sentence_batches(sentences, config.context, model.boundary, positions):
                logits = model(torch.from_numpy(contexts).to(device))
                total += float(F.cross_entropy(logits.float(), torch.from_numpy(targets).to(device), reduction="sum"))
                count += targets.size
                if on_batch is not None:
                    on_batch(total, count)
    finally:
        model.train(was_training)
    return total, count


def evaluate(model: FeedForwardLM, sentences: Iterable[np.ndarray], vocab: Vocabulary,
             settings: NNLMSettings) -> tuple[float, float]:
    """Mean cross-entropy (nats per word) and perplexity of ``model`` on ``sentences`` (source word ids)."""
    total, count = score(model, (vocab.encode(s) for s in sentences), settings.batch_size)
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
        model = FeedForwardLM(model_config(vocab, settings))
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
