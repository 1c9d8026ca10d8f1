"""UniLM's sequence-to-sequence LM (Dong et al., 2019): one encoder with a masked-LM head, reading a source and
writing a target in one sequence.

A pair is laid out ``[CLS] source [SEP] target [SEP]``, segment 0 then segment 1, under the seq2seq
self-attention mask (:func:`seq2seq_pattern`): source tokens see the whole source, target tokens see the
source and the target up to and including themselves. Finetuning (``ptmcli/finetuning/unilm_seq2seq.py``)
replaces target tokens by [MASK] and predicts them with the MLM head.

Decoding appends a [MASK] after the source and the target decoded so far and predicts it, one token per step,
behind the :class:`ptmcli.models.generation.Decoder` interface, so greedy decoding, sampling and beam search
are ``generation.py``'s and ``beam_search.py``'s. A target token sees only what is on its left, so its keys and
values never change once it is fed: each step feeds the token just chosen (kept in the cache) and a [MASK]
after it (whose keys and values the next step overwrites). ``cached=False`` runs the whole sequence at every
step instead; both give the same tokens.

Sources are right-padded, so the targets of a batch start in one column while their positions go on from each
row's own source length: every token is given its position (``position_ids``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.layers import encoder_attention_mask


def seq2seq_pattern(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]``, True where query (row) may attend to key (column): segment 0 (the source) sees the source,
    segment 1 (the target) the source and its own left, itself included. Padded keys are hidden; every
    position sees itself, so no query row is empty (a padded query's output is never read)."""
    real = attention_mask.bool()
    source = (token_type_ids == 0) & real
    place = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    left = place[None, :] <= place[:, None]
    pattern = source[:, None, :] | (~source[:, :, None] & left[None])
    return (pattern & real[:, None, :]) | torch.eye(attention_mask.shape[1], dtype=torch.bool, device=real.device)


def hidden_states(encoder: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention: torch.Tensor | None,
                  position_ids: torch.Tensor | None = None, caches: list | None = None) -> torch.Tensor:
    """The encoder's top layer ``[B, T, D]`` under ``attention`` (a ``[B, T, T]`` pattern, or None with ``caches``,
    whose ``extend`` says what the new queries see), each token at ``position_ids`` (default 0 .. T-1)."""
    x = encoder.embeddings(input_ids, token_type_ids, position_ids)
    mask = None if caches is not None else encoder_attention_mask(attention)
    for index, layer in enumerate(encoder.layers):
        x = layer(x, mask, False, None if caches is None else caches[index])
    return x if encoder.final_norm is None else encoder.final_norm(x)


class PrefixLM(nn.Module):
    """A pretraining model of a ``prefix_lm`` family (``ptmcli.models.family``) as a decoder of targets behind
    sources (``ptm generate``, finetuning's dev outputs). ``mask_id`` is the tokenizer's [MASK]."""

    def __init__(self, model: nn.Module, family: Family, mask_id: int | None) -> None:
        super().__init__()
        if mask_id is None:
            raise PtmError("the tokenizer has no [MASK] token, which UniLM's seq2seq decoding predicts at")
        self.model, self.family, self.mask_id, self.config = model, family, int(mask_id), model.config

    @property
    def encoder(self) -> nn.Module:
        return self.family.encoder(self.model)

    @property
    def head(self) -> nn.Module:
        return self.family.masked_lm_head(self.model)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.head.decoder.weight

    def incremental_decoder(self, context: int | None = None, cached: bool = True) -> PrefixLMDecoder:
        return PrefixLMDecoder(self, context or self.config.max_position_embeddings, cached)


