"""Perplexity of a feed-forward LM (the NNLM): each sentence on its own, every word from the words before it.

Scored as the run's own held-out evaluation scores its documents
(``ptmcli.static.nnlm.score``): a word is predicted from the ``context``
words before it in its sentence, the boundary row standing in before the
first. Only vocabulary words are predicted or read: the unknown token and any
other special token are dropped from a sentence first, as training drops the
words below ``--min-count``. So on the text of the held-out documents the
loss equals the run's ``heldout_loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ptmcli.evaluation.corpus import Sentence

# Positions per forward pass for each "sequence" of --batch-size: a sentence is a few dozen words.
POSITIONS_PER_SEQUENCE = 128


def vocabulary_words(sentences: Iterable[Sentence], words: int, special_ids: Iterable[int]) -> Iterator[np.ndarray]:
    """Each sentence's ids that are vocabulary words (below ``words``, not special)."""
    special = np.asarray(sorted(special_ids), dtype=np.int64)
    for sentence in sentences:
        ids = sentence.ids
        keep = (ids >= 0) & (ids < words) & ~np.isin(ids, special)
        yield ids[keep]


def score_feedforward(model, sentences: Iterable[Sentence], special_ids: Iterable[int], *, batch_size: int,
                      device: torch.device, on_batch: Callable[[float, int], None] | None = None) -> tuple[float, int]:
    """Summed nll (nats) and words scored."""
    from ptmcli.static.nnlm import score

    model.to(device)
    kept = vocabulary_words(sentences, model.config.words, special_ids)
    return score(model, kept, batch_size * POSITIONS_PER_SEQUENCE, on_batch)
