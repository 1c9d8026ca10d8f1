"""Text generation for any model that decodes incrementally: the decoding interface, sampling, the loop.

A model whose family generates (``Family.generates``) has an
``incremental_decoder(context)`` method returning a :class:`Decoder`: ``start``
takes the prompt (a decoder-only model's context; an encoder-decoder's source,
which it encodes) and gives the logits of the first token to generate and a
decoding state holding the key/value cache; ``step`` feeds the chosen tokens
and gives the next logits. The model runs its own training modules on the
cache (``ptmcli.models.gpt.GPTDecoder``), so this file holds no forward pass:
only what is the same for every family, choosing tokens and knowing when to
stop.

Sampling: temperature, then top-k (the k most likely tokens), then top-p (the
smallest set of most likely tokens whose probability reaches p), then a draw
from a seeded ``torch.Generator``. Temperature 0 is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Decoder(Protocol):
    """Incremental decoding of one model; the state it hands back is opaque to the caller."""

    device: torch.device

    def start(self, prompt_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``[B, T]`` prompts -> (logits ``[B, vocab]`` of the first token to generate, state)."""
        ...

    def step(self, state: Any, next_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``[B, n]`` tokens after the state's -> (logits ``[B, vocab]`` after the last of them, state)."""
        ...


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
    """``num_samples`` continuations of one prompt, decoded together by the model's :class:`Decoder`.

    ``context`` bounds the positions used (default: the model's); what a
    prompt longer than that keeps is the decoder's choice (GPT: its last
    ``context - 1`` tokens). Call in eval mode.
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    decoder: Decoder = model.incremental_decoder(context)
    device = decoder.device
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device).repeat(num_samples, 1)
    generated = torch.zeros(num_samples, 0, dtype=torch.long, device=device)
    done = torch.zeros(num_samples, dtype=torch.bool, device=device)
    stopped_at = torch.full((num_samples,), -1, dtype=torch.long, device=device)
    logits, state = decoder.start(prompt)
    for step in range(max_new_tokens):
        token = next_tokens(logits, temperature, top_k, top_p, generator)
        hit = torch.isin(token, stops) & ~done
        stopped_at = torch.where(hit, torch.full_like(stopped_at, step), stopped_at)
        done |= hit
        generated = torch.cat([generated, token[:, None]], dim=1)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits, state = decoder.step(state, token[:, None])
    results = []
    for row in range(num_samples):
        end = int(stopped_at[row])
        ids = generated[row, : end if end >= 0 else generated.shape[1]].tolist()
        results.append(Continuation(ids, "eos" if end >= 0 else "length"))
    return results
