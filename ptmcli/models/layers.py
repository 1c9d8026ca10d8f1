"""Transformer pieces shared by the model families: attention, feed-forward, blocks, init.

Read top to bottom: weight init, a faster CPU dropout, the padding mask,
multi-head self-attention with one fused QKV projection, the feed-forward
network, the post-LayerNorm block of the original Transformer and BERT, and a
fused vocabulary projection + cross-entropy for language-model heads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def init_bert_weights(module: nn.Module, std: float) -> None:
    """Initialise one module as BERT does: truncated normal (±2 std) weights, zero bias, LayerNorm 1/0.

    Apply with ``model.apply(lambda m: init_bert_weights(m, std))``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class _BitsDropout(torch.autograd.Function):
    """Dropout whose keep-mask comes from 16-bit slices of 64-bit random draws (CPU).

    The CPU generator draws one number per element in ``F.dropout``; slicing each
    64-bit draw into four 16-bit lanes needs a quarter of the draws and makes the
    whole op about 3x faster. Drop probability is ``p`` rounded to 1/65536.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        count = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=x.device)
        lanes = draws.view(torch.int16)[:count].view(x.shape)
        dropped = round(p * 65536)
        keep = lanes >= -32768 + dropped
        scale = 65536 / (65536 - dropped)  # exact for the rounded probability: E[out] = x
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: ``F.dropout`` on accelerators, the faster bit-slicing kernel on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return _BitsDropout.apply(x, p)


class Dropout(nn.Module):
    """``nn.Dropout`` with the faster CPU kernel of :func:`dropout`."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def padding_attention_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a ``[B, T]`` 1/0 padding mask into the boolean ``[B, 1, 1, T]`` mask SDPA takes.

    Returns None when nothing is padded: SDPA then runs its fast unmasked kernel.
    (The ``all()`` check reads one scalar; on CUDA it is a host sync, once per forward.)
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()
    if bool(keep.all()):
        return None
    return keep[:, None, None, :]


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """Softmax attention with dropout on the probabilities, written out for CPU training.

    On CPU, SDPA with ``dropout_p > 0`` leaves its fused kernel for a reference
    path that draws one random number per probability; this one is the same
    math with :func:`dropout`'s cheaper mask and is about 20% faster there.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return dropout(scores.softmax(-1), p, True) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused QKV projection, SDPA, an output projection.

    SDPA runs inference and all accelerator work; CPU training with attention
    dropout takes :func:`attention_with_dropout` instead (same math, faster there).

    The fused ``qkv`` weight is ``[3H, H]`` with the query rows first, then key, then
    value, so it splits into the three separate projections of other formats.
    """

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, hidden = x.shape
        # [B, T, 3, heads, d] -> three [B, heads, T, d] views without copies.
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        p = self.attention_dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            context = attention_with_dropout(q, k, v, mask, p)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self.out(context)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``up`` (H -> I), GELU (erf), ``down`` (I -> H)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class PostNormBlock(nn.Module):
    """Transformer encoder block with LayerNorm after each residual sum (BERT, original Transformer)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
    ):
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = FeedForward(hidden_size, intermediate_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias``; the gradient is made in the forward.

    One ``[N, V]`` buffer holds the logits and is turned, a few rows at a time
    while they sit in cache, into ``softmax - onehot``: the gradient of the
    summed loss with respect to the logits. Backward is then two matmuls and a
    column sum. This avoids the separate log-softmax output, the NLL gradient
    and the softmax-backward passes over ``[N, V]`` that autograd would make.
    """

    @staticmethod
    def forward(ctx: Any, hidden, weight, bias, targets):  # type: ignore[override]
        logits = hidden @ weight.t()  # under autocast: low precision, like a Linear
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        valid = targets >= 0
        all_valid = bool(valid.all())
        rows = logits.shape[0]
        if logits.device.type == "cpu":
            # ~8 MB of fp32 logits per chunk: stays in cache, and few enough chunks
            # that per-op threading overhead stays small.
            rows = max(1, (1 << 23) // max(1, 4 * logits.shape[1]))
        for start in range(0, logits.shape[0], rows):
            chunk = logits[start : start + rows]
            work = chunk if chunk.dtype == torch.float32 else chunk.float()
            keep = valid[start : start + rows]
            target = targets[start : start + rows].clamp(min=0)
            work.add_(bias)
            top, best = work.max(dim=-1)
            correct += ((best == target) & keep).sum()
            target_logit = work.gather(1, target[:, None]).squeeze(1)
            total = work.sub_(top[:, None]).exp_().sum(dim=-1)
            row_loss = total.log() + top - target_logit
            work.div_(total[:, None])
            work[torch.arange(work.shape[0], device=work.device), target] -= 1.0
            if all_valid:
                loss += row_loss.sum()
            else:
                loss += torch.where(keep, row_loss, 0.0).sum()
                work.mul_(keep[:, None])  # ignored rows get no gradient
            if work is not chunk:
                chunk.copy_(work)
        ctx.save_for_backward(hidden, weight, logits)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss, _grad_correct):  # type: ignore[override]
        hidden, weight, grad_logits = ctx.saved_tensors
        low = grad_logits.dtype
        grad_hidden = (grad_logits @ weight.to(low)).to(hidden.dtype).mul_(grad_loss)
        grad_weight = (grad_logits.t() @ hidden.to(low)).to(weight.dtype).mul_(grad_loss)
        grad_bias = grad_logits.sum(dim=0, dtype=torch.float32).to(weight.dtype).mul_(grad_loss)
        return grad_hidden, grad_weight, grad_bias, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of cross-entropy, number of argmax hits)`` of the logits ``hidden @ weight.T + bias``.

    For training: the ``[N, V]`` logits are never returned, and the memory they
    take is reused for their gradient (see ``_LinearCrossEntropy``). Rows whose
    target is negative (-100) are ignored: no loss, no hit, no gradient.
    """
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets)
