"""BART (Lewis et al., 2020): a bidirectional encoder and an autoregressive decoder over one vocabulary.

Read top to bottom: the config and presets, the encoder and decoder stacks,
the encoder-decoder trunk, the conditional-generation model (tied LM head,
summed next-token loss), incremental decoding, then the family.

Both stacks are post-LN (``PostNormBlock``; the decoder's blocks add
cross-attention, ``cross_attention.py``), with GELU, learned positions and a
LayerNorm on the embeddings. Positions follow fairseq's table: position ``t``
reads row ``t + 2`` (the first two rows are a relic of fairseq numbering
positions after the padding id, kept so published weights load), so the table
has ``max_position_embeddings + 2`` rows. The token embedding is shared by the
encoder, the decoder and the output projection; ``scale_embedding`` multiplies
it by sqrt(H) before the positions are added. The output projection adds
``final_logits_bias``, a buffer that stays zero for BART and is kept so other
checkpoints' values survive a round trip.

A batch is two sequences (``ptmcli.data.seq2seq``): the source for the
encoder (``input_ids``, ``attention_mask``) and the decoder's input, the target
shifted right behind ``decoder_start_token_id`` (``decoder_input_ids``),
with ``labels`` the target itself (-100 where nothing is predicted).
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
from ptmcli.models.cross_attention import Memory, PostNormDecoderBlock
from ptmcli.models.encoder_decoder import (
    IGNORE_INDEX,
    EncoderDecoderFamily,
    add_lm_terms,
    encode_then_decode,
)
from ptmcli.models.framing import Framing, first_token
from ptmcli.models.kv_cache import KVCache
from ptmcli.models.layers import (
    Dropout,
    PostNormBlock,
    padding_attention_mask,
)
from ptmcli.models.seq2seq_decoding import Seq2SeqIncrementalDecoder

POSITION_OFFSET = 2
"""Rows of the position table before position 0 (fairseq's numbering, see the module docstring)."""
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class BartConfig:
    """Hyper-parameters of a BART encoder-decoder; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the shared embedding, which is also the output projection)."""
    hidden_size: int
    """Width H of every layer."""
    num_layers: int
    """Encoder blocks (the layers that features and finetuning read)."""
    num_heads: int
    """Attention heads per block, encoder and decoder; hidden_size must be a multiple of it."""
    intermediate_size: int
    """Inner width of every feed-forward network (4H in the presets)."""
    num_decoder_layers: int | None = None
    """Decoder blocks; None is as many as the encoder has."""
    max_position_embeddings: int = 1024
    """Longest source, and longest decoder input, the learned positions cover."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings and on each residual branch."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    activation_dropout: float = 0.1
    """Dropout on the feed-forward network's inner activations."""
    initializer_range: float = 0.02
    """Std of the normal used to initialise weights."""
    scale_embedding: bool = False
    """Multiply token embeddings by sqrt(hidden_size) (BART's published models do not)."""
    pad_token_id: int = 1
    """Id of the padding token (``<pad>``, 1 in BART's vocabulary)."""
    decoder_start_token_id: int = 2
    """The token the decoder reads before the first target token (BART: ``</s>``, id 2)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise PtmError(f"bart config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.decoder_layers < 1 or self.num_layers < 1:
            raise PtmError("bart config: the encoder and the decoder need at least one layer each")

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def position_rows(self) -> int:
        """Rows of each position table: the offset rows, then one per position."""
        return self.max_position_embeddings + POSITION_OFFSET

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BartConfig:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"bart config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise PtmError(f"bart config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, Any]] = {
    "bart-tiny": _preset(2, 128, 2),
    "bart-mini": _preset(4, 256, 4),
    "bart-base": _preset(6, 768, 12),
    "bart-large": _preset(12, 1024, 16),
}


def preset_config(name: str, **overrides: Any) -> BartConfig:
    """The config of a named preset (vocab_size 50265, BART's, unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown BART preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 50265, **PRESETS[name], **overrides}
    for key in ("pad_token_id", "decoder_start_token_id"):
        if values.get(key) is None:
            values.pop(key, None)
    return BartConfig.from_dict(values)


def _block_args(config: BartConfig) -> tuple:
    return (config.hidden_size, config.num_heads, config.intermediate_size, config.hidden_dropout,
            config.attention_dropout, LAYER_NORM_EPS, "none", config.activation_dropout)


class _Stack(nn.Module):
    """What the encoder and the decoder both have: a position table, the embedding LayerNorm, blocks."""

    def __init__(self, config: BartConfig, layers: list[nn.Module]):
        super().__init__()
        self.max_length = config.max_position_embeddings
        self.position_embeddings = nn.Embedding(config.position_rows, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(layers)

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``[B, T, H]`` token embeddings at positions ``start`` .. ``start + T - 1`` -> the first layer's input."""
        stop = start + tokens.shape[1]
        if stop > self.max_length:
            raise PtmError(f"sequence of {stop} tokens is longer than max_position_embeddings {self.max_length}")
        positions = self.position_embeddings.weight[start + POSITION_OFFSET : stop + POSITION_OFFSET]
        return self.dropout(self.embedding_norm(tokens + positions))


class BartEncoder(_Stack):
    """Bidirectional post-LN blocks over the source."""

    def __init__(self, config: BartConfig):
        super().__init__(config, [PostNormBlock(*_block_args(config)) for _ in range(config.num_layers)])

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(last hidden state, the L + 1 states when asked, else ()); ``mask`` as ``padding_attention_mask``."""
        x = self.embed(tokens)
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return x, tuple(states) if output_hidden_states else ()


class BartDecoder(_Stack):
    """Causal post-LN blocks over the decoder input, each also attending to the encoder's output."""

    def __init__(self, config: BartConfig):
        super().__init__(config, [PostNormDecoderBlock(*_block_args(config)) for _ in range(config.decoder_layers)])

    def memory(self, encoded: torch.Tensor) -> list[Memory]:
        """Each layer's cross-attention keys and values of the encoder output: computed once per source."""
        return [layer.cross_attention.memory(encoded) for layer in self.layers]

    def forward(self, tokens: torch.Tensor, memory: list[Memory], memory_mask: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(last hidden state, the L + 1 states when asked, else ()).

        ``mask`` (``[B, 1, T, T]``, causality included) is for a padded decoder input; without it
        attention is plainly causal, which right padding never reaches a real token through.
        With a ``cache``, ``tokens`` are the positions after the cached ones.
        """
        x = self.embed(tokens, 0 if cache is None else cache.length)
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, memory[i], memory_mask, mask, None if cache is None else cache.layers[i])
            states.append(x)
        return x, tuple(states) if output_hidden_states else ()


def causal_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, T]`` 1/0 decoder padding -> ``[B, 1, T, T]`` causal-and-real keys, or None when nothing is padded."""
    keys = padding_attention_mask(attention_mask)
    if keys is None:
        return None
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril_()
    return keys & causal


class BartModel(nn.Module):
    """The encoder-decoder trunk: the shared token embedding, the encoder and the decoder."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = BartEncoder(config)
        self.decoder = BartDecoder(config)
        self.embed_scale = math.sqrt(config.hidden_size) if config.scale_embedding else 1.0
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            # BART starts the padding token's embedding at zero, as fairseq does.
            if 0 <= self.config.pad_token_id < self.config.vocab_size:
                self.word_embeddings.weight[self.config.pad_token_id].zero_()

    def tokens(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(ids)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               output_hidden_states: bool = False,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The encoder's (last hidden state, its L + 1 states when asked) for ``[B, S]`` right-padded sources;
        ``embedded``: ``tokens(input_ids)`` when the caller already has it."""
        tokens = self.tokens(input_ids) if embedded is None else embedded
        return self.encoder(tokens, padding_attention_mask(attention_mask), output_hidden_states)

    def decode(self, decoder_input_ids: torch.Tensor, memory: list[Memory], memory_mask: torch.Tensor | None,
               decoder_attention_mask: torch.Tensor | None = None, cache: KVCache | None = None,
               output_hidden_states: bool = False,
               embedded: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        tokens = self.tokens(decoder_input_ids) if embedded is None else embedded
        return self.decoder(tokens, memory, memory_mask, causal_padding_mask(decoder_attention_mask), cache,
                            output_hidden_states)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> dict[str, Any]:
        """``hidden`` (the decoder's last state ``[B, T, H]``) and ``encoder_hidden`` (``[B, S, H]``); with
        ``output_hidden_states`` also ``encoder_hidden_states`` and ``decoder_hidden_states`` (L + 1 each)."""
        return encode_then_decode(self, "BART", input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                  output_hidden_states)


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """The decoder input of ``labels`` (teacher forcing): the start id, then each label but the last;
    ignored labels (-100) read as padding."""
    shifted = torch.cat([labels.new_full((labels.shape[0], 1), start_id), labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


class BartForConditionalGeneration(nn.Module):
    """BART with its LM head: the shared embedding as output projection, plus ``final_logits_bias``."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.bart = BartModel(config)
        # A buffer, not a parameter: BART never trains it (it stays zero), as in the published models.
        self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size))

    def tied_weights(self) -> dict[str, str]:
        """No separate output weight exists: the projection reads the shared embedding."""
        return {}

    def tie_weights(self) -> None:
        """Nothing to re-tie: the output projection is the embedding parameter itself."""

    @property
    def output_weight(self) -> torch.Tensor:
        return self.bart.word_embeddings.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of decoder states."""
        return F.linear(hidden, self.output_weight, self.final_logits_bias)

    def incremental_decoder(self, context: int | None = None) -> Seq2SeqIncrementalDecoder:
        """This model's decoder for ``models.generation`` (at most ``context`` decoder positions; default all).
        The decoder's positions are a learned table, so decoding stops with an error when they are used up."""
        positions = self.config.max_position_embeddings
        return Seq2SeqIncrementalDecoder(self, "bart", min(context or positions, positions))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **batch: Any) -> dict[str, torch.Tensor]:
        """Summed next-token loss of a two-sequence batch (``ptmcli.data.seq2seq``).

        Without ``decoder_input_ids`` the decoder reads ``labels`` shifted right. Keys: ``hidden``
        (decoder top), ``encoder_hidden``; with ``labels``, ``lm_loss_sum``, ``lm_count``,
        ``lm_correct`` over positions whose label is not -100; ``logits`` ``[B, T, vocab]`` without
        labels or under ``torch.no_grad()``. With gradients on, the loss is fused with the
        vocabulary projection and the logits are never materialised. Other batch keys
        (``target_lengths``) are the loop's and are ignored.
        """
        if decoder_input_ids is None and labels is not None:
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        out = self.bart(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)
        hidden = out["hidden"]
        if labels is None or not torch.is_grad_enabled():
            out["logits"] = self.logits(hidden)
        if labels is None:
            return out
        return add_lm_terms(out, labels, hidden, self.output_weight, self.final_logits_bias)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values (the shared embedding once); optionally without the embedding tables."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            bart = self.bart
            total -= sum(t.weight.numel() for t in (bart.word_embeddings, bart.encoder.position_embeddings,
                                                     bart.decoder.position_embeddings))
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.0) -> float:
        """Training flops (forward + backward) per source token, the target as long as the source.

        ``6 * (N_enc + N_dec + V*H)`` for the blocks' matrix weights and the output projection, plus
        attention: ``12 * L * H * T`` for the encoder's self-attention and as much again for each of
        the decoder's self- and cross-attention. ``mask_fraction`` is accepted for a common signature.
        """
        cfg = self.config
        blocks = sum(m.weight.numel() for stack in (self.bart.encoder, self.bart.decoder)
                     for m in stack.layers.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.hidden_size * seq_len * (cfg.num_layers + 2 * cfg.decoder_layers)
        return 6.0 * (blocks + cfg.vocab_size * cfg.hidden_size) + attention


class BartFamily(EncoderDecoderFamily):
    """BART: an encoder-decoder. Its stack (features, finetuning's encoder) is the encoder's; texts are
    framed as RoBERTa frames them, ``<s> a </s>`` and ``<s> a </s></s> b </s>``."""

    name, title = "bart", "BART"
    config_class, model_class, presets = BartConfig, BartForConditionalGeneration, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "bart-mini", "bart-tiny"
    head_parts = {"lm": "final_logits_bias"}
    encoder_prefix = "bart."
    bottom_prefixes = ("bart.word_embeddings.", "bart.encoder.position_embeddings.", "bart.encoder.embedding_norm.")
    task_tokens = (("cls", "bos"), ("sep", "eos"), ("sep", "eos"))
    pair_delimiter_repeats = 2

    def model_config(self, preset, tokenizer, **overrides):
        # The decoder starts from </s>, as BART's does: the tokenizer says which id that is.
        start = first_token(tokenizer, "eos", "sep")
        if start is not None:
            overrides.setdefault("decoder_start_token_id", start)
        return super().model_config(preset, tokenizer, **overrides)

    def framing(self, tokenizer) -> Framing:
        start, end = first_token(tokenizer, "cls", "bos"), first_token(tokenizer, "sep", "eos")
        if start is None or end is None:
            raise PtmError("the checkpoint's tokenizer has no <s>/</s> tokens, which BART inputs need")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 1
        return Framing((start,), (end, end), (end,), 0, 0, False, True, pad)

    def check_tokenizer(self, tokenizer, where):
        for roles in (("cls", "bos"), ("sep", "eos"), ("pad",)):
            if first_token(tokenizer, *roles) is None:
                raise PtmError(f"{where}: tokenizer has no {roles[-1]} token, which BART needs "
                               "(train one with --special-tokens roberta)")


FAMILY = BartFamily()
