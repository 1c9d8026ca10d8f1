"""CoVe (McCann et al., 2017): contextual word vectors from a translation encoder.

Read top to bottom: the config and presets, the encoder (a biLSTM stack over
frozen word vectors, GloVe in the paper), the attentional decoder (Luong et
al.'s global attention with input feeding, as the paper's MT-LSTM), the
incremental decoder for greedy translation, and the family.

The encoder is what CoVe is for: after training on translation, each token's
feature is its input vector concatenated with the top biLSTM layer's output,
``[GloVe(w); CoVe(w)]``. The input vectors are a buffer (``encoder.vectors``),
saved with the weights and never trained, so a checkpoint is self-contained.

Sources are words of the input vectors' word tokenizer, with no special tokens;
targets are ids of a separate target-side tokenizer (``target_vocab_size``),
ending in ``eos_token_id`` and read by the decoder behind ``decoder_start_token_id``.
The encoder is padding-correct (packed sequences): a right-padded row gives the
same outputs as that row alone.

State-dict keys are ptm's checkpoint format and stay stable (see docs/models.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ptmcli.errors import PtmError
from ptmcli.models.family import WORD_TOKENIZER_TASK_TOKENS, Family
from ptmcli.models.framing import Framing
from ptmcli.models.layers import linear_cross_entropy

IGNORE_INDEX = -100


@dataclass(frozen=True)
class CoveConfig:
    """Hyper-parameters of a CoVe translation model; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Source vocabulary: rows of the input vectors (the word tokenizer's ids)."""
    pad_token_id: int = 0
    """Id written at source padding (never read: the encoder uses the lengths)."""
    input_size: int = 300
    """Width of the frozen input vectors (GloVe's 300)."""
    hidden_size: int = 300
    """LSTM size per direction; each encoder layer outputs ``2 * hidden_size`` (the paper's 600)."""
    num_layers: int = 2
    """Encoder biLSTM layers."""
    target_vocab_size: int = 0
    """Target-side vocabulary (set from the target tokenizer)."""
    target_pad_id: int = 0
    decoder_start_token_id: int = 0
    """The first token the decoder reads (the target tokenizer's begin-of-sentence)."""
    eos_token_id: int = 0
    """The token that ends a target (greedy decoding stops there)."""
    target_embedding_size: int = 300
    """Width of the target word embeddings."""
    decoder_hidden_size: int = 600
    """Decoder LSTM size, and the width of its attentional state."""
    decoder_layers: int = 2
    dropout: float = 0.2
    """Dropout between LSTM layers, on the decoder's inputs and on its attentional states."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "input_size", "hidden_size", "num_layers", "target_vocab_size",
                     "target_embedding_size", "decoder_hidden_size", "decoder_layers"):
            if getattr(self, name) < 1:
                raise PtmError(f"cove config: {name} {getattr(self, name)} must be positive")
        for name in ("target_pad_id", "decoder_start_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.target_vocab_size:
                raise PtmError(f"cove config: {name} {getattr(self, name)} is not a target id (0..{self.target_vocab_size - 1})")
        if not 0.0 <= self.dropout < 1.0:
            raise PtmError(f"cove config: dropout {self.dropout} must be in [0, 1)")

    @property
    def output_size(self) -> int:
        """Width of an encoder layer's output (both directions)."""
        return 2 * self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CoveConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"cove config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "vocab_size" not in values:
            raise PtmError("cove config: missing keys vocab_size")
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    # Tests and quick CPU checks.
    "cove-tiny": {"hidden_size": 32, "target_embedding_size": 32, "decoder_hidden_size": 64, "dropout": 0.1},
    # CPU runs on Multi30k that learn something in minutes.
    "cove-small": {"hidden_size": 150, "target_embedding_size": 150, "decoder_hidden_size": 300},
    # The paper's MT-LSTM: 300-d GloVe in, 2 x 300 biLSTM layers (600-d outputs), 2-layer decoder.
    "cove-original": {"hidden_size": 300, "target_embedding_size": 300, "decoder_hidden_size": 600},
}

# `ptm pretrain` model flags -> CoVe fields; the Transformer-only ones do not apply.
_FLAG_FIELDS = {"hidden_size": "hidden_size", "num_layers": "num_layers", "hidden_dropout": "dropout"}
_NOT_APPLICABLE = {"num_heads": "--num-heads", "attention_dropout": "--attention-dropout",
                   "max_position_embeddings": "--max-position-embeddings", "intermediate_size": "--intermediate-size"}


def preset_config(name: str, *, vocab_size: int = 1, pad_token_id: int = 0, **overrides: Any) -> CoveConfig:
    """The config of a named preset with fields replaced (CoveConfig's names or the ``ptm pretrain`` flags)."""
    if name not in PRESETS:
        raise PtmError(f"unknown CoVe preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": vocab_size, "pad_token_id": pad_token_id, "target_vocab_size": 1, **PRESETS[name]}
    for key, value in overrides.items():
        if key in _NOT_APPLICABLE:
            if value is not None:
                raise PtmError(f"{_NOT_APPLICABLE[key]} does not apply to cove (an LSTM encoder-decoder)")
            continue
        if value is not None:
            values[_FLAG_FIELDS.get(key, key)] = value
    return CoveConfig.from_dict(values)


