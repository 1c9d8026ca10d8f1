"""T5 (Raffel et al., 2020): an encoder-decoder with relative position buckets and RMS-normalised pre-LN blocks.

Read top to bottom: the config and presets, the normalisation, the relative
position bias, attention, the feed-forward network, the blocks and stacks,
the trunk, the conditional-generation model, incremental decoding, the family.

What sets T5 apart from BART (``bart.py``):

- every branch reads its input through an RMS norm (scale only: no mean, no
  bias, the variance in fp32) and each stack ends with one more, after its
  last block;
- no projection has a bias, and attention scores are *not* divided by
  sqrt(d_kv): T5's initialisation folds that factor into the query weights;
- positions are not embedded: each self-attention adds a learned bias per head
  and per *bucket* of the key's offset from the query (exact for short offsets,
  logarithmic up to ``relative_attention_max_distance``, bidirectional in the
  encoder, backward-only in the decoder). One table per stack, used by all its
  layers (the published weights keep it in the first layer); cross-attention
  has none;
- ``d_kv``, the width of a head, is its own hyper-parameter (``head_size``), so
  heads * d_kv need not be d_model;
- the feed-forward is ReLU (T5 v1.0) or a gated GELU, tanh approximation
  (v1.1): ``gelu(x W0) * (x W1)``;
- v1.0 projects onto the shared embedding, after scaling the decoder's output
  by d_model ** -0.5; v1.1 has its own ``lm_head`` and no scaling;
- the decoder starts from the padding token.

Dropout sits where T5 puts it: on the embeddings, on each branch before the
residual sum, on attention probabilities, on the feed-forward's inner
activations and after each stack's final norm.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.bart import causal_padding_mask, shift_right
from ptmcli.models.cross_attention import Memory
from ptmcli.models.encoder_decoder import EncoderDecoderFamily, add_lm_terms, encode_then_decode
from ptmcli.models.framing import Framing, first_token
from ptmcli.models.kv_cache import KVCache, LayerCache
from ptmcli.models.layers import Dropout, dropout, padding_attention_mask
from ptmcli.models.seq2seq_decoding import Seq2SeqIncrementalDecoder

FEED_FORWARDS = ("relu", "gated-gelu")
DEFAULT_CONTEXT = 512
"""Decoder positions an incremental decoder holds when not told: T5 has no position table to bound it."""


@dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 encoder-decoder; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the shared embedding)."""
    hidden_size: int
    """Width of the residual stream (d_model)."""
    num_layers: int
    """Encoder blocks (the layers that features and finetuning read)."""
    num_heads: int
    """Attention heads per block, encoder and decoder."""
    intermediate_size: int
    """Inner width of every feed-forward network (d_ff)."""
    head_size: int = 64
    """Width of one attention head (d_kv); heads * head_size need not equal hidden_size."""
    num_decoder_layers: int | None = None
    """Decoder blocks; None is as many as the encoder has."""
    feed_forward: str = "relu"
    """``relu`` (T5 v1.0) or ``gated-gelu`` (v1.1: gelu(x W0) * x W1, GELU's tanh approximation)."""
    relative_attention_num_buckets: int = 32
    """Buckets of query-key offsets, each with a learned bias per head."""
    relative_attention_max_distance: int = 128
    """Offsets from this far on share the last bucket."""
    hidden_dropout: float = 0.1
    """T5's one dropout rate: embeddings, branches, attention probabilities, feed-forward inner activations."""
    layer_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    """Project onto the shared embedding (v1.0); False: a separate ``lm_head`` (v1.1)."""
    scale_decoder_outputs: bool | None = None
    """Multiply the decoder's output by hidden_size ** -0.5 before the projection; None: when tied (v1.0)."""
    initializer_factor: float = 1.0
    """Scales T5's initialisation (1.0 in published models)."""
    pad_token_id: int = 0
    """Id of the padding token (``<pad>``, 0 in T5's vocabulary)."""
    decoder_start_token_id: int = 0
    """The token the decoder reads before the first target token (T5: the padding token)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "head_size",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) < 1:
                raise PtmError(f"t5 config: {name} must be positive, got {getattr(self, name)}")
        if self.decoder_layers < 1:
            raise PtmError("t5 config: the decoder needs at least one layer")
        if self.feed_forward not in FEED_FORWARDS:
            raise PtmError(f"t5 config: feed_forward {self.feed_forward!r} is not one of {', '.join(FEED_FORWARDS)}")
        if self.scales_output and not self.tie_word_embeddings:
            raise PtmError("t5 config: scale_decoder_outputs applies to a tied projection only (T5 v1.0)")

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def scales_output(self) -> bool:
        return self.tie_word_embeddings if self.scale_decoder_outputs is None else self.scale_decoder_outputs

    @property
    def inner_size(self) -> int:
        """Width of the attention's queries, keys and values over all heads."""
        return self.num_heads * self.head_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> T5Config:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"t5 config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise PtmError(f"t5 config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(layers: int, hidden: int, heads: int, ff: int, head_size: int = 64, v1_1: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": ff,
                              "head_size": head_size}
    if v1_1:
        values.update(feed_forward="gated-gelu", tie_word_embeddings=False)
    return values


