"""Text generation for any model that decodes incrementally: the decoding interface, sampling, the loop.

A model whose family generates (``Family.generates``, or an encoder-decoder) has an
``incremental_decoder(context)`` method returning a :class:`Decoder`: ``start``
takes the prompts (a decoder-only model's context; an encoder-decoder's
sources, which it encodes once) and gives the logits of the first token to
generate and a decoding state holding the key/value cache; ``step`` feeds the
chosen tokens and gives the next logits; ``reorder`` picks and repeats rows of
the state (beam search). The model runs its own training modules on the cache
(``ptmcli.models.gpt.GPTDecoder``), so this file holds no forward pass: only
what is the same for every family, choosing tokens and knowing when to stop.

:func:`decode` runs a batch of inputs of unequal lengths, padded on the side
the decoder asks for (``padding_side``): greedy, sampling, or beam search
(``ptmcli.models.beam_search``). Greedy and beam search choose the tokens
``transformers``' ``generate()`` chooses on the same weights.

Sampling: temperature, then top-k (the k most likely tokens), then top-p (the
smallest set of most likely tokens whose probability reaches p), then a draw
from a seeded ``torch.Generator``. Temperature 0 is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Decoder(Protocol):
    """Incremental decoding of one model; the state it hands back is opaque to the caller."""

    device: torch.device
    padding_side: str
    """``left`` (prompts end in the same column: decoder-only) or ``right`` (sources: encoder-decoder)."""

    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        """``[B, T]`` prompts, padded as ``padding_side`` says and marked by ``attention_mask`` (1 real,
        0 padding; None: no padding) -> (logits ``[B, vocab]`` of the first token to generate, state)."""
        ...

    def step(self, state: Any, next_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``[B, n]`` tokens after the state's -> (logits ``[B, vocab]`` after the last of them, state)."""
        ...

    def reorder(self, state: Any, rows: torch.Tensor, same_source: bool = False) -> Any:
        """The state whose row ``i`` is row ``rows[i]`` of ``state`` (which it may reuse); a row repeated
        ``k`` times expands the batch, so a source is encoded once for all its beams. ``same_source``:
        every row stays among the beams of its own input, so what depends only on the input may stay."""
        ...


class PositionBoundDecoder:
    """The part every model's decoder shares: the model, and how many positions a sequence may use (the
    model's table, or less when ``context`` says); subclasses implement ``start``/``step``/``reorder``."""

    def __init__(self, model: Any, context: int | None = None) -> None:
        positions = model.config.max_position_embeddings
        self.model = model
        self.capacity = min(context or positions, positions)
        if self.capacity < 2:
            raise ValueError(f"a context of {self.capacity} positions leaves no room to generate")

    @property
    def device(self) -> torch.device:
        return self.model.output_weight.device


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
    score: float | None = None
    """Beam search: the summed log-probability divided by length ** length_penalty."""


@dataclass(frozen=True)
class Settings:
    """How to decode; the defaults are greedy decoding of up to 50 tokens."""

    max_new_tokens: int = 50
    min_new_tokens: int = 0
    """Stop tokens are impossible before this many new tokens."""
    num_beams: int = 1
    """More than 1: beam search (``temperature`` and the filters then do not apply)."""
    length_penalty: float = 1.0
    """Beam search: a finished hypothesis scores its log-probability / (new tokens) ** length_penalty."""
    early_stopping: bool | str = False
    """Beam search: True stops an input once it has ``num_beams`` finished hypotheses; False also
    stops it when the best running beam, scored at its current length, cannot beat the worst of
    them; ``never`` when it could not even at ``max_new_tokens`` (transformers' meanings)."""
    num_return_sequences: int = 1
    temperature: float = 0.0
    """0: greedy; above 0: sampling, after ``top_k`` and ``top_p``."""
    top_k: int = 0
    top_p: float = 1.0
    stop_ids: tuple[int, ...] = ()
    forced_bos_id: int | None = None
    """Forced as the first new token when set (a config's ``forced_bos_token_id``)."""
    pad_id: int = 0
    """What fills padding and the steps after a row stopped (never seen by a real token)."""

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams {self.num_beams}: must be at least 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {self.max_new_tokens}: must be positive")
        if self.num_return_sequences < 1 or (self.num_beams > 1 and self.num_return_sequences > self.num_beams):
            raise ValueError(f"num_return_sequences {self.num_return_sequences}: from 1 to num_beams ({self.num_beams})")


