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

from ptmcli.models.kv_cache import LayerCache


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
        if module.bias is not None:  # LayerNorm(bias=False): the bias-free recipe
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


def encoder_attention_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The SDPA mask of an encoder's ``attention_mask``: a ``[B, T]`` padding mask (:func:`padding_attention_mask`),
    or a per-query pattern ``[B, T, T]`` / ``[B, 1, T, T]`` (query rows, key columns) used as given.

    A pattern is boolean (True: the query may attend to the key) or additive (added to the scores: 0, or -inf
    or a large negative number to hide); it already hides padded keys, and no query row may hide every key
    (SDPA would return NaN there and carry it into the next layer through the values).
    """
    if attention_mask is None or attention_mask.dim() == 2:
        return padding_attention_mask(attention_mask)
    return attention_mask[:, None] if attention_mask.dim() == 3 else attention_mask


def attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float, causal: bool = False
) -> torch.Tensor:
    """Softmax attention with dropout on the probabilities, written out for CPU training.

    On CPU, SDPA with ``dropout_p > 0`` leaves its fused kernel for a reference
    path that draws one random number per probability; this one is the same
    math with :func:`dropout`'s cheaper mask and is about 20% faster there.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores + mask if mask.is_floating_point() else scores.masked_fill(~mask, float("-inf"))
    if causal:
        length = scores.shape[-1]
        future = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu_(1)
        scores = scores.masked_fill(future, float("-inf"))
    return dropout(scores.softmax(-1), p, True) @ v


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused QKV projection, SDPA, an output projection.

    SDPA runs inference and all accelerator work; CPU training with attention
    dropout takes :func:`attention_with_dropout` instead (same math, faster there).

    The fused ``qkv`` weight is ``[3H, H]`` with the query rows first, then key, then
    value, so it splits into the three separate projections of other formats.
    ``bias=False`` leaves both projections without biases. ``head_dim`` given: ``num_heads`` heads of that
    width, fewer than ``hidden_size`` covers (a layer whose heads were pruned, ``ptm compress``).
    """

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float, bias: bool = True,
                 head_dim: int | None = None):
        super().__init__()
        if head_dim is None and hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.attention_dropout = attention_dropout
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(hidden_size, 3 * inner, bias=bias)
        self.out = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> torch.Tensor:
        """``causal`` hides later positions (decoders); ``mask`` is a padding mask, not combined with it, or an
        encoder's per-query pattern (:func:`encoder_attention_mask`).

        ``cache`` (incremental decoding, unpadded): ``x`` holds the new positions only; they attend to
        the cached ones and to each other causally, and their keys and values join the cache.
        """
        batch, length, hidden = x.shape
        # [B, T, 3, heads, d] -> three [B, heads, T, d] views without copies.
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            if mask is not None:
                raise ValueError("cached attention takes no padding mask")
            k, v, mask, causal = cache.extend(k, v)
        if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # an additive mask under autocast: SDPA wants the query's dtype
        p = self.attention_dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            context = attention_with_dropout(q, k, v, mask, p, causal)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.out(context)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``up`` (H -> I), GELU, ``down`` (I -> H).

    ``gelu="none"`` is the exact (erf) GELU of BERT; ``"tanh"`` the approximation GPT-2 used.
    ``activation_dropout`` drops inner activations before ``down`` (BART's recipe; 0 elsewhere).
    ``bias=False`` leaves both linears without biases.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, gelu: str = "none", activation_dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.gelu = gelu
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = F.gelu(self.up(x), approximate=self.gelu)
        return self.down(dropout(inner, self.activation_dropout, self.training))


class PostNormBlock(nn.Module):
    """Transformer encoder block with LayerNorm after each residual sum (BERT, original Transformer).

    ``bias=False``: no biases in the attention, the feed-forward network or the LayerNorms.
    """

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
        bias: bool = True,
    ):
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout, bias)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=bias)
        self.ffn = FeedForward(hidden_size, intermediate_size, gelu, activation_dropout, bias)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=bias)
        self.dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask, causal, cache)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class PreNormBlock(nn.Module):
    """Transformer block with LayerNorm before each branch (GPT-2, pre-LN BERT): the residual stream is never
    normalised, so the model using it puts a final LayerNorm after its last block.

    ``bias=False``: no biases in the attention, the feed-forward network or the LayerNorms.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
        gelu: str = "none",
        bias: bool = True,
    ):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=bias)
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout, bias)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps, bias=bias)
        self.ffn = FeedForward(hidden_size, intermediate_size, gelu, bias=bias)
        self.dropout = Dropout(hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), mask, causal, cache))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