# -- the encoder ---------------------------------------------------------------------------


def _lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long)
    # pack_padded_sequence takes lengths on the CPU; an empty row reads one (ignored) position.
    return attention_mask.sum(dim=1).clamp(min=1).cpu()


class CoveEncoder(nn.Module):
    """Frozen word vectors -> ``num_layers`` biLSTM layers; each layer kept apart so features can read it."""

    def __init__(self, config: CoveConfig):
        super().__init__()
        self.config = config
        self.register_buffer("vectors", torch.zeros(config.vocab_size, config.input_size))
        self.layers = nn.ModuleList(
            nn.LSTM(config.input_size if i == 0 else config.output_size, config.hidden_size, batch_first=True, bidirectional=True)
            for i in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)

    def set_vectors(self, vectors: torch.Tensor) -> None:
        expected = (self.config.vocab_size, self.config.input_size)
        if tuple(vectors.shape) != expected:
            raise PtmError(f"input vectors of shape {tuple(vectors.shape)} do not fit the model's {expected} (vocab, width)")
        self.vectors.copy_(vectors.to(self.vectors))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(input vectors ``[B, S, E]``, each layer's outputs ``[B, S, 2H]``); zeros at padding."""
        embedded = self.vectors[input_ids]
        lengths = _lengths(input_ids, attention_mask)
        outputs, x = [], embedded
        for i, lstm in enumerate(self.layers):
            inputs = self.dropout(x) if i > 0 else x
            packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            x, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
            outputs.append(x)
        return embedded, outputs


# -- the decoder ---------------------------------------------------------------------------


class CoveDecoderNet(nn.Module):
    """LSTM decoder with global attention over the encoder's top layer and input feeding.

    Step t reads ``[embed(y_{t-1}); h~_{t-1}]``; its top state h_t scores each source
    position by ``H W_a h_t`` (Luong's *general* score), the softmax weights give the
    context c_t, and ``h~_t = tanh(W_c [c_t; h_t])`` predicts y_t and feeds step t + 1.
    """

    def __init__(self, config: CoveConfig):
        super().__init__()
        self.config = config
        D = config.decoder_hidden_size
        self.embedding = nn.Embedding(config.target_vocab_size, config.target_embedding_size)
        nn.init.normal_(self.embedding.weight, std=config.target_embedding_size ** -0.5)
        self.lstm = nn.LSTM(config.target_embedding_size + D, D, num_layers=config.decoder_layers, batch_first=True,
                            dropout=config.dropout if config.decoder_layers > 1 else 0.0)
        self.attention = nn.Linear(D, config.output_size, bias=False)
        self.combine = nn.Linear(config.output_size + D, D)
        self.output = nn.Linear(D, config.target_vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def initial(self, memory: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Zero LSTM states and a zero attentional state for a batch of ``memory``."""
        B, D = memory.shape[0], self.config.decoder_hidden_size
        zeros = memory.new_zeros(self.config.decoder_layers, B, D)
        return (zeros, zeros.clone()), memory.new_zeros(B, D)

    def step(self, ids: torch.Tensor, state, attentional: torch.Tensor, memory: torch.Tensor,
             memory_mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """One decoder step for ``[B]`` ids: (the attentional state ``[B, D]``, the LSTM state)."""
        x = torch.cat([self.dropout(self.embedding(ids)), attentional], dim=-1)
        out, state = self.lstm(x[:, None], state)
        h = out[:, 0]
        scores = torch.bmm(memory, self.attention(h)[:, :, None]).squeeze(-1)
        scores = scores.masked_fill(~memory_mask, torch.finfo(scores.dtype).min)
        context = torch.bmm(scores.softmax(dim=-1)[:, None], memory)[:, 0]
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, h], dim=-1))))
        return attentional, state


class CoveModel(nn.Module):
    """CoVe's translation model: :class:`CoveEncoder` and :class:`CoveDecoderNet`."""

    def __init__(self, config: CoveConfig):
        super().__init__()
        self.config = config
        self.encoder = CoveEncoder(config)
        self.decoder = CoveDecoderNet(config)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def tie_weights(self) -> None:
        """Nothing is tied."""

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Trainable values (the frozen input vectors are a buffer, not counted)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.decoder.embedding.weight.numel() + self.decoder.output.weight.numel()
        return total

    def flops_per_token(self, seq_len: int = 0, mask_fraction: float = 0.0) -> float:
        """Training flops (``6 x`` multiply-adds) per token, source and target counted alike.

        A pair's work is the encoder's per source token and the decoder's per target
        token (LSTM, attention over about ``seq_len / 2`` source positions, softmax); the
        figure is their mean, so it is exact when the two sides are equally long.
        """
        c = self.config
        H, D = c.hidden_size, c.decoder_hidden_size
        encoder = sum(2 * 4 * H * ((c.input_size if i == 0 else 2 * H) + H) for i in range(c.num_layers))
        lstm = 4 * D * (c.target_embedding_size + D + D) + (c.decoder_layers - 1) * 8 * D * D
        attention = D * 2 * H + (seq_len // 2) * 2 * 2 * H + (2 * H + D) * D
        decoder = lstm + attention + D * c.target_vocab_size
        return 6.0 * (encoder + decoder) / 2

    def memory(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the encoder's top layer ``[B, S, 2H]``, the source mask as bools)."""
        _, layers = self.encoder(input_ids, attention_mask)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return layers[-1], mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, decoder_input_ids: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced summed cross-entropy over the real target tokens (``lm_loss_sum``, ``lm_count``,
        ``lm_correct``); the vocabulary projection is fused with the loss."""
        memory, mask = self.memory(input_ids, attention_mask)
        state, attentional = self.decoder.initial(memory)
        states = []
        for t in range(decoder_input_ids.shape[1]):
            attentional, state = self.decoder.step(decoder_input_ids[:, t], state, attentional, memory, mask)
            states.append(attentional)
        hidden = torch.stack(states, dim=1).reshape(-1, self.config.decoder_hidden_size)
        targets = labels.reshape(-1)
        loss_sum, correct = linear_cross_entropy(hidden, self.decoder.output.weight, self.decoder.output.bias, targets)
        return {"lm_loss_sum": loss_sum, "lm_count": (targets != IGNORE_INDEX).sum(), "lm_correct": correct}

    def incremental_decoder(self, context: int | None = None) -> CoveIncrementalDecoder:
        return CoveIncrementalDecoder(self)


@dataclass
class CoveDecodingState:
    lstm: Any
    attentional: torch.Tensor
    memory: torch.Tensor
    memory_mask: torch.Tensor


class CoveIncrementalDecoder:
    """:class:`ptmcli.models.generation.Decoder` of a CoVe model: ``start`` encodes the sources once and feeds
    the decoder-start token; each ``step`` runs one decoder step per new token. An LSTM has no position
    limit, so decoding can go on as long as asked."""

    def __init__(self, model: CoveModel) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.decoder.output.weight.device

    def _logits(self, state: CoveDecodingState) -> torch.Tensor:
        return self.model.decoder.output(state.attentional)

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, CoveDecodingState]:
        """``[B, S]`` right-padded sources (no padding unless ``attention_mask`` says: a word tokenizer may
        have no pad token) -> (the logits of the first target token, the state)."""
        memory, mask = self.model.memory(prompt_ids, attention_mask)
        lstm, attentional = self.model.decoder.initial(memory)
        state = CoveDecodingState(lstm, attentional, memory, mask)
        first = prompt_ids.new_full((prompt_ids.shape[0], 1), self.model.config.decoder_start_token_id)
        return self.step(state, first)

    @torch.no_grad()
    def step(self, state: CoveDecodingState, next_ids: torch.Tensor) -> tuple[torch.Tensor, CoveDecodingState]:
        for t in range(next_ids.shape[1]):
            state.attentional, state.lstm = self.model.decoder.step(next_ids[:, t], state.lstm, state.attentional,
                                                                    state.memory, state.memory_mask)
        return self._logits(state), state


class CoveFamily(Family):
    """CoVe: words with no special tokens; the stack is ``[vectors; 0]`` then ``[vectors; biLSTM layer i]``,
    so its top is the paper's ``[GloVe; CoVe]``."""

    name, title = "cove", "CoVe"
    config_class, model_class, presets = CoveConfig, CoveModel, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "cove-small", "cove-tiny"
    encoder_prefix = "encoder."
    bottom_prefixes = ("encoder.vectors",)
    # A static-vector word tokenizer often keeps only [UNK]: labeled tasks then mark a text's ends with it.
    task_tokens = WORD_TOKENIZER_TASK_TOKENS
    is_encoder_decoder = True
    compiles = False
    min_context = 1

    def feature_size(self, config):
        return config.input_size + config.output_size

    def position_limit(self, config):
        return None

    def head_dropout(self, config):
        return config.dropout

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        vectors, layers = self.encoder(model)(input_ids, attention_mask)
        # Layer 0 is the context-free vector alone, padded with zeros to the common width.
        stack = [torch.cat([vectors, torch.zeros_like(layers[0])], dim=-1)]
        stack += [torch.cat([vectors, layer], dim=-1) for layer in layers]
        return stack[-1], stack

    def input_embeddings(self, model):
        return self.encoder(model).vectors

    def framing(self, tokenizer) -> Framing:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((), (), (), 0, 0, False, False, pad)

    def fsdp_units(self, model):
        return []

    def compile_target(self, model):
        return model


FAMILY = CoveFamily()