def constrain(scores: torch.Tensor, step: int, settings: Settings) -> torch.Tensor:
    """The rules every strategy obeys before choosing the ``step``-th new token: no stop token before
    ``min_new_tokens``, the forced first token. ``scores`` are logits or log-probabilities."""
    if step < settings.min_new_tokens and settings.stop_ids:
        scores = scores.clone()
        scores[:, list(settings.stop_ids)] = float("-inf")
    if step == 0 and settings.forced_bos_id is not None:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, settings.forced_bos_id] = 0.0
        scores = forced
    return scores


def pad_batch(inputs: Sequence[Sequence[int]], side: str, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, T]`` ids and their 1/0 mask (None when all inputs are as long), padded on ``side``."""
    if any(len(ids) == 0 for ids in inputs):
        raise ValueError("generation needs at least one input token per row")
    width = max(len(ids) for ids in inputs)
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(inputs), width, dtype=torch.long)
    for row, tokens in enumerate(inputs):
        where = slice(width - len(tokens), width) if side == "left" else slice(0, len(tokens))
        ids[row, where] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, where] = 1
    every = all(len(tokens) == width for tokens in inputs)
    return ids.to(device), None if every else mask.to(device)


def start(decoder: Decoder, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
    """``decoder.start``; the mask is passed only when something is padded, so a decoder without
    padding support serves batches of equal inputs."""
    return decoder.start(ids) if mask is None else decoder.start(ids, mask)


@torch.no_grad()
def decode(
    model,
    inputs: Sequence[Sequence[int]],
    settings: Settings,
    *,
    generator: torch.Generator | None = None,
    context: int | None = None,
) -> list[list[Continuation]]:
    """``settings.num_return_sequences`` continuations of each input (prompts for a decoder-only model,
    sources for an encoder-decoder), decoded together as one padded batch. Call in eval mode.

    ``context`` bounds the decoder's positions (default: the model's); what a prompt
    longer than that keeps is the decoder's choice (GPT: its last ``context - 1`` tokens).
    """
    # A cache no longer than the run needs: beam search copies it at every step.
    needed = max(len(ids) for ids in inputs) + settings.max_new_tokens + 1 if inputs else None
    decoder: Decoder = model.incremental_decoder(needed if context is None else min(context, needed))
    ids, mask = pad_batch(inputs, getattr(decoder, "padding_side", "left"), settings.pad_id, decoder.device)
    if settings.num_beams > 1:
        from ptmcli.models.beam_search import beam_search

        return beam_search(decoder, ids, mask, settings)
    logits, state = start(decoder, ids, mask)
    copies = settings.num_return_sequences
    if copies > 1:
        rows = torch.arange(ids.shape[0], device=ids.device).repeat_interleave(copies)
        logits, state = logits.index_select(0, rows), decoder.reorder(state, rows)
    flat = _sample_loop(decoder, logits, state, settings, generator)
    return [flat[i : i + copies] for i in range(0, len(flat), copies)]


def _sample_loop(decoder: Decoder, logits: torch.Tensor, state: Any, settings: Settings,
                 generator: torch.Generator | None) -> list[Continuation]:
    """Greedy or sampled tokens for every row until each has stopped or ``max_new_tokens`` are out."""
    rows, device = logits.shape[0], logits.device
    stops = torch.tensor(sorted(set(settings.stop_ids)), dtype=torch.long, device=device)
    generated = torch.zeros(rows, settings.max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    stopped_at = torch.full((rows,), -1, dtype=torch.long, device=device)
    steps = settings.max_new_tokens
    for step in range(settings.max_new_tokens):
        logits = constrain(logits, step, settings)
        token = next_tokens(logits, settings.temperature, settings.top_k, settings.top_p, generator)
        # A stopped row goes on feeding padding; nothing real sees it.
        token = token.masked_fill(done, settings.pad_id)
        hit = torch.isin(token, stops) & ~done
        stopped_at = torch.where(hit, torch.full_like(stopped_at, step), stopped_at)
        done |= hit
        generated[:, step] = token
        # One host sync per step: the loop ends as soon as every row has stopped.
        if step == settings.max_new_tokens - 1 or bool(done.all()):
            steps = step + 1
            break
        logits, state = decoder.step(state, token[:, None])
    results = []
    for row, end in zip(generated[:, :steps].tolist(), stopped_at.tolist(), strict=True):
        results.append(Continuation(row[:end] if end >= 0 else row, "eos" if end >= 0 else "length"))
    return results


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

    ``context`` bounds the positions used (default: the model's); what a prompt
    longer than that keeps is the decoder's choice (GPT: its last
    ``context - 1`` tokens). Call in eval mode.
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token")
    settings = Settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        stop_ids=tuple(stop_ids))
    return [row[0] for row in decode(model, [prompt_ids] * num_samples, settings, generator=generator, context=context)]