# Logit rows turned into gradients at once: ~8 MB of fp32, so they stay in cache.
_CACHE_BYTES = 1 << 23
# Logit rows materialised per matmul: bounds the [N, V] buffer at large vocabularies
# and long batches (64 MB on CPU, 512 MB on accelerators, where bigger matmuls pay).
_CHUNK_BYTES = {"cpu": 1 << 26}
_DEFAULT_CHUNK_BYTES = 1 << 29


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias``, with the gradients made in the forward.

    The rows are processed in chunks. For each chunk the logits are computed,
    turned (a few cache-sized rows at a time) into ``softmax - onehot``, the
    gradient of the summed loss with respect to the logits, and immediately
    multiplied into the gradients of ``hidden`` and ``weight``. So no more than
    one chunk of logits ever exists, whatever the vocabulary or batch size, and
    autograd's separate log-softmax, NLL-gradient and softmax-backward passes over
    ``[N, V]`` never happen. Backward only scales the stored gradients.
    """

    @staticmethod
    def forward(ctx: Any, hidden, weight, bias, targets):  # type: ignore[override]
        need_grad = any(ctx.needs_input_grad[:3])
        rows_total, vocab = hidden.shape[0], weight.shape[0]
        kind = hidden.device.type
        budget = _CHUNK_BYTES.get(kind, _DEFAULT_CHUNK_BYTES)
        # The logits' dtype: autocast's (bf16) where it is on, as a Linear's output would be.
        low = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.result_type(hidden, weight)
        chunk_rows = max(1, budget // (torch.finfo(low).bits // 8 * vocab))
        cache_rows = max(1, _CACHE_BYTES // (4 * vocab)) if kind == "cpu" else chunk_rows
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        valid = targets >= 0
        all_valid = bool(valid.all())
        grad_hidden = grad_weight = grad_bias = None
        # Cast once for every chunk and both directions (autocast would cast the [V, D] weight again for each
        # product, and a second time in the gradient matmuls).
        hidden_low, weight_low = hidden.to(low), weight.to(low)
        if need_grad:
            grad_hidden = torch.empty_like(hidden)
            # A bias that is a buffer (BART's final_logits_bias) needs no gradient: skip its pass over the logits.
            wants_bias = bias is not None and ctx.needs_input_grad[2]
            grad_bias = torch.zeros(vocab, dtype=torch.float32, device=weight.device) if wants_bias else None
        for start in range(0, rows_total, chunk_rows):
            stop = min(rows_total, start + chunk_rows)
            part = hidden_low[start:stop]
            logits = part @ weight_low.t()  # under autocast: low precision, like a Linear
            for sub in range(0, stop - start, cache_rows):
                chunk = logits[sub : sub + cache_rows]
                work = chunk if chunk.dtype == torch.float32 else chunk.float()
                rows = slice(start + sub, min(stop, start + sub + cache_rows))
                keep = valid[rows]
                target = targets[rows].clamp(min=0)
                if bias is not None:
                    work.add_(bias)
                top, best = work.max(dim=-1)
                correct += ((best == target) & keep).sum()
                target_logit = work.gather(1, target[:, None]).squeeze(1)
                total = work.sub_(top[:, None]).exp_().sum(dim=-1)
                row_loss = total.log() + top - target_logit
                loss += row_loss.sum() if all_valid else torch.where(keep, row_loss, 0.0).sum()
                if need_grad:
                    work.div_(total[:, None])
                    work[torch.arange(work.shape[0], device=work.device), target] -= 1.0
                    if not all_valid:
                        work.mul_(keep[:, None])  # ignored rows get no gradient
                    if work is not chunk:
                        chunk.copy_(work)
            if need_grad:
                grad_hidden[start:stop] = logits @ weight_low
                # The first chunk's product is the [V, D] buffer itself and later chunks add into it in place:
                # a fresh buffer of that size costs a pass of page faults on CPU, zero-filled or not.
                if grad_weight is None:
                    grad_weight = (logits.t() @ part).float()
                elif low == grad_weight.dtype:
                    grad_weight.addmm_(logits.t(), part)
                else:
                    grad_weight += logits.t() @ part
                if grad_bias is not None:
                    grad_bias += logits.sum(dim=0, dtype=torch.float32)
            del logits
        if need_grad and grad_weight is None:  # no rows
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss, _grad_correct):  # type: ignore[override]
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        # Scaled in place (the [V, D] buffer is this node's alone; a second backward through the same graph is
        # refused by autograd's version check rather than given a rescaled gradient).
        grad_weight = grad_weight.mul_(grad_loss).to(ctx.weight_dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, grad_bias, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of cross-entropy, number of argmax hits)`` of the logits ``hidden @ weight.T + bias``.

    For language-model heads: the ``[N, V]`` logits are never returned and at
    most one bounded chunk of them exists at a time (see ``_LinearCrossEntropy``).
    ``bias`` may be None. Rows whose target is negative (-100) are ignored: no
    loss, no hit, no gradient.
    """
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets)
