"""ELMo (Peters et al., 2018): a character-aware bidirectional LSTM language model.

Read top to bottom: the config and presets, the character table that spells
each vocabulary entry, the token encoder (character CNN + highway layers +
projection, or a plain word embedding), then the biLM: a forward and a backward
stack of projected LSTMs sharing the token encoder and the softmax.

ptm tokenizers are subword tokenizers, so ELMo here runs over the tokenizer's
tokens and the character CNN reads each token's string. The table of character
ids is a persistent buffer (``char_table``), saved with the weights, so a
checkpoint's features never depend on recomputing it.

Every sequence starts from zero LSTM states and the model is padding-correct:
a right-padded row gives the same outputs as that row alone. The forward LSTMs
are causal, so padding after a row's end cannot reach its tokens; the backward
stack reads each row reversed *within its own length*, which puts the padding
at the end again.

State-dict keys are ptm's checkpoint format and stay stable (see docs/models.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing
from ptmcli.models.layers import Dropout, linear_cross_entropy

IGNORE_INDEX = -100

# Character ids: 0 pads, byte b is b + 1, then the markers (262 ids, as ELMo's character vocabulary).
CHAR_PAD = 0
BOS_CHAR = 257
"""The whole spelling of the begin-of-sentence token."""
EOS_CHAR = 258
"""The whole spelling of the end-of-sentence token."""
BOW_CHAR = 259
"""Begin of word: first character of every row."""
EOW_CHAR = 260
"""End of word: follows the last byte kept."""
SPECIAL_CHAR = 261
"""Prefix of the other special tokens' spellings, so "[MASK]" never reads like ordinary text."""
NUM_CHARS = 262

# Softmax rows are padded to a multiple of this (ignored targets): a few shapes instead
# of one per batch, so CPU matmul libraries (oneDNN under bf16) reuse their kernels.
LM_ROW_BUCKET = 64


