"""Bengio et al.'s feed-forward neural language model (2003, "A Neural Probabilistic Language Model").

The previous ``context`` words' embeddings are concatenated into ``x``; then
``logits = b + W x + U tanh(d + H x)``, a softmax over the words. ``W`` are
the optional direct connections from the embeddings to the output.

A checkpoint of this family (``arch: "nnlm"``, written by ``ptm pretrain
--arch nnlm``) holds the whole model: ``embeddings.weight`` ``[vocab_size,
dim]``, ``hidden.*`` (H, d), ``output.*`` (U, b) and ``direct.*`` (W). Its
word-level tokenizer's id i is embedding row i; the last id is the unknown
token, whose row is the boundary read before a sentence's first word, so the
model predicts ``vocab_size - 1`` words and never the unknown one. The stack is
the embedding rows, as for static vectors, so ``ptm eval --probe`` and ``ptm
convert --to word2vec`` read them; ``ptm eval --data`` scores text with the
whole model (scorer ``feedforward``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import WORD_TOKENIZER_TASK_TOKENS, Family
from ptmcli.models.framing import Framing

EMBEDDINGS = "embeddings.weight"


@dataclass(frozen=True)
class NNLMConfig:
    """The shape of the model; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Embedding rows: the words, then the boundary (the tokenizer's unknown token)."""
    dim: int
    """Embedding width (the paper's m)."""
    context: int
    """Previous words read (n - 1)."""
    hidden_units: int
    """tanh units (h); 0 leaves only the direct connections."""
    direct: bool = True
    """The W x term from the embeddings straight to the output."""
    num_layers: int = 0
    """No layers above the embeddings in the stack."""

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.dim < 1 or self.context < 1 or self.hidden_units < 0:
            raise PtmError(f"nnlm config: vocab_size {self.vocab_size} (at least 2), dim {self.dim}, context "
                           f"{self.context} (positive) and hidden_units {self.hidden_units} (not negative) out of range")
        if self.hidden_units == 0 and not self.direct:
            raise PtmError("nnlm config: the model needs hidden units, direct connections, or both")
        if self.num_layers != 0:
            raise PtmError(f"nnlm config: num_layers must be 0, not {self.num_layers}")

    @property
    def words(self) -> int:
        """Words the output predicts: every row but the boundary."""
        return self.vocab_size - 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NNLMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"nnlm config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [name for name in ("vocab_size", "dim", "context", "hidden_units") if name not in values]
        if missing:
            raise PtmError(f"nnlm config: missing keys {', '.join(missing)}")
        return cls(**values)


class FeedForwardLM(nn.Module):
    """``P(w_t | w_{t-n+1} .. w_{t-1})`` by one tanh layer plus optional direct connections."""

    def __init__(self, config: NNLMConfig) -> None:
        super().__init__()
        self.config = config
        self.boundary = config.words  # the embedding row read before a sentence starts
        self.embeddings = nn.Embedding(config.vocab_size, config.dim)
        width = config.context * config.dim
        hidden = config.hidden_units
        self.hidden = nn.Linear(width, hidden) if hidden else None  # H and d
        self.output = nn.Linear(hidden, config.words) if hidden else None  # U and b
        self.direct = nn.Linear(width, config.words, bias=self.output is None) if config.direct else None  # W

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, words]`` for contexts ``[batch, context]`` of word indices (oldest first)."""
        x = self.embeddings(contexts).flatten(1)
        logits = self.output(torch.tanh(self.hidden(x))) if self.hidden is not None else None
        if self.direct is not None:
            logits = self.direct(x) if logits is None else logits + self.direct(x)
        return logits

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embeddings.weight.numel() if exclude_embeddings else total


def _no_presets(name: str, **overrides: Any) -> NNLMConfig:
    raise PtmError("the NNLM has no presets: ptm pretrain --arch nnlm sets its shape with --dim, --window and --hidden-size")


class NNLMFamily(Family):
    """The feed-forward LM: its stack is the embeddings of the ids; ``ptm eval`` scores text with it."""

    name, title = "nnlm", "NNLM (Bengio et al. 2003)"
    config_class, model_class, presets = NNLMConfig, FeedForwardLM, {}
    preset_config = staticmethod(_no_presets)
    bottom_prefixes = ("embeddings",)
    features_all_layers = True  # the one layer there is
    scorer = "feedforward"
    min_context = 1
    compiles = False
    # Its embeddings are context-free word vectors: finetuning treats them as static vectors' (models/static.py).
    task_tokens = WORD_TOKENIZER_TASK_TOKENS
    task_encoder = "bilstm"

    def feature_size(self, config):
        return config.dim

    def position_limit(self, config):
        return None

    def head_dropout(self, config):
        return 0.0

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        vectors = model.embeddings(input_ids)
        return vectors, [vectors]

    def input_embeddings(self, model):
        return model.embeddings.weight

    def framing(self, tokenizer) -> Framing:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((), (), (), 0, 0, False, False, pad)

    def fsdp_units(self, model):
        return []

    def compile_target(self, model):
        return model


FAMILY = NNLMFamily()
