"""SpanBERT's span boundary objective (Joshi et al., 2020): predict each token of a masked span
from the two tokens just outside the span and the token's place in it.

``y_i = decoder(LN(GELU(W2 LN(GELU(W1 [x_left; x_right; p_i])))))`` where
``p_i`` is a learned embedding of the token's offset from the span's start and
the decoder is the tied word-embedding matrix the MLM head projects with (its
width is the embedding width: H for BERT, E for ALBERT), with a bias of its own.
It is an attached head (``attached_heads.py``): the model's forward runs it on
the encoder output, at the rows the MLM labels mark, in the same order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.models.bert import _masked_rows
from ptmcli.models.layers import init_bert_weights, linear_cross_entropy

# Offsets past this share the last embedding: a ten-word span rarely needs more tokens.
MAX_SPAN_OFFSET = 64
INPUT_NAMES = ("sbo_left", "sbo_right", "sbo_offset")


class SpanBoundaryHead(nn.Module):
    """Two Linear -> GELU -> LayerNorm layers from ``[left; right; offset]`` to the decoder's width."""

    input_names = INPUT_NAMES

    def __init__(self, hidden_size: int, output_size: int, vocab_size: int, layer_norm_eps: float = 1e-12,
                 initializer_range: float = 0.02, max_offset: int = MAX_SPAN_OFFSET) -> None:
        super().__init__()
        self.offsets = nn.Embedding(max_offset, hidden_size)
        self.dense1 = nn.Linear(3 * hidden_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dense2 = nn.Linear(hidden_size, output_size)
        self.norm2 = nn.LayerNorm(output_size, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(lambda m: init_bert_weights(m, initializer_range))

    def transform(self, left: torch.Tensor, right: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        offset = offset.clamp(0, self.offsets.num_embeddings - 1)
        x = torch.cat([left, right, self.offsets(offset)], dim=-1)
        x = self.norm1(F.gelu(self.dense1(x)))
        return self.norm2(F.gelu(self.dense2(x)))

    def forward(self, model: nn.Module, hidden: torch.Tensor, mlm_labels: torch.Tensor | None,
                sbo_left: torch.Tensor | None = None, sbo_right: torch.Tensor | None = None,
                sbo_offset: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``sbo_loss_sum``, ``sbo_count``, ``sbo_correct`` over the rows ``mlm_labels`` marks.

        ``sbo_left``/``sbo_right`` (``[B, T]``) give, at each masked position, the column of the
        token just before/after its span in the same row; ``sbo_offset`` its offset in the span.
        """
        device = hidden.device
        out = {"sbo_loss_sum": hidden.new_zeros((), dtype=torch.float32),
               "sbo_count": torch.zeros((), dtype=torch.long, device=device),
               "sbo_correct": torch.zeros((), dtype=torch.long, device=device)}
        if mlm_labels is None or sbo_left is None or sbo_right is None or sbo_offset is None:
            return out
        positions, targets, count = _masked_rows(mlm_labels)
        width = hidden.shape[1]
        flat = hidden.reshape(-1, hidden.shape[-1])
        # Boundary columns are within the masked token's row: add the row's start to index the flat rows.
        row_start = torch.div(positions, width, rounding_mode="floor") * width
        left = flat.index_select(0, row_start + sbo_left.reshape(-1).index_select(0, positions))
        right = flat.index_select(0, row_start + sbo_right.reshape(-1).index_select(0, positions))
        states = self.transform(left, right, sbo_offset.reshape(-1).index_select(0, positions))
        decoder = model.mlm.decoder.weight  # tied to the word embeddings, as the MLM head's
        out["sbo_count"] = torch.tensor(count, device=device)
        if torch.is_grad_enabled():
            loss_sum, correct = linear_cross_entropy(states, decoder, self.bias, targets)
        else:
            logits = F.linear(states[:count], decoder, self.bias)
            targets = targets[:count]
            loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
            correct = (logits.argmax(-1) == targets).sum()
        out["sbo_loss_sum"], out["sbo_correct"] = loss_sum, correct
        return out


def span_boundary_head(model: nn.Module) -> SpanBoundaryHead:
    """A head sized for ``model``: its config's hidden size, and its MLM decoder's width and rows."""
    config = model.config
    vocab, width = model.mlm.decoder.weight.shape
    return SpanBoundaryHead(config.hidden_size, width, vocab, config.layer_norm_eps, config.initializer_range)