class _LayerKeys:
    """One layer's keys and values (``[B, heads, capacity, d]``); what new queries see is the state's ``pending``."""

    def __init__(self, state: PrefixLMState) -> None:
        self.state = state
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def extend(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        start = self.state.length
        stop = start + key.shape[2]
        if self.keys is None:
            batch, heads, _, dim = key.shape
            capacity = self.state.ids.shape[1]
            self.keys, self.values = key.new_empty((batch, heads, capacity, dim)), value.new_empty((batch, heads, capacity, dim))
        self.keys[:, :, start:stop] = key
        self.values[:, :, start:stop] = value
        return self.keys[:, :, :stop], self.values[:, :, :stop], self.state.pending, False

    def reorder(self, rows: torch.Tensor) -> None:
        if self.keys is not None:
            self.keys, self.values = self.keys.index_select(0, rows), self.values.index_select(0, rows)


@dataclass
class PrefixLMState:
    """Columns ``0 .. length-1`` hold the fed tokens: the right-padded sources (``source_width`` columns), then
    the target tokens chosen so far."""

    ids: torch.Tensor
    segments: torch.Tensor
    positions: torch.Tensor
    real: torch.Tensor
    """``[B, capacity]``: False at the sources' padding."""
    next_position: torch.Tensor
    """``[B]``: the position of each row's next target token."""
    source_width: int
    length: int = 0
    layers: list[_LayerKeys] | None = None
    pending: torch.Tensor | None = None
    """``[B, 1, new, stop]``: what the queries of the forward pass under way see (cached decoding)."""


class PrefixLMDecoder:
    """:class:`ptmcli.models.generation.Decoder` of a :class:`PrefixLM`: ``start`` takes ``[CLS] source [SEP]``."""

    padding_side = "right"

    def __init__(self, lm: PrefixLM, capacity: int, cached: bool = True) -> None:
        self.lm, self.cached = lm, cached
        self.positions = lm.config.max_position_embeddings
        self.capacity = capacity
        if self.capacity < 2:
            raise ValueError(f"a context of {self.capacity} positions leaves no room to generate")

    @property
    def device(self) -> torch.device:
        return self.lm.output_weight.device

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, PrefixLMState]:
        batch, width = prompt_ids.shape
        device = prompt_ids.device
        real = torch.ones_like(prompt_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        capacity = max(self.capacity, width + 1)
        state = PrefixLMState(
            ids=prompt_ids.new_zeros((batch, capacity)), segments=prompt_ids.new_zeros((batch, capacity)),
            positions=prompt_ids.new_zeros((batch, capacity)), real=torch.ones(batch, capacity, dtype=torch.bool, device=device),
            next_position=real.sum(1), source_width=width)
        state.real[:, :width] = real
        if self.cached:
            state.layers = [_LayerKeys(state) for _ in self.lm.encoder.layers]
        positions = torch.arange(width, device=device).expand(batch, width)
        return self._feed(state, prompt_ids, torch.zeros_like(prompt_ids), positions, state.next_position), state

    @torch.no_grad()
    def step(self, state: PrefixLMState, next_ids: torch.Tensor) -> tuple[torch.Tensor, PrefixLMState]:
        """Feed ``[B, n]`` chosen target tokens; the logits of the token after them (``state`` updated)."""
        count = next_ids.shape[1]
        positions = state.next_position[:, None] + torch.arange(count, device=next_ids.device)
        logits = self._feed(state, next_ids, torch.ones_like(next_ids), positions, state.next_position + count)
        state.next_position = state.next_position + count
        return logits, state

    def reorder(self, state: PrefixLMState, rows: torch.Tensor, same_source: bool = False) -> PrefixLMState:
        for name in ("ids", "segments", "positions", "real", "next_position"):
            setattr(state, name, getattr(state, name).index_select(0, rows))
        for layer in state.layers or []:
            layer.reorder(rows)
        return state

    def _feed(self, state: PrefixLMState, ids: torch.Tensor, segments: torch.Tensor, positions: torch.Tensor,
              mask_position: torch.Tensor) -> torch.Tensor:
        """Put ``ids`` in the next columns with a [MASK] (at ``mask_position``) after them, run, and keep ``ids``:
        the [MASK]'s logits."""
        mask = ids.new_full((ids.shape[0], 1), self.lm.mask_id)
        ids = torch.cat([ids, mask], dim=1)
        segments = torch.cat([segments, torch.ones_like(mask)], dim=1)
        positions = torch.cat([positions, mask_position[:, None]], dim=1)
        start, stop = state.length, state.length + ids.shape[1]
        if stop > state.ids.shape[1]:
            raise PtmError(f"the decoder's {state.ids.shape[1]} columns are used up: ask for fewer new tokens")
        if int(positions.max()) >= self.positions:
            raise PtmError(f"source and output together need more than the model's {self.positions} positions: "
                           "ask for fewer new tokens or cut the sources shorter")
        state.ids[:, start:stop], state.segments[:, start:stop], state.positions[:, start:stop] = ids, segments, positions
        if self.cached:
            state.pending = self._visible(state, start, stop)
            hidden = hidden_states(self.lm.encoder, ids, segments, None, positions, state.layers)
        else:
            hidden = hidden_states(self.lm.encoder, state.ids[:, :stop], state.segments[:, :stop],
                                   self._visible(state, 0, stop)[:, 0], state.positions[:, :stop])
        state.length = stop - 1  # the [MASK]'s column takes the chosen token next
        return self.lm.head(hidden[:, -1])

    @staticmethod
    def _visible(state: PrefixLMState, start: int, stop: int) -> torch.Tensor:
        """``[B, 1, stop - start, stop]``: queries ``start .. stop-1`` see the real source columns, and the target
        columns up to themselves (UniLM's seq2seq mask over this layout)."""
        device = state.real.device
        queries = torch.arange(start, stop, device=device)[:, None]
        keys = torch.arange(stop, device=device)[None, :]
        seen = (keys < state.source_width) | (keys <= queries)
        return ((seen[None] & state.real[:, None, :stop]) | (keys == queries)[None])[:, None]