@dataclass(frozen=True)
class ElmoConfig:
    """Hyper-parameters of an ELMo biLM; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the softmax and of the character table)."""
    pad_token_id: int = 0
    """Id of the padding token."""
    token_encoder: str = "char"
    """"char" (character CNN over each token's spelling) or "word" (an embedding per id)."""
    max_chars_per_token: int = 50
    """Characters per token in the character table, begin/end-of-word markers included."""
    char_embed_dim: int = 16
    """Width of each character embedding."""
    char_filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))
    """(width, count) of each convolution over the characters; the outputs are concatenated."""
    num_highway: int = 2
    """Highway layers on the concatenated filter outputs."""
    projection_dim: int = 512
    """Width P of the token encoding and of every LSTM output (the LSTM projection)."""
    lstm_dim: int = 4096
    """Cell size of every LSTM (projected down to ``projection_dim``)."""
    num_layers: int = 2
    """LSTM layers per direction."""
    dropout: float = 0.1
    """Dropout on each LSTM layer's input and on the top layer before the softmax."""
    skip_connections: bool = True
    """Residual connection around every LSTM layer after the first."""

    def __post_init__(self) -> None:
        # JSON gives lists; keep a hashable tuple of (width, count) pairs.
        object.__setattr__(self, "char_filters", tuple(tuple(int(v) for v in pair) for pair in self.char_filters))
        if self.token_encoder not in ("char", "word"):
            raise PtmError(f"elmo config: token_encoder {self.token_encoder!r} must be 'char' or 'word'")
        if self.token_encoder == "char":
            if not self.char_filters or any(len(pair) != 2 for pair in self.char_filters):
                raise PtmError(f"elmo config: char_filters {self.char_filters!r} must be a non-empty list of [width, count]")
            widest = max(width for width, _ in self.char_filters)
            if widest > self.max_chars_per_token or min(min(pair) for pair in self.char_filters) < 1:
                raise PtmError(
                    f"elmo config: char filter widths must be between 1 and max_chars_per_token {self.max_chars_per_token}"
                )
            if self.max_chars_per_token < 3:
                raise PtmError(f"elmo config: max_chars_per_token {self.max_chars_per_token} leaves no room for a character")
        for name in ("vocab_size", "projection_dim", "lstm_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise PtmError(f"elmo config: {name} {getattr(self, name)} must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise PtmError(f"elmo config: dropout {self.dropout} must be in [0, 1)")

    @property
    def num_filters(self) -> int:
        """Width of the concatenated character-CNN output."""
        return sum(count for _, count in self.char_filters)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field."""
        values = dataclasses.asdict(self)
        values["char_filters"] = [list(pair) for pair in self.char_filters]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ElmoConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"elmo config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "vocab_size" not in values:
            raise PtmError("elmo config: missing keys vocab_size")
        return cls(**values)


_ORIGINAL_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: tests and quick CPU runs.
    "elmo-small": {"char_filters": [[1, 16], [2, 16], [3, 32], [4, 64], [5, 128]], "num_highway": 1,
                   "projection_dim": 128, "lstm_dim": 512, "num_layers": 2},
    # Roughly the training compute per token of bert-mini: CPU runs that learn something.
    "elmo-mini": {"char_filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]], "num_highway": 2,
                  "projection_dim": 256, "lstm_dim": 1024, "num_layers": 2},
    # The released ELMo (bilm-tf's default options).
    "elmo-original": {"char_filters": _ORIGINAL_FILTERS, "num_highway": 2, "projection_dim": 512,
                      "lstm_dim": 4096, "num_layers": 2},
}

# `ptm pretrain` model flags (named after BERT's fields) -> ELMo fields.
_FLAG_FIELDS = {"hidden_size": "projection_dim", "num_layers": "num_layers", "intermediate_size": "lstm_dim", "hidden_dropout": "dropout"}
_NOT_APPLICABLE = {"num_heads": "--num-heads", "attention_dropout": "--attention-dropout", "max_position_embeddings": "--max-position-embeddings"}


def preset_config(name: str, *, vocab_size: int = 30522, pad_token_id: int = 0, **overrides: Any) -> ElmoConfig:
    """The config of a named preset with fields replaced.

    Overrides may use ElmoConfig's own names or the ``ptm pretrain`` model flags:
    hidden_size -> projection_dim, intermediate_size -> lstm_dim, hidden_dropout ->
    dropout, num_layers. num_heads, attention_dropout and max_position_embeddings
    do not apply to an LSTM and are an error unless None.
    """
    if name not in PRESETS:
        raise PtmError(f"unknown ELMo preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": vocab_size, "pad_token_id": pad_token_id, **PRESETS[name]}
    for key, value in overrides.items():
        if key in _NOT_APPLICABLE:
            if value is not None:
                raise PtmError(f"{_NOT_APPLICABLE[key]} does not apply to elmo (an LSTM has no attention heads or positions)")
            continue
        if value is None:
            continue
        values[_FLAG_FIELDS.get(key, key)] = value
    return ElmoConfig.from_dict(values)


# -- the character table -------------------------------------------------------------------


def _spell(chars: Sequence[int], max_chars: int) -> list[int]:
    """``[BOW, chars..., EOW]`` truncated to fit, padded with 0."""
    kept = list(chars)[: max_chars - 2]
    row = [BOW_CHAR, *kept, EOW_CHAR]
    return row + [CHAR_PAD] * (max_chars - len(row))


def char_table_for_vocab(
    tokens: Sequence[str | None],
    max_chars: int = 50,
    *,
    bos_id: int | None = None,
    eos_id: int | None = None,
    special_ids: Iterable[int] = (),
) -> torch.Tensor:
    """Character ids ``[V, max_chars]`` spelling each token, as ELMo's character CNN reads them.

    A token is its UTF-8 bytes (each + 1, so 0 is padding) between the
    begin-of-word and end-of-word markers, truncated to ``max_chars - 2`` bytes.
    The sentence-boundary tokens are spelled by one marker each (``BOS_CHAR``,
    ``EOS_CHAR``), as ELMo spells <S> and </S>; the other ``special_ids`` get
    ``SPECIAL_CHAR`` before their bytes, so each special row is distinct and
    none equals an ordinary token's. A missing token (None) spells as empty.
    """
    specials = set(special_ids)
    rows = []
    for token_id, token in enumerate(tokens):
        if token_id == bos_id:
            chars: list[int] = [BOS_CHAR]
        elif token_id == eos_id:
            chars = [EOS_CHAR]
        else:
            chars = [b + 1 for b in (token or "").encode("utf-8")]
            if token_id in specials:
                chars = [SPECIAL_CHAR, *chars]
        rows.append(_spell(chars, max_chars))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), max_chars)


def char_table_for_tokenizer(tokenizer: Any, max_chars: int = 50) -> torch.Tensor:
    """:func:`char_table_for_vocab` for a ``PtmTokenizer``: its tokens, boundary and special ids.

    The sentence boundaries are the tokenizer's bos/eos tokens, or [CLS]/[SEP]
    when it has none (the same ids :func:`sentence_boundary_ids` returns).
    """
    bos_id, eos_id = sentence_boundary_ids(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    return char_table_for_vocab(tokens, max_chars, bos_id=bos_id, eos_id=eos_id, special_ids=tokenizer.all_special_ids)


def sentence_boundary_ids(tokenizer: Any) -> tuple[int, int]:
    """(begin, end) ids that wrap every training block: bos/eos, else [CLS]/[SEP]."""
    begin = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.cls_id
    end = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    if begin is None or end is None or begin == end:
        raise PtmError("the tokenizer needs distinct begin/end-of-sentence tokens (bos/eos or cls/sep) for ELMo")
    return begin, end


def placeholder_char_table(vocab_size: int, max_chars: int) -> torch.Tensor:
    """A row per id (``SPECIAL_CHAR`` and its zero-padded decimal digits) until the real one is set."""
    width = len(str(max(vocab_size - 1, 0)))
    ids = torch.arange(vocab_size)[:, None]
    digits = ids // (10 ** torch.arange(width - 1, -1, -1)) % 10 + (ord("0") + 1)
    marks = torch.tensor([SPECIAL_CHAR]).expand(vocab_size, 1)
    spelled = torch.cat([marks, digits], dim=1)[:, : max_chars - 2]
    table = torch.full((vocab_size, max_chars), CHAR_PAD, dtype=torch.long)
    table[:, 0] = BOW_CHAR
    table[:, 1 : 1 + spelled.shape[1]] = spelled
    table[:, 1 + spelled.shape[1]] = EOW_CHAR
    return table


# -- the token encoder ---------------------------------------------------------------------


class Highway(nn.Module):
    """``y = g * relu(W_t x) + (1 - g) * x`` with the gate ``g = sigmoid(W_g x)``; one fused matmul.

    The gate bias starts at -2 so each layer starts close to the identity (carrying x).
    The fused ``proj`` weight is ``[2D, D]``: the transform rows first, then the gate.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * dim)
        nn.init.normal_(self.proj.weight, std=dim**-0.5)
        nn.init.zeros_(self.proj.bias)
        nn.init.constant_(self.proj.bias[dim:], -2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transform, gate = self.proj(x).chunk(2, dim=-1)
        gate = torch.sigmoid(gate)
        return gate * F.relu(transform) + (1.0 - gate) * x


class CharCNNEncoder(nn.Module):
    """Character ids ``[N, C]`` -> token encodings ``[N, P]``.

    Embed each character, convolve each filter width over the characters, max
    over positions, ReLU, concatenate, highway layers, linear projection to P.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.char_embedding = nn.Embedding(NUM_CHARS, config.char_embed_dim, padding_idx=CHAR_PAD)
        nn.init.uniform_(self.char_embedding.weight, -1.0, 1.0)
        with torch.no_grad():
            self.char_embedding.weight[CHAR_PAD].zero_()
        self.convs = nn.ModuleList(nn.Conv1d(config.char_embed_dim, count, width) for width, count in config.char_filters)
        for conv, (width, _count) in zip(self.convs, config.char_filters):
            nn.init.normal_(conv.weight, std=(width * config.char_embed_dim) ** -0.5)
            nn.init.zeros_(conv.bias)
        self.highways = nn.ModuleList(Highway(config.num_filters) for _ in range(config.num_highway))
        self.projection = nn.Linear(config.num_filters, config.projection_dim)
        nn.init.normal_(self.projection.weight, std=config.num_filters**-0.5)
        nn.init.zeros_(self.projection.bias)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        x = self.char_embedding(chars).transpose(1, 2)  # [N, E, C]: Conv1d wants channels first
        x = torch.cat([F.relu(conv(x).amax(dim=-1)) for conv in self.convs], dim=-1)
        for highway in self.highways:
            x = highway(x)
        return self.projection(x)


# -- the biLM ------------------------------------------------------------------------------


def _lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Row lengths of a right-padded 1/0 mask; a mask with holes is a bug in the caller."""
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        raise ValueError("ELMo needs right-padded batches: attention_mask must be 1s then 0s in every row")
    return lengths


def _reverse_within_length(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T]`` time index that reverses each row's first ``length`` positions and keeps its padding.

    Its own inverse: gathering twice restores the order.
    """
    positions = torch.arange(width, device=lengths.device)[None, :]
    return torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def _bucketed_rows(flat_positions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad positions/targets to a multiple of ``LM_ROW_BUCKET`` with ignored rows."""
    padding = -flat_positions.numel() % LM_ROW_BUCKET
    if padding:
        flat_positions = torch.cat([flat_positions, flat_positions.new_zeros(padding)])
        targets = torch.cat([targets, targets.new_full((padding,), IGNORE_INDEX)])
    return flat_positions, targets


class ElmoBiLM(nn.Module):
    """ELMo's bidirectional language model: token encoder, two LSTM stacks, one softmax.

    Each direction is ``num_layers`` ``nn.LSTM`` layers with ``proj_size`` (the
    LSTMP cell of bilm-tf), so the fused library kernels run (cuDNN on GPU).
    bilm-tf's cell and projection clipping (``cell_clip``/``proj_clip``) is
    omitted: those kernels have no clipping. Layers after the first add a
    residual connection; dropout is applied to every layer's input and to the
    top layer before the softmax.
    """

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.config = config
        P = config.projection_dim
        if config.token_encoder == "char":
            self.token_encoder: nn.Module = CharCNNEncoder(config)
            self.register_buffer("char_table", placeholder_char_table(config.vocab_size, config.max_chars_per_token))
        else:
            self.token_encoder = nn.Embedding(config.vocab_size, P)
            nn.init.normal_(self.token_encoder.weight, std=P**-0.5)

        def stack() -> nn.ModuleList:
            layers = nn.ModuleList(nn.LSTM(P, config.lstm_dim, proj_size=P, batch_first=True) for _ in range(config.num_layers))
            for lstm in layers:
                with torch.no_grad():
                    # Forget-gate bias 1 (gate order i, f, g, o), as TensorFlow's LSTM cells start.
                    lstm.bias_ih_l0[config.lstm_dim : 2 * config.lstm_dim].fill_(1.0)
                    lstm.bias_hh_l0[config.lstm_dim : 2 * config.lstm_dim].zero_()
            return layers

        self.forward_layers = stack()
        self.backward_layers = stack()
        self.dropout = Dropout(config.dropout)
        self.softmax = nn.Linear(P, config.vocab_size)
        nn.init.normal_(self.softmax.weight, std=P**-0.5)
        nn.init.zeros_(self.softmax.bias)

    # -- weights ---------------------------------------------------------------------------

    def set_char_table(self, table: torch.Tensor) -> None:
        """Install the character spelling of the vocabulary (see :func:`char_table_for_tokenizer`).

        A word-level model (token_encoder "word") has no character table: nothing to set.
        """
        if self.config.token_encoder != "char":
            return
        expected = (self.config.vocab_size, self.config.max_chars_per_token)
        if tuple(table.shape) != expected:
            raise PtmError(f"character table of shape {tuple(table.shape)} does not fit the model's {expected} (vocab, max chars)")
        if int(table.min()) < 0 or int(table.max()) >= NUM_CHARS:
            raise PtmError(f"character table ids must be in [0, {NUM_CHARS})")
        self.char_table.copy_(table.to(self.char_table.device))

    def tied_weights(self) -> dict[str, str]:
        """Nothing is tied: the softmax has its own weights."""
        return {}

    def tie_weights(self) -> None:
        """Nothing to re-tie."""

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Trainable values; optionally without the vocabulary-sized ones (softmax, word embedding).

        The character table is a buffer, not a parameter; the 262-row character
        embedding counts as part of the encoder.
        """
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= sum(p.numel() for p in self.softmax.parameters())
            if self.config.token_encoder == "word":
                total -= self.token_encoder.weight.numel()
        return total

    def flops_per_token(self, seq_len: int = 0, mask_fraction: float = 0.0) -> float:
        """Training flops (forward + backward) per input token: ``6 x`` the multiply-adds per token.

        Counts the character CNN (every filter at every character position), the
        highway layers and the projection once per token; every LSTM layer of
        both directions (input, recurrent and projection matrices); and the
        softmax twice (each direction predicts every token). Gates, dropout and
        the log-softmax are not counted. ``seq_len`` and ``mask_fraction`` are
        accepted for the common signature and do not matter: an LSTM's cost per
        token does not depend on length, and every token is predicted.

        The forward pass runs the token encoder once per *distinct* token of a
        batch, so the work actually done is smaller than counted here by the
        encoder's share times the repeated tokens' fraction.
        """
        cfg = self.config
        P, H = cfg.projection_dim, cfg.lstm_dim
        encoder = 0
        if cfg.token_encoder == "char":
            convs = sum((cfg.max_chars_per_token - w + 1) * w * cfg.char_embed_dim * n for w, n in cfg.char_filters)
            encoder = convs + cfg.num_highway * 2 * cfg.num_filters**2 + cfg.num_filters * P
        lstm = 2 * cfg.num_layers * (4 * H * (P + P) + H * P)
        softmax = 2 * cfg.vocab_size * P
        return 6.0 * (encoder + lstm + softmax)

    # -- the network -----------------------------------------------------------------------

    def encode_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Context-free token encodings ``[B, T, P]`` (layer 0 of ELMo)."""
        if self.config.token_encoder == "word":
            return self.token_encoder(input_ids)
        # The encoding depends on the id alone: run the CNN once per distinct id of the batch.
        unique, inverse = torch.unique(input_ids, return_inverse=True)
        return self.token_encoder(self.char_table[unique])[inverse]

    def _run_stack(self, layers: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, lstm in enumerate(layers):
            inputs = self.dropout(x)
            out, _ = lstm(inputs)
            if i > 0 and self.config.skip_connections:
                out = out + inputs
            outputs.append(out)
            x = out
        return outputs

    def contextualize(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(token encodings, forward layer outputs, backward layer outputs), each ``[B, T, P]``.

        Backward outputs are in the original token order: position t summarises
        tokens t..end. Values at padded positions are meaningless.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = _lengths(attention_mask)
        tokens = self.encode_tokens(input_ids)
        forward_outputs = self._run_stack(self.forward_layers, tokens)
        reverse = _reverse_within_length(lengths, input_ids.shape[1])
        backward_reversed = self._run_stack(self.backward_layers, _gather_time(tokens, reverse))
        backward_outputs = [_gather_time(out, reverse) for out in backward_reversed]
        return tokens, forward_outputs, backward_outputs

    def representations(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """ELMo's layers as L + 1 tensors ``[B, T, 2P]`` (the paper's 2L + 1 representations).

        Layer 0 is the token encoding concatenated with itself (so every layer
        has the same width, as allennlp's ELMo does); layer i is the forward and
        backward outputs of LSTM layer i, concatenated. Call in eval mode for features.
        """
        tokens, forward_outputs, backward_outputs = self.contextualize(input_ids, attention_mask)
        layers = [torch.cat([tokens, tokens], dim=-1)]
        layers += [torch.cat([f, b], dim=-1) for f, b in zip(forward_outputs, backward_outputs)]
        return layers

    def _predicting(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T-1]``: position t+1 is a real token, so forward t predicts it and backward t+1 predicts t."""
        return attention_mask[:, 1:].bool()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, labels: bool = True
    ) -> dict[str, torch.Tensor]:
        """Summed LM losses and counts of both directions, for normalising over micro-batches.

        The forward LM predicts token t+1 from tokens <= t, the backward LM token
        t-1 from tokens >= t; padding is neither read nor predicted. Keys:
        ``fwd_loss_sum``, ``fwd_count``, ``fwd_correct`` and the same for ``bwd``.
        The vocabulary projection is fused with the loss, so no ``[N, vocab]``
        logits are kept. With ``labels=False`` it returns the top layer's states
        instead: ``fwd_hidden`` and ``bwd_hidden`` (``[B, T, P]``).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        _tokens, forward_outputs, backward_outputs = self.contextualize(input_ids, attention_mask)
        fwd_top, bwd_top = forward_outputs[-1], backward_outputs[-1]
        if not labels:
            return {"fwd_hidden": fwd_top, "bwd_hidden": bwd_top}
        predicting = self._predicting(attention_mask)
        batch, width = input_ids.shape
        where = predicting.nonzero()
        row_start = where[:, 0] * width
        count = torch.tensor(where.shape[0], device=input_ids.device)
        out: dict[str, torch.Tensor] = {}
        for name, top, offset, target_offset in (("fwd", fwd_top, 0, 1), ("bwd", bwd_top, 1, 0)):
            positions, targets = _bucketed_rows(row_start + where[:, 1] + offset, input_ids[where[:, 0], where[:, 1] + target_offset])
            rows = self.dropout(top.reshape(batch * width, -1).index_select(0, positions))
            loss_sum, correct = linear_cross_entropy(rows, self.softmax.weight, self.softmax.bias, targets)
            out[f"{name}_loss_sum"], out[f"{name}_count"], out[f"{name}_correct"] = loss_sum, count, correct
        return out

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-token negative log-likelihoods ``[B, T]`` (fp32) of each direction, for perplexity.

        ``fwd_nll[b, t]`` is ``-log p(x_t | x_<t)`` for t >= 1; ``bwd_nll[b, t]`` is
        ``-log p(x_t | x_>t)`` for t < length - 1; 0 where a direction predicts
        nothing (first/last token, padding). Call in eval mode.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.forward(input_ids, attention_mask, labels=False)
        predicting = self._predicting(attention_mask)
        chunk = max(1, (1 << 22) // self.config.vocab_size)  # ~16 MB of fp32 logits at a time
        result = {}
        for name, top, source, target, slot in (
            ("fwd", hidden["fwd_hidden"], slice(None, -1), slice(1, None), slice(1, None)),
            ("bwd", hidden["bwd_hidden"], slice(1, None), slice(None, -1), slice(None, -1)),
        ):
            rows, targets = top[:, source][predicting], input_ids[:, target][predicting]
            nll = [F.cross_entropy(self.softmax(r).float(), t, reduction="none") for r, t in zip(rows.split(chunk), targets.split(chunk))]
            full = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
            if nll:
                full[:, slot][predicting] = torch.cat(nll)
            result[f"{name}_nll"] = full
        return result


class ElmoFamily(Family):
    """ELMo: ``<begin> text <end>``, the boundaries context only; the stack is the token encoding and each biLSTM layer."""

    name, title = "elmo", "ELMo"
    config_class, model_class, presets = ElmoConfig, ElmoBiLM, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "elmo-mini", "elmo-small"
    bottom_prefixes = ("token_encoder.", "char_table")
    always_mixes = True
    features_all_layers = True
    needs_mask_without_padding = True  # the backward LSTM starts at each row's own last token
    scorer = "bidirectional"
    compiles = False

    def feature_size(self, config):
        return 2 * config.projection_dim

    def position_limit(self, config):
        return None

    def head_dropout(self, config):
        return config.dropout

    def build(self, config, tokenizer=None):
        model = ElmoBiLM(config)
        if tokenizer is not None:
            self.prepare(model, tokenizer)
        return model

    def unused_by_features(self, stored_keys):
        return ("softmax.",)  # the softmax predicts words; features never use it

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        states = model.representations(input_ids, attention_mask)
        return states[-1], states

    def input_embeddings(self, model):
        # Layer 0, the context-free token encoding: computed for every id (the character CNN has no table).
        ids = torch.arange(model.config.vocab_size, device=next(model.parameters()).device)
        with torch.no_grad():
            return torch.cat([model.encode_tokens(chunk[None])[0] for chunk in ids.split(4096)])

    def framing(self, tokenizer) -> Framing:
        begin, end = sentence_boundary_ids(tokenizer)
        return Framing((begin,), (), (end,), 1, 1, False, False, tokenizer.pad_id if tokenizer.pad_id is not None else end)

    def check_tokenizer(self, tokenizer, where):
        if tokenizer.eos_id is None and tokenizer.sep_id is None:
            raise PtmError(f"{where}: tokenizer has neither an end-of-text nor a [SEP] token to put between documents")
        if (tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.cls_id) is None:
            raise PtmError(f"{where}: tokenizer has neither a begin-of-text nor a [CLS] token to start sentences with")

    def prepare(self, model, tokenizer):
        model.set_char_table(char_table_for_tokenizer(tokenizer, model.config.max_chars_per_token))

    def fsdp_units(self, model):
        return []

    def compile_target(self, model):
        return model

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        out = model(batch["input_ids"], batch["attention_mask"])
        return out["fwd_loss_sum"] + out["bwd_loss_sum"], out["fwd_count"] + out["bwd_count"]


FAMILY = ElmoFamily()
