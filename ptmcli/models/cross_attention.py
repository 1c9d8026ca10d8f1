"""Attention from a decoder to an encoder's output, and the post-LN decoder block that holds it.

The encoder's output (the *memory*) is projected to keys and values once:
:meth:`CrossAttention.memory` returns them, and every decoder position reads
the same pair, so incremental decoding computes them once per source and keeps
them beside the self-attention's ``KVCache``. Training passes the memory the
same way, so the two paths run the same attention call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.models.kv_cache import LayerCache
from ptmcli.models.layers import Dropout, FeedForward, SelfAttention, attention_with_dropout

Memory = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of the encoder's output, each ``[B, heads, S, head_dim]``."""


class CrossAttention(nn.Module):
    """Multi-head attention whose queries come from the decoder and keys and values from the memory.

    ``kv`` is one fused ``[2H, H]`` projection, key rows first, so it splits into the
    separate key and value projections of other formats. ``bias=False`` for families
    without projection biases.
    """

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float, bias: bool = True):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)

    def memory(self, encoded: torch.Tensor) -> Memory:
        """``[B, S, H]`` encoder output -> its keys and values, ``[B, heads, S, d]`` each."""
        batch, length, _ = encoded.shape
        kv = self.kv(encoded).view(batch, length, 2, self.num_heads, self.head_dim)
        keys, values = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return keys, values

    def forward(self, x: torch.Tensor, memory: Memory, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, T, H]`` attends to ``memory``; ``mask`` ``[B, 1, 1, S]`` hides the source's padding."""
        batch, length, hidden = x.shape
        q = self.query(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = memory
        p = self.attention_dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            context = attention_with_dropout(q, k, v, mask, p)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(context.transpose(1, 2).reshape(batch, length, hidden))


class PostNormDecoderBlock(nn.Module):
    """Decoder block of the original Transformer and BART: causal self-attention, cross-attention to
    the memory, feed-forward, each followed by a residual sum and a LayerNorm."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
        gelu: str = "none",
        activation_dropout: float = 0.0,
    ):
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attention = CrossAttention(hidden_size, num_heads, attention_dropout)
        self.cross_attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = FeedForward(hidden_size, intermediate_size, gelu, activation_dropout)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, memory: Memory, memory_mask: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        """``mask`` (``[B, 1, T, T]``, causality included) replaces plain causal attention when the
        decoder side is padded; ``cache`` is incremental decoding, as in ``SelfAttention``."""
        x = self.attention_norm(x + self.dropout(self.attention(x, mask, mask is None, cache)))
        x = self.cross_attention_norm(x + self.dropout(self.cross_attention(x, memory, memory_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))
