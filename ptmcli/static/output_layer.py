"""The output layer of word2vec and fastText, trained by plain SGD on the rows a batch touches.

Negative sampling and hierarchical softmax are both binary logistic
regressions of an input vector against some output rows: the target word and
sampled noise words (labels 1, 0, ...), or the inner nodes on the target's
Huffman path (labels from its code). A block is ``n`` examples, each with
``m`` input vectors scored against the same ``K`` output rows, so scoring is
small matrix products rather than ``m * K`` separate dot products; this is
Ji et al.'s scheme (2016, "Parallelizing Word2Vec in Shared and Distributed
Memory"), where the context words of one window share their noise words, at
no measurable cost in accuracy. For CBOW, whose window is a single input,
several windows share their noise draws in a similar way.

The output rows are updated here; the caller applies the returned input step
to whatever rows made the inputs (words, or words and n-grams).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ptmcli.static.hogwild import shared_tensor
from ptmcli.static.huffman import build_huffman
from ptmcli.static.row_updates import RowUpdater
from ptmcli.static.vocab import NegativeSampler

# Noise draws per shared group, in multiples of ``negative``. On a 1.6 M-word
# Wikipedia sample, CBOW with one draw per group of 8 windows lost about a fifth
# of its analogy accuracy against unshared noise; two draws win most of it back
# and keep most of the speed.
SHARED_NOISE_DRAWS = 2
_TREE_PARTS = 4  # hierarchical-softmax sub-blocks per batch, by path length


def train_block(inputs: torch.Tensor, output: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor,
                weights: torch.Tensor | None, alpha: float, updater: RowUpdater,
                input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD on ``sum w * log sigmoid(+-x.y)`` for inputs ``[n, m, d]`` against ``output[rows]``, rows ``[n, K]``.

    ``labels`` are 1 for words to predict and 0 for noise; ``weights``
    (optional) scale each error, 0 leaving that score out. Both are
    ``[K]``, ``[n, K]`` (the same for all ``m`` inputs) or ``[n, m, K]``.
    ``input_scale`` (``[n, m]``, optional) scales the returned input steps,
    the caller's share of the row cap. Returns the step for the inputs
    (``[n, m, d]``, already times ``alpha``) and the block's loss (a 0-d
    tensor, so no device sync).
    """
    n, _, dim = inputs.shape
    flat_rows = rows.reshape(-1)
    targets = output.index_select(0, flat_rows).view(n, -1, dim)  # [n, K, d]
    scores = torch.bmm(inputs, targets.transpose(1, 2))  # [n, m, K]
    labels = _per_input(labels.to(scores.dtype))
    signed = torch.where(labels > 0, scores, -scores)
    loss = F.logsigmoid(signed)  # negated once, in the sum
    if weights is None:
        error = (labels - torch.sigmoid(scores)) * alpha
    else:
        scale = _per_input(weights.to(scores.dtype))
        error = (labels - torch.sigmoid(scores)) * (scale * alpha)
        loss = loss * scale
    # Scaling the small [n, m, K] error rather than the [*, d] steps applies the row cap for free.
    input_error = error if input_scale is None else error * input_scale.unsqueeze(2)
    input_step = torch.bmm(input_error, targets)  # [n, m, d]
    output_scale = updater.scale(flat_rows, output.shape[0])
    if output_scale is not None:
        error = error * output_scale.view(n, 1, -1)
    output_step = torch.bmm(error.transpose(1, 2), inputs)  # [n, K, d]
    output.index_add_(0, flat_rows, output_step.view(-1, dim))
    return input_step, -loss.sum()


def _per_input(values: torch.Tensor) -> torch.Tensor:
    """``[n, K]`` -> ``[n, 1, K]``, broadcasting over the inputs; ``[K]`` and ``[n, m, K]`` as they are."""
    return values.unsqueeze(1) if values.dim() == 2 else values


