"""Incremental decoding for encoder-decoders (``models.generation.Decoder``), shared by BART and T5.

``start`` encodes the sources once, computes every decoder layer's
cross-attention keys and values, and feeds the decoder-start token; each
``step`` then costs only its new tokens' work. A family's model names its
backbone (``backbone_name``: the module with ``encode``, ``decode`` and
``decoder.memory``) and how many positions its decoder can take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ptmcli.errors import PtmError
from ptmcli.models.cross_attention import Memory
from ptmcli.models.kv_cache import KVCache
from ptmcli.models.layers import padding_attention_mask


@dataclass
class Seq2SeqDecodingState:
    """Where decoding a batch stands: the decoder's cache and the encoder output's keys and values."""

    cache: KVCache
    memory: list[Memory]
    memory_mask: torch.Tensor | None
    """``[B, 1, 1, S]``: the source's padding, or None when nothing is padded."""


class Seq2SeqIncrementalDecoder:
    padding_side = "right"
    """Sources are padded after their end; the decoder side of every row starts together."""

    def __init__(self, model: Any, backbone_name: str, capacity: int) -> None:
        self.model = model
        self.backbone = getattr(model, backbone_name)
        self.capacity = capacity
        if self.capacity < 2:
            raise ValueError(f"a context of {self.capacity} positions leaves no room to generate")

    @property
    def device(self) -> torch.device:
        return self.model.output_weight.device

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Seq2SeqDecodingState]:
        """``[B, S]`` right-padded sources (padding found by the pad id unless ``attention_mask`` says) ->
        (the logits of the first target token, the state)."""
        config = self.model.config
        if attention_mask is None:
            attention_mask = (prompt_ids != config.pad_token_id).long()
        encoded, _ = self.backbone.encode(prompt_ids, attention_mask)
        state = Seq2SeqDecodingState(KVCache(config.decoder_layers, self.capacity), self.backbone.decoder.memory(encoded),
                                     padding_attention_mask(attention_mask))
        first = prompt_ids.new_full((prompt_ids.shape[0], 1), config.decoder_start_token_id)
        return self._last_logits(first, state), state

    @torch.no_grad()
    def step(self, state: Seq2SeqDecodingState, next_ids: torch.Tensor) -> tuple[torch.Tensor, Seq2SeqDecodingState]:
        """Feed ``[B, n]`` tokens after the state's; the logits ``[B, vocab]`` after the last (``state`` updated)."""
        if state.cache.length + next_ids.shape[1] > self.capacity:
            raise PtmError(f"the decoder's {self.capacity} positions are used up: ask for at most "
                           f"{self.capacity - 1} new tokens")
        return self._last_logits(next_ids, state), state

    def reorder(self, state: Seq2SeqDecodingState, rows: torch.Tensor, same_source: bool = False) -> Seq2SeqDecodingState:
        """Row ``rows[i]`` becomes row ``i``: the decoder's cache, the encoder output's keys and values and
        the source mask (beam search; repeated rows expand each source into its beams after one encoding).
        ``same_source``: each row comes from a beam of its own source, so the memory already is right."""
        state.cache.reorder(rows)
        if same_source:
            return state
        state.memory = [(keys.index_select(0, rows), values.index_select(0, rows)) for keys, values in state.memory]
        if state.memory_mask is not None:
            state.memory_mask = state.memory_mask.index_select(0, rows)
        return state

    def _last_logits(self, ids: torch.Tensor, state: Seq2SeqDecodingState) -> torch.Tensor:
        hidden, _ = self.backbone.decode(ids, state.memory, state.memory_mask, cache=state.cache)
        return self.model.logits(hidden[:, -1])
