"""Two-sequence examples for encoder-decoder training: the batch, its collation, and its loss normaliser.

A :class:`Seq2SeqBatch` holds a source for the encoder and a target for the
decoder, each side padded to its own longest row. The decoder reads the
target shifted right behind a decoder-start token (teacher forcing) and
predicts the target itself, so ``decoder_input_ids[:, t]`` is followed by
``labels[:, t]``; padding in ``labels`` is -100. A batch is a plain dict, like
every other batch ptm trains on, so the training loop moves, slices and
shares it across ranks without knowing its keys.

The loss of a micro-batch is the sum of its target tokens' losses divided by
the number of target tokens in the whole *global* batch (all micro-batches of
the optimizer step, on all ranks): :func:`global_target_tokens` counts it,
:func:`token_normalised_loss` divides. Averaging per micro-batch instead would
give each micro-batch the same weight, so a token of a short target would
count for more than a token of a long one, and the gradient would depend on
how the global batch happened to be cut.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

IGNORE_INDEX = -100


class Seq2SeqBatch(TypedDict):
    """Tensors ``[B, S]`` (source side), ``[B, T]`` (target side) and ``[B]``, all int64."""

    input_ids: torch.Tensor
    """The sources, right-padded with the pad id."""
    attention_mask: torch.Tensor
    """1 at the sources' real tokens, 0 at padding."""
    decoder_input_ids: torch.Tensor
    """The decoder-start id, then each target but its last token; right-padded with the pad id."""
    labels: torch.Tensor
    """The targets; -100 at padding (no loss). A decoder position is real where its label is not -100."""
    target_lengths: torch.Tensor
    """Target tokens per row: the labels that count."""


def fit_sequence(tokens: Sequence[int] | np.ndarray, max_length: int | None, eos_id: int | None) -> np.ndarray:
    """``tokens`` cut to ``max_length``, ending in ``eos_id`` (when given) however much was cut.

    A sequence that already ends in ``eos_id`` does not get a second one, so
    rows framed by the caller (a leading ``<s>``, a trailing ``</s>``) collate
    the same as bare ones.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    if max_length is not None and max_length < 1:
        raise ValueError(f"a maximum length of {max_length} leaves no room for a token")
    if eos_id is None:
        return ids[:max_length] if max_length is not None else ids
    body = ids[:-1] if len(ids) and ids[-1] == eos_id else ids
    if max_length is not None:
        body = body[: max_length - 1]
    return np.append(body, np.int64(eos_id))


def _padded(longest: int, multiple: int | None) -> int:
    if not multiple or multiple <= 1:
        return longest
    return -(-longest // multiple) * multiple


@dataclass(frozen=True)
class Seq2SeqCollator:
    """Makes a :class:`Seq2SeqBatch` of ``(source, target)`` pairs (``PairRow``s unpack as such).

    Each side is cut to its maximum length keeping ``eos_id`` at its end (see
    :func:`fit_sequence`) and padded to its own longest row, rounded up to
    ``pad_to_multiple_of`` when given (8 keeps the shapes, and so the kernels,
    few). Rows carry no special tokens but those the caller put there; the
    collator adds only the end-of-sequence token and the decoder start.
    """

    pad_id: int
    decoder_start_id: int
    eos_id: int | None = None
    max_source_length: int | None = None
    max_target_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, pairs: Iterable[tuple[Sequence[int], Sequence[int]]]) -> Seq2SeqBatch:
        sources, targets = [], []
        for source, target in pairs:
            sources.append(fit_sequence(source, self.max_source_length, self.eos_id))
            targets.append(fit_sequence(target, self.max_target_length, self.eos_id))
        if not sources:
            raise ValueError("cannot collate an empty batch")
        source_lengths = np.array([len(s) for s in sources], dtype=np.int64)
        target_lengths = np.array([len(t) for t in targets], dtype=np.int64)
        width = _padded(max(1, int(source_lengths.max())), self.pad_to_multiple_of)
        depth = _padded(max(1, int(target_lengths.max())), self.pad_to_multiple_of)
        rows = len(sources)
        input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        decoder_input_ids = np.full((rows, depth), self.pad_id, dtype=np.int64)
        labels = np.full((rows, depth), IGNORE_INDEX, dtype=np.int64)
        for i, (source, target) in enumerate(zip(sources, targets)):
            input_ids[i, : len(source)] = source
            labels[i, : len(target)] = target
            decoder_input_ids[i, 0] = self.decoder_start_id
            decoder_input_ids[i, 1 : len(target)] = target[:-1]
        attention_mask = (np.arange(width)[None, :] < source_lengths[:, None]).astype(np.int64)
        return Seq2SeqBatch(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            decoder_input_ids=torch.from_numpy(decoder_input_ids),
            labels=torch.from_numpy(labels),
            target_lengths=torch.from_numpy(target_lengths),
        )


def target_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Target tokens of one (micro-)batch: the labels that are not -100."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


def global_target_tokens(micro_batches: Iterable[Mapping[str, torch.Tensor]], *, across_ranks: bool = False,
                         device: torch.device | str = "cpu") -> float:
    """Target tokens of a global batch: what every micro-batch's summed loss is divided by.

    ``micro_batches`` are those of one optimizer step, counted before any is
    run. When every rank sees the whole global batch and takes its share of
    each micro-batch (``training.distributed.GlobalBatchShare``), their count
    is already global. When each rank collates only its own micro-batches,
    pass ``across_ranks=True``: the count is summed over the ranks of the
    default process group, on ``device`` (NCCL reduces CUDA tensors only).
    At least 1, so a batch without targets gives a zero loss, not NaN.
    """
    count = float(sum(target_tokens(batch) for batch in micro_batches))
    if across_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
        # float64 keeps the count exact far beyond any batch size.
        total = torch.tensor([count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        count = float(total.item())
    return max(1.0, count)


def token_normalised_loss(loss_sum: torch.Tensor, global_tokens: float) -> torch.Tensor:
    """A micro-batch's share of the global batch's mean token loss: its summed loss over the global count.

    Backpropagating this for every micro-batch accumulates the gradient of the
    mean over all target tokens of the global batch. Under data parallelism
    the ranks' gradients must then be summed, not averaged: the training loop
    scales each rank's loss by the world size before DDP averages.
    """
    return loss_sum / global_tokens