class OutputLayer:
    """Output rows for negative sampling, hierarchical softmax or both, and their SGD steps."""

    def __init__(self, counts: np.ndarray, dim: int, negative: int, hierarchical_softmax: bool,
                 device: torch.device, updater: RowUpdater) -> None:
        vocab = int(counts.size)
        self.updater = updater
        self.negative = negative
        self.device = device
        self.noise_rows = torch.zeros(vocab, dim, device=device) if negative else None
        self.sampler = NegativeSampler(counts) if negative else None
        self.tree = build_huffman(counts) if hierarchical_softmax else None
        self.tree_rows = torch.zeros(max(1, vocab - 1), dim, device=device) if hierarchical_softmax else None

    def share_weights(self) -> None:
        """Move the output rows to shared memory, for forked workers."""
        if self.noise_rows is not None:
            self.noise_rows = shared_tensor(self.noise_rows)
        if self.tree_rows is not None:
            self.tree_rows = shared_tensor(self.tree_rows)

    def train(self, inputs: torch.Tensor, targets: np.ndarray, alpha: float, rng: np.random.Generator,
              share: int = 1, input_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD for inputs ``[n, m, d]`` predicting ``targets`` ``[n]``; returns (input step, loss).

        With ``share > 1`` (single inputs, ``m == 1``), each run of ``share``
        examples scores against one draw of noise words. ``input_scale``
        (``[n, m]``) scales the input steps (see ``train_block``).
        """
        step: torch.Tensor | None = None
        loss = torch.zeros((), device=self.device)
        if self.sampler is not None:
            if share > 1 and inputs.shape[1] == 1:
                step, loss = self._noise_shared(inputs, targets, alpha, rng, share)
            else:
                step, loss = self._noise(inputs, targets, alpha, rng, input_scale)
        if self.tree is not None:
            tree_step, tree_loss = self._tree(inputs, targets, alpha, input_scale)
            step = tree_step if step is None else step + tree_step
            loss = loss + tree_loss
        return step, loss

    def _tree(self, inputs: torch.Tensor, targets: np.ndarray, alpha: float,
              input_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hierarchical softmax, in parts of similar path length so that short paths are not padded to long ones."""
        order = np.argsort(self.tree.lengths[targets], kind="stable")
        parts = np.array_split(order, min(_TREE_PARTS, order.size))
        step = torch.empty_like(inputs)
        loss = torch.zeros((), device=self.device)
        for part in parts:
            picked = self._tensor(part)
            rows, labels, weights = self.paths(targets[part])
            part_step, part_loss = train_block(
                inputs.index_select(0, picked), self.tree_rows, self._tensor(rows), self._tensor(labels),
                self._tensor(weights), alpha, self.updater,
                None if input_scale is None else input_scale.index_select(0, picked))
            step.index_copy_(0, picked, part_step)
            loss = loss + part_loss
        return step, loss

    def train_window(self, inputs: torch.Tensor, targets: np.ndarray, alpha: float,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD for single inputs ``[n, 1, d]`` each predicting ``m`` targets ``[n, m]`` (fastText's skip-gram).

        The ``m`` pairs of an input share one draw of noise words; as every
        pair would score them against the same input, each noise word counts
        once per pair it stands for (``m``, less the targets it equals).
        """
        n, width = targets.shape
        step: torch.Tensor | None = None
        loss = torch.zeros((), device=self.device)
        if self.sampler is not None:
            noise = self.sampler.sample(rng, (n, self.negative))
            rows = np.concatenate([targets, noise], axis=1)
            labels = np.zeros(width + self.negative, dtype=np.float32)
            labels[:width] = 1.0
            weights = np.ones(rows.shape, dtype=np.float32)
            weights[:, width:] = width - (noise[:, :, None] == targets[:, None, :]).sum(axis=2)
            step, loss = train_block(inputs, self.noise_rows, self._tensor(rows), self._tensor(labels),
                                     self._tensor(weights), alpha, self.updater)
        if self.tree is not None:
            rows, labels, weights = (part.reshape(n, -1) for part in self.paths(targets.reshape(-1)))
            tree_step, tree_loss = train_block(inputs, self.tree_rows, self._tensor(rows), self._tensor(labels),
                                               self._tensor(weights), alpha, self.updater)
            step = tree_step if step is None else step + tree_step
            loss = loss + tree_loss
        return step, loss

    def _noise(self, inputs: torch.Tensor, targets: np.ndarray, alpha: float, rng: np.random.Generator,
               input_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        noise = self.sampler.sample(rng, (targets.size, self.negative))
        rows = np.concatenate([targets[:, None], noise], axis=1)
        labels = np.zeros(self.negative + 1, dtype=np.float32)
        labels[0] = 1.0
        # The original skips a noise word that is the target itself.
        weights = np.ones(rows.shape, dtype=np.float32)
        weights[:, 1:] = noise != targets[:, None]
        return train_block(inputs, self.noise_rows, self._tensor(rows), self._tensor(labels),
                           self._tensor(weights), alpha, self.updater, input_scale)

    def _noise_shared(self, inputs: torch.Tensor, targets: np.ndarray, alpha: float, rng: np.random.Generator,
                      share: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Single inputs against their own targets and, in groups of ``share``, common noise words.

        Each input scores its own target (one dot product) and its group's
        noise words (one small matrix product per group), so the result is
        negative sampling with noise drawn once per group. A group draws
        ``SHARED_NOISE_DRAWS * negative`` noise words, each weighing
        ``1 / SHARED_NOISE_DRAWS``: every input still has ``negative`` noise
        words' worth of weight, and the inputs of a group are less bound to
        the same few words.
        """
        n, _, dim = inputs.shape
        groups = -(-n // share)
        padding = groups * share - n
        draws = SHARED_NOISE_DRAWS * self.negative
        flat = inputs.reshape(n, dim)
        padded_targets = np.concatenate([targets, np.zeros(padding, dtype=targets.dtype)])
        noise = self.sampler.sample(rng, (groups, draws))
        # The original skips a noise word that is the target itself.
        weights = (noise[:, None, :] != padded_targets.reshape(groups, share)[:, :, None]).astype(np.float32)
        weights /= SHARED_NOISE_DRAWS
        if padding:
            weights[-1, share - padding:] = 0.0
        rows = self._tensor(np.concatenate([targets, noise.reshape(-1)]))
        target_rows, noise_rows = rows[:n], rows[n:]
        own = self.noise_rows.index_select(0, target_rows)  # [n, d]
        shared = self.noise_rows.index_select(0, noise_rows).view(groups, draws, dim)
        grouped = torch.cat([flat, flat.new_zeros(padding, dim)]) if padding else flat
        grouped = grouped.view(groups, share, dim)
        own_scores = (flat * own).sum(dim=1)  # [n]
        noise_scores = torch.bmm(grouped, shared.transpose(1, 2))  # [groups, share, draws]
        weight = self._tensor(weights)
        loss = -(F.logsigmoid(own_scores).sum() + (F.logsigmoid(-noise_scores) * weight).sum())
        own_error = (1.0 - torch.sigmoid(own_scores)) * alpha
        noise_error = torch.sigmoid(noise_scores) * (weight * -alpha)
        input_step = torch.addcmul(torch.bmm(noise_error, shared).view(-1, dim)[:n], own_error.unsqueeze(1), own)
        scale = self.updater.scale(rows, self.noise_rows.shape[0])
        if scale is not None:
            own_error = own_error * scale[:n]
            noise_error = noise_error * scale[n:].view(groups, 1, draws)
        self.noise_rows.index_add_(0, target_rows, flat * own_error.unsqueeze(1))
        self.noise_rows.index_add_(0, noise_rows, torch.bmm(noise_error.transpose(1, 2), grouped).view(-1, dim))
        return input_step.view(n, 1, dim), loss

    def paths(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inner nodes, labels and validity of the targets' Huffman paths, cut to the longest among them."""
        lengths = self.tree.lengths[targets]
        depth = max(1, int(lengths.max()))
        rows = self.tree.points[targets, :depth]
        labels = (1 - self.tree.codes[targets, :depth]).astype(np.float32)  # the original's label: 1 - code
        weights = (np.arange(depth) < lengths[:, None]).astype(np.float32)
        return rows, labels, weights

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