PRESETS: dict[str, dict[str, Any]] = {
    "t5-tiny": _preset(2, 64, 4, 256, head_size=16),
    "t5-mini": _preset(4, 256, 4, 1024),
    "t5-small": _preset(6, 512, 8, 2048),
    "t5-base": _preset(12, 768, 12, 3072),
    "t5-v1_1-small": _preset(8, 512, 6, 1024, v1_1=True),
    "t5-v1_1-base": _preset(12, 768, 12, 2048, v1_1=True),
}


def preset_config(name: str, **overrides: Any) -> T5Config:
    """The config of a named preset (vocab_size 32128, T5's, unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown T5 preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 32128, **PRESETS[name], **overrides}
    for key in ("pad_token_id", "decoder_start_token_id"):
        if values.get(key) is None:
            values.pop(key, None)
    return T5Config.from_dict(values)


class RMSNorm(nn.Module):
    """T5's layer norm: divide by the root mean square (computed in fp32), scale; no mean, no bias."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        normed = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            normed = normed.to(self.weight.dtype)
        return self.weight * normed


def relative_buckets(offsets: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """The bucket of each ``key - query`` offset.

    Bidirectional: half the buckets for keys after the query, half for those
    before. Causal: only offsets <= 0 exist (later keys are masked anyway) and
    all buckets describe them. Within a half, the first half of its buckets are
    exact distances, the rest grow logarithmically up to ``max_distance``, beyond
    which everything shares the last bucket.
    """
    bucket = torch.zeros_like(offsets)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (offsets > 0).long() * num_buckets
        distance = offsets.abs()
    else:
        distance = (-offsets).clamp(min=0)
    exact = num_buckets // 2
    # max(distance, 1) keeps log finite; those rows take the exact branch anyway.
    scaled = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    far = (exact + scaled.long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """A learned bias per head and per offset bucket, added to the attention scores of every layer."""

    def __init__(self, config: T5Config, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.relative_attention_bias = nn.Embedding(self.num_buckets, config.num_heads)

    def forward(self, queries: int, keys: int, start: int = 0) -> torch.Tensor:
        """``[1, heads, queries, keys]`` for queries at positions ``start`` .. ``start + queries - 1``
        and keys at 0 .. ``keys - 1`` (a cached decoding step: only its own rows)."""
        device = self.relative_attention_bias.weight.device
        query_pos = torch.arange(start, start + queries, device=device)[:, None]
        key_pos = torch.arange(keys, device=device)[None, :]
        buckets = relative_buckets(key_pos - query_pos, self.bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)


def _scores_mask(bias: torch.Tensor | None, visible: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """What is added to the scores: the position bias, and the dtype's lowest value where a key is hidden."""
    if visible is None:
        return None if bias is None else bias.to(dtype)
    if bias is None:
        bias = torch.zeros((), dtype=dtype, device=visible.device)
    return bias.to(dtype).masked_fill(~visible, torch.finfo(dtype).min)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, added: torch.Tensor | None, p: float) -> torch.Tensor:
    """Unscaled softmax attention with an additive mask; dropout ``p`` on the probabilities."""
    if p > 0.0 and q.device.type == "cpu":
        # SDPA's CPU dropout leaves its fused kernel; this is the same math with ptm's cheaper dropout.
        scores = q @ k.transpose(-1, -2)
        if added is not None:
            scores = scores + added
        return dropout(scores.softmax(-1, dtype=torch.float32).to(q.dtype), p, True) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=added, dropout_p=p, scale=1.0)


class T5SelfAttention(nn.Module):
    """Multi-head self-attention, unscaled, with the stack's position bias added to the scores.

    ``qkv`` is one fused ``[3 * heads * d_kv, H]`` projection (query rows first), so it
    splits into T5's ``q``, ``k`` and ``v``; ``out`` is T5's ``o``.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.attention_dropout = config.hidden_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.inner_size, bias=False)
        self.out = nn.Linear(config.inner_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, visible: torch.Tensor | None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """``bias`` ``[1, heads, T, keys]``; ``visible`` a boolean mask broadcast to ``[B, heads, T, keys]``
        (None: every key). With a ``cache``, the keys are the cached positions and ``x``'s, and
        ``visible`` is the cache's own (causal, padding) rule."""
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            k, v, visible, causal = cache.extend(k, v)
            if causal:
                visible = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril_(k.shape[2] - length)
        p = self.attention_dropout if self.training else 0.0
        context = _attend(q, k, v, _scores_mask(bias, visible, q.dtype), p)
        return self.out(context.transpose(1, 2).reshape(batch, length, -1))


class T5CrossAttention(nn.Module):
    """Attention from the decoder to the encoder's output, unscaled and without position bias; ``kv`` is the
    fused key and value projection (key rows first), computed once per source (:meth:`memory`)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.attention_dropout = config.hidden_dropout
        self.query = nn.Linear(config.hidden_size, config.inner_size, bias=False)
        self.kv = nn.Linear(config.hidden_size, 2 * config.inner_size, bias=False)
        self.out = nn.Linear(config.inner_size, config.hidden_size, bias=False)

    def memory(self, encoded: torch.Tensor) -> Memory:
        batch, length, _ = encoded.shape
        kv = self.kv(encoded).view(batch, length, 2, self.num_heads, self.head_size)
        keys, values = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return keys, values

    def forward(self, x: torch.Tensor, memory: Memory, visible: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.query(x).view(batch, length, self.num_heads, self.head_size).transpose(1, 2)
        p = self.attention_dropout if self.training else 0.0
        context = _attend(q, *memory, _scores_mask(None, visible, q.dtype), p)
        return self.out(context.transpose(1, 2).reshape(batch, length, -1))


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation, written out: the same formula as ``F.gelu(approximate="tanh")``, evaluated
    in the order T5 v1.1's reference code does, which keeps outputs equal to the last bit."""
    return 0.5 * x * (1.0 + torch.tanh(_GELU_C * (x + 0.044715 * torch.pow(x, 3.0))))


class T5FeedForward(nn.Module):
    """``relu``: down(relu(up x)); ``gated-gelu``: down(gelu_tanh(gate x) * up x). Dropout on the inner
    activations."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.gated = config.feed_forward == "gated-gelu"
        if self.gated:
            self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = gelu_tanh(self.gate(x)) * self.up(x) if self.gated else F.relu(self.up(x))
        return self.down(self.dropout(inner))


class T5Block(nn.Module):
    """Pre-LN block: self-attention, (decoder) cross-attention, feed-forward, each ``x + dropout(f(norm(x)))``."""

    def __init__(self, config: T5Config, decoder: bool):
        super().__init__()
        eps = config.layer_norm_eps
        self.attention_norm = RMSNorm(config.hidden_size, eps)
        self.attention = T5SelfAttention(config)
        if decoder:
            self.cross_attention_norm = RMSNorm(config.hidden_size, eps)
            self.cross_attention = T5CrossAttention(config)
        self.ffn_norm = RMSNorm(config.hidden_size, eps)
        self.ffn = T5FeedForward(config)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, visible: torch.Tensor | None,
                memory: Memory | None = None, memory_visible: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), bias, visible, cache))
        if memory is not None:
            x = x + self.dropout(self.cross_attention(self.cross_attention_norm(x), memory, memory_visible))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class T5Stack(nn.Module):
    """Blocks, the stack's relative position bias (computed once, shared by every layer), the final norm."""

    def __init__(self, config: T5Config, decoder: bool):
        super().__init__()
        self.is_decoder = decoder
        self.position_bias = RelativePositionBias(config, bidirectional=not decoder)
        self.layers = nn.ModuleList(T5Block(config, decoder) for _ in range(config.decoder_layers if decoder else config.num_layers))
        self.final_norm = RMSNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor | None = None, memory: list[Memory] | None = None,
                memory_visible: torch.Tensor | None = None, cache: KVCache | None = None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(the normed top, L + 1 states when asked: the embeddings and each block's output, the last one
        before the final norm). ``visible``: boolean ``[B, 1, 1|T, T]`` (None: every key; in the decoder, causal). With a
        ``cache``, ``tokens`` are the positions after the cached ones."""
        length = tokens.shape[1]
        start = 0 if cache is None else cache.length
        bias = self.position_bias(length, start + length, start)
        if self.is_decoder and cache is None and visible is None:
            visible = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril_()
        x = self.dropout(tokens)
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, visible, None if memory is None else memory[i], memory_visible,
                      None if cache is None else cache.layers[i])
            states.append(x)
        top = self.dropout(self.final_norm(x))
        return top, tuple(states) if output_hidden_states else ()

    def memory(self, encoded: torch.Tensor) -> list[Memory]:
        """Each decoder layer's cross-attention keys and values of the encoder output."""
        return [layer.cross_attention.memory(encoded) for layer in self.layers]


class T5Model(nn.Module):
    """The encoder-decoder trunk: the shared token embedding, the encoder and the decoder."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = T5Stack(config, decoder=False)
        self.decoder = T5Stack(config, decoder=True)
        init_t5_weights(self, config)

    def tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               output_hidden_states: bool = False,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The encoder's (top, its L + 1 states when asked, the last one the normed top, as transformers
        gives them) for ``[B, S]`` sources; ``attention_mask`` 1/0; ``embedded``: ``tokens(input_ids)``
        when the caller already has it."""
        top, states = self.encode_raw(input_ids, attention_mask, output_hidden_states, embedded)
        return top, (*states[:-1], top) if output_hidden_states else ()

    def encode_raw(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   output_hidden_states: bool = False,
                   embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`encode` with the last block's own output as the last state (before the final norm)."""
        tokens = self.tokens(input_ids) if embedded is None else embedded
        return self.encoder(tokens, padding_attention_mask(attention_mask), output_hidden_states=output_hidden_states)

    def decode(self, decoder_input_ids: torch.Tensor, memory: list[Memory], memory_visible: torch.Tensor | None,
               decoder_attention_mask: torch.Tensor | None = None, cache: KVCache | None = None,
               output_hidden_states: bool = False,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        visible = None if cache is not None else causal_padding_mask(decoder_attention_mask)
        tokens = self.tokens(decoder_input_ids) if embedded is None else embedded
        top, states = self.decoder(tokens, visible, memory, memory_visible, cache, output_hidden_states)
        return top, (*states[:-1], top) if output_hidden_states else ()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> dict[str, Any]:
        """``hidden`` (decoder top ``[B, T, H]``), ``encoder_hidden``; with ``output_hidden_states`` also
        ``encoder_hidden_states`` and ``decoder_hidden_states``."""
        return encode_then_decode(self, "T5", input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                  output_hidden_states)


def init_t5_weights(module: nn.Module, config: T5Config) -> None:
    """T5's initialisation: normal with std 1/sqrt(fan-in) for projections, the query's also divided by
    sqrt(d_kv) (the attention's missing scale), std 1 for the embedding; norms at 1."""
    factor, hidden = config.initializer_factor, config.hidden_size
    for sub in module.modules():
        if isinstance(sub, RMSNorm):
            nn.init.constant_(sub.weight, factor)
        elif isinstance(sub, T5SelfAttention):
            inner = config.inner_size
            with torch.no_grad():
                nn.init.normal_(sub.qkv.weight[:inner], std=factor * (hidden * config.head_size) ** -0.5)
                nn.init.normal_(sub.qkv.weight[inner:], std=factor * hidden ** -0.5)
            nn.init.normal_(sub.out.weight, std=factor * inner ** -0.5)
        elif isinstance(sub, T5CrossAttention):
            nn.init.normal_(sub.query.weight, std=factor * (hidden * config.head_size) ** -0.5)
            nn.init.normal_(sub.kv.weight, std=factor * hidden ** -0.5)
            nn.init.normal_(sub.out.weight, std=factor * config.inner_size ** -0.5)
        elif isinstance(sub, T5FeedForward):
            for linear in (sub.up, getattr(sub, "gate", None)):
                if linear is not None:
                    nn.init.normal_(linear.weight, std=factor * hidden ** -0.5)
            nn.init.normal_(sub.down.weight, std=factor * config.intermediate_size ** -0.5)
        elif isinstance(sub, RelativePositionBias):
            nn.init.normal_(sub.relative_attention_bias.weight, std=factor * hidden ** -0.5)
        elif isinstance(sub, T5Model):
            nn.init.normal_(sub.word_embeddings.weight, std=factor)


class T5ForConditionalGeneration(nn.Module):
    """T5 with its LM head: the shared embedding (v1.0, the decoder output scaled first) or ``lm_head`` (v1.1)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.t5 = T5Model(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            nn.init.normal_(self.lm_head.weight, std=config.initializer_factor)
        self.output_scale = config.hidden_size ** -0.5 if config.scales_output else 1.0

    def tied_weights(self) -> dict[str, str]:
        """No copy of a weight exists: a tied projection reads the embedding parameter itself."""
        return {}

    def tie_weights(self) -> None:
        """Nothing to re-tie (see :meth:`tied_weights`)."""

    @property
    def output_weight(self) -> torch.Tensor:
        return self.t5.word_embeddings.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of decoder states."""
        return F.linear(hidden * self.output_scale, self.output_weight)

    def incremental_decoder(self, context: int | None = None) -> Seq2SeqIncrementalDecoder:
        """This model's decoder for ``models.generation`` (at most ``context`` decoder positions). Relative
        positions have no table to run out of: the cache is sized by ``context`` or DEFAULT_CONTEXT."""
        return Seq2SeqIncrementalDecoder(self, "t5", context or DEFAULT_CONTEXT)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **batch: Any) -> dict[str, torch.Tensor]:
        """Summed next-token loss of a two-sequence batch (``ptmcli.data.seq2seq``), as BART's forward:
        ``hidden``, ``encoder_hidden``; with ``labels`` ``lm_loss_sum``, ``lm_count``, ``lm_correct``;
        ``logits`` without labels or under ``torch.no_grad()`` (with gradients the loss is fused with
        the projection). Other batch keys are the loop's and are ignored."""
        if decoder_input_ids is None and labels is not None:
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        out = self.t5(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)
        hidden = out["hidden"]
        if labels is None or not torch.is_grad_enabled():
            out["logits"] = self.logits(hidden)
        if labels is None:
            return out
        return add_lm_terms(out, labels, hidden * self.output_scale, self.output_weight, None)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values (a tied embedding once); optionally without the embedding and output tables."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.t5.word_embeddings.weight.numel()
            if not self.config.tie_word_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.0) -> float:
        """Training flops (forward + backward) per source token, the target as long as the source:
        ``6 * (block matrices + V*H)`` plus attention, ``12 * L * inner * T`` for the encoder's
        self-attention and as much again for each of the decoder's self- and cross-attention."""
        cfg = self.config
        blocks = sum(m.weight.numel() for stack in (self.t5.encoder, self.t5.decoder)
                     for m in stack.layers.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.inner_size * seq_len * (cfg.num_layers + 2 * cfg.decoder_layers)
        return 6.0 * (blocks + cfg.vocab_size * cfg.hidden_size) + attention


class T5Family(EncoderDecoderFamily):
    """T5: an encoder-decoder; its stack (features, finetuning's encoder) is the encoder's. Texts are framed
    as T5's tokenizer frames them, ``a </s>`` and ``a </s> b </s>``."""

    name, title = "t5", "T5"
    config_class, model_class, presets = T5Config, T5ForConditionalGeneration, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "t5-mini", "t5-tiny"
    # The decoder is a part too: an encoder-only file (T5EncoderModel) converts without it.
    head_parts = {"lm": "lm_head.", "decoder": "t5.decoder."}
    encoder_prefix = "t5."
    bottom_prefixes = ("t5.word_embeddings.", "t5.encoder.position_bias.")
    # T5 has no start token; its decoder starts from <pad>, which stands in where a task layout needs one.
    task_tokens = (("bos", "cls", "pad"), ("eos", "sep"), ("eos", "sep"))

    def model_config(self, preset, tokenizer, **overrides):
        # The decoder starts from the padding token, as T5's does.
        if tokenizer.pad_id is not None:
            overrides.setdefault("decoder_start_token_id", tokenizer.pad_id)
        return super().model_config(preset, tokenizer, **overrides)

    def head_dropout(self, config):
        return config.hidden_dropout

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        # The top entry is after the final norm (transformers' hidden_states[-1]) unless a mix learned on
        # the last block's own output asks for that (``normed_top`` False).
        trunk = self.encoder(model)
        last, states = (trunk.encode if normed_top else trunk.encode_raw)(input_ids, attention_mask, True)
        return last, list(states)

    def framing(self, tokenizer) -> Framing:
        end = first_token(tokenizer, "eos", "sep")
        if end is None:
            raise PtmError("the checkpoint's tokenizer has no </s> token, which T5 inputs end with")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((), (end,), (end,), 0, 0, False, True, pad)

    def check_tokenizer(self, tokenizer, where):
        for roles in (("eos", "sep"), ("pad",)):
            if first_token(tokenizer, *roles) is None:
                raise PtmError(f"{where}: tokenizer has no {roles[-1]} token, which T5 needs")


FAMILY = T5Family()
