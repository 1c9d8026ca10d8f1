"""Text generation for ``GPTForCausalLM``: a key/value cache, sampling filters, the decoding loop.

The cached forward runs the model's own modules (embeddings, each block's
attention projections, norms and feed-forward network, the tied output
projection) so it stays in step with ``ptmcli.models.gpt``: the prompt is
encoded in one pass with causal scaled-dot-product attention, its keys and
values kept per layer; then each new token attends to the cache and adds its
own. A step costs one token's work instead of the whole sequence's.

When the cache reaches the context length, the last half of the sequence is
encoded again (positions restart from 0) and decoding goes on, so a learned
position table never runs out.

Sampling: temperature, then top-k (the k most likely tokens), then top-p (the
smallest set of most likely tokens whose probability reaches p), then a draw
from a seeded ``torch.Generator``. Temperature 0 is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ptmcli.models.layers import PreNormBlock


class KVCache:
    """Keys and values of every layer, ``[B, heads, capacity, head_dim]``, filled up to ``length``."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0

    def store(self, layer: int, start: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new ``[B, h, T, d]`` key/value at ``start``; return everything up to ``start + T``."""
        if self.keys[layer] is None:
            batch, heads, _, dim = key.shape
            shape = (batch, heads, self.capacity, dim)
            self.keys[layer] = key.new_empty(shape)
            self.values[layer] = value.new_empty(shape)
        stop = start + key.shape[2]
        if stop > self.capacity:
            raise ValueError(f"cache of {self.capacity} positions cannot hold {stop}")
        self.keys[layer][:, :, start:stop] = key
        self.values[layer][:, :, start:stop] = value
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]


def _attend(attention, x: torch.Tensor, cache: KVCache, layer: int, start: int) -> torch.Tensor:
    batch, length, hidden = x.shape
    qkv = attention.qkv(x).view(batch, length, 3, attention.num_heads, attention.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    keys, values = cache.store(layer, start, k, v)
    if start == 0:
        context = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
    elif length == 1:
        context = F.scaled_dot_product_attention(q, keys, values)  # one new token sees everything before it
    else:
        # Several new tokens after a cached prefix: each sees the prefix and the new tokens up to itself.
        visible = torch.arange(start + length, device=x.device)[None, :] <= torch.arange(start, start + length, device=x.device)[:, None]
        context = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
    return attention.out(context.transpose(1, 2).reshape(batch, length, hidden))


def _block(block, x: torch.Tensor, cache: KVCache, layer: int, start: int) -> torch.Tensor:
    """One Transformer block in eval mode (no dropout), with cached attention."""
    if isinstance(block, PreNormBlock):
        x = x + _attend(block.attention, block.attention_norm(x), cache, layer, start)
        return x + block.ffn(block.ffn_norm(x))
    x = block.attention_norm(x + _attend(block.attention, x, cache, layer, start))
    return block.ffn_norm(x + block.ffn(x))


def cached_logits(model, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Feed ``[B, T]`` new tokens after the cached ones; the next-token logits ``[B, vocab]`` after the last.

    An empty cache makes this the prefill; one token at a time is a decoding step.
    """
    gpt = model.gpt
    start = cache.length
    x = gpt.embed(input_ids, start)
    for i, block in enumerate(gpt.layers):
        x = _block(block, x, cache, i, start)
    cache.length = start + input_ids.shape[1]
    last = x[:, -1]
    if gpt.final_norm is not None:
        last = gpt.final_norm(last)
    return model.logits(last)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` highest logits of each row (ties broken by index); the rest become -inf.

    ``k <= 0`` or ``k >= vocab`` keeps everything.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    top = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their probability reaches ``p``; the rest -inf.

    A token is kept when the probability of the tokens more likely than it is
    below ``p``, so the most likely token always stays. ``p >= 1`` keeps everything.
    """
    if p >= 1.0:
        return logits
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    probs = ordered.float().softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs
    ordered = ordered.masked_fill(before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)


def next_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """``[B]`` ids chosen from ``[B, vocab]`` logits: argmax at temperature 0, else a filtered draw."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    scaled = filter_top_p(filter_top_k(scaled, top_k), top_p)
    return torch.multinomial(scaled.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@dataclass
class Continuation:
    ids: list[int]
    """Generated token ids, the stop token left out."""
    stopped: str
    """``eos`` (a stop token was generated) or ``length`` (``max_new_tokens`` reached)."""


@torch.no_grad()
def generate(
    model,
    prompt_ids: list[int],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
    context: int | None = None,
) -> list[Continuation]:
    """``num_samples`` continuations of one prompt, decoded together with a KV cache.

    ``context`` bounds the positions used (default: the model's); a prompt
    longer than it keeps its last ``context - 1`` tokens. Call in eval mode.
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    limit = context or model.config.max_position_embeddings
    limit = min(limit, model.config.max_position_embeddings)
    if limit < 2:
        raise ValueError(f"a context of {limit} positions leaves no room to generate")
    device = model.output_weight.device
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    sequence = torch.tensor(prompt_ids[-(limit - 1):], dtype=torch.long, device=device).repeat(num_samples, 1)
    generated = torch.zeros(num_samples, 0, dtype=torch.long, device=device)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    stopped_at = torch.full((num_samples,), -1, dtype=torch.long, device=device)
    cache = KVCache(len(model.gpt.layers), limit)
    logits = cached_logits(model, sequence, cache)
    for step in range(max_new_tokens):
        token = next_tokens(logits, temperature, top_k, top_p, generator)
        hit = torch.isin(token, stops) & ~done
        stopped_at = torch.where(hit, torch.full_like(stopped_at, step), stopped_at)
        done |= hit
        generated = torch.cat([generated, token[:, None]], dim=1)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        if cache.length == limit:
            # Out of positions: re-encode the recent half and continue from there.
            keep = torch.cat([sequence, generated], dim=1)[:, -(limit // 2):]
            cache = KVCache(len(model.gpt.layers), limit)
            logits = cached_logits(model, keep, cache)
            continue
        logits = cached_logits(model, token[:, None], cache)
    results = []
    for row in range(num_samples):
        end = int(stopped_at[row])
        ids = generated[row, : end if end >= 0 else generated.shape[1]].tolist()
        results.append(Continuation(ids, "eos" if end >= 0 else "length"))
    return results
