"""Static word vectors: one vector per word, the same in every context (word2vec, GloVe, fastText).

A checkpoint of this family (``arch: "static"``) holds one tensor, ``vectors``
``[vocab_size, hidden_size]``, row i the vector of the tokenizer's id i, and a
word-level tokenizer (``tokenizer.json``, a ``WordLevel`` model over
whitespace-separated words) whose ids are the rows. Its stack is one layer,
the vectors themselves, so ``extract-features`` reads them as it reads any
encoder's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing

VECTORS = "vectors"


@dataclass(frozen=True)
class StaticConfig:
    """The shape of a table of word vectors; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Rows: one per tokenizer id."""
    hidden_size: int
    """Width of every vector."""
    num_layers: int = 0
    """No layers above the vectors (the stack is the vectors alone)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.hidden_size < 1:
            raise PtmError(f"static config: vocab_size {self.vocab_size} and hidden_size {self.hidden_size} must be positive")
        if self.num_layers != 0:
            raise PtmError(f"static config: num_layers must be 0, not {self.num_layers}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StaticConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"static config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [name for name in ("vocab_size", "hidden_size") if name not in values]
        if missing:
            raise PtmError(f"static config: missing keys {', '.join(missing)}")
        return cls(**values)


class StaticVectors(nn.Module):
    """The vector table; ``forward`` looks ids up."""

    def __init__(self, config: StaticConfig):
        super().__init__()
        self.config = config
        self.vectors = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size))
        nn.init.normal_(self.vectors, std=0.02)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.vectors[input_ids]

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return 0 if exclude_embeddings else self.vectors.numel()


def _no_presets(name: str, **overrides: Any) -> StaticConfig:
    raise PtmError("static word vectors have no presets: ptm convert reads them from word2vec, GloVe or fastText .vec files")


class StaticFamily(Family):
    """Static word vectors: no special tokens, no context; the stack is the vectors of the ids."""

    name, title = "static", "static word vectors"
    config_class, model_class, presets = StaticConfig, StaticVectors, {}
    preset_config = staticmethod(_no_presets)
    bottom_prefixes = (VECTORS,)
    features_all_layers = True  # the one layer there is
    min_context = 1
    compiles = False

    def position_limit(self, config):
        return None

    def head_dropout(self, config):
        return 0.0

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        vectors = model(input_ids)
        return vectors, [vectors]

    def input_embeddings(self, model):
        return model.vectors

    def framing(self, tokenizer) -> Framing:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((), (), (), 0, 0, False, False, pad)

    def fsdp_units(self, model):
        return []

    def compile_target(self, model):
        return model


FAMILY = StaticFamily()
