"""Static word vectors: one vector per word, the same in every context (word2vec, GloVe, fastText).

A checkpoint of this family (``arch: "static"``) holds one tensor, ``vectors``
``[vocab_size, hidden_size]``, row i the vector of the tokenizer's id i, and a
word-level tokenizer (``tokenizer.json``, a ``WordLevel`` model over
whitespace-separated words) whose ids are the rows. Its stack is one layer,
the vectors themselves, so ``extract-features`` reads them as it reads any
encoder's.

A fastText checkpoint also holds ``ngrams`` ``[buckets, hidden_size]``, the
character n-gram rows by hash bucket, and its config records how a word's
n-grams are found (``min_n``, ``max_n``, ``buckets``, ``ngram_hash``), so a
word outside the vocabulary gets a vector, the mean of its n-gram rows, as in
fastText. The vocabulary words' rows in ``vectors`` already include their
n-grams (each is the mean of the word's own row and its n-gram rows).
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

VECTORS = "vectors"
NGRAMS = "ngrams"
NGRAM_HASH = "fnv1a32"
"""fastText's n-gram hash: 32-bit FNV-1a over the UTF-8 bytes of each n-gram of ``<word>``, bytes taken as
signed chars (``ptmcli.static.subwords``); the bucket is the hash modulo ``buckets``."""
_SUBWORD_FIELDS = ("buckets", "min_n", "max_n", "ngram_hash")


@dataclass(frozen=True)
class StaticConfig:
    """The shape of a table of word vectors; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Rows: one per tokenizer id."""
    hidden_size: int
    """Width of every vector."""
    num_layers: int = 0
    """No layers above the vectors (the stack is the vectors alone)."""
    buckets: int = 0
    """Rows of the character n-gram table (fastText); 0: no table, a word outside the vocabulary has no vector."""
    min_n: int = 0
    """Shortest n-gram, in characters of ``<word>``."""
    max_n: int = 0
    """Longest n-gram; below ``min_n``, a word has no n-grams."""
    ngram_hash: str = ""
    """How an n-gram finds its bucket: ``NGRAM_HASH``, the one there is."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.hidden_size < 1:
            raise PtmError(f"static config: vocab_size {self.vocab_size} and hidden_size {self.hidden_size} must be positive")
        if self.num_layers != 0:
            raise PtmError(f"static config: num_layers must be 0, not {self.num_layers}")
        if self.buckets < 0:
            raise PtmError(f"static config: buckets {self.buckets} must not be negative")
        if self.buckets and (self.min_n < 1 or self.max_n < 0 or self.ngram_hash != NGRAM_HASH):
            raise PtmError(f"static config: an n-gram table needs min_n >= 1 (got {self.min_n}), max_n >= 0 "
                           f"(got {self.max_n}) and ngram_hash {NGRAM_HASH!r} (got {self.ngram_hash!r})")

    @property
    def has_ngrams(self) -> bool:
        return self.buckets > 0

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not self.has_ngrams:  # word2vec and GloVe checkpoints keep their three keys
            for name in _SUBWORD_FIELDS:
                del values[name]
        return values

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


@dataclass(frozen=True)
class Subwords:
    """A checkpoint's character n-gram table and how words find their rows in it."""

    ngrams: torch.Tensor
    """``[buckets, dim]``."""
    min_n: int
    max_n: int
    buckets: int
    ngram_hash: str


class StaticVectors(nn.Module):
    """The vector table (and a fastText n-gram table); ``forward`` looks ids up."""

    def __init__(self, config: StaticConfig):
        super().__init__()
        self.config = config
        self.vectors = nn.Parameter(torch.empty(config.vocab_size, config.hidden_size))
        nn.init.normal_(self.vectors, std=0.02)
        self.ngrams = nn.Parameter(torch.zeros(config.buckets, config.hidden_size)) if config.has_ngrams else None

    def tied_weights(self) -> dict[str, str]:
        return {}

    def tie_weights(self) -> None:
        """Nothing shares a tensor (a finetuned task model asks)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.vectors[input_ids]

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        return 0 if exclude_embeddings else sum(p.numel() for p in self.parameters())


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
    # A word tokenizer may have no special token but [UNK]; the word encoder drops these positions again.
    task_tokens = WORD_TOKENIZER_TASK_TOKENS
    task_encoder = "bilstm"

    def position_limit(self, config):
        return None

    def head_dropout(self, config):
        return 0.0

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        vectors = model(input_ids)
        return vectors, [vectors]

    def input_embeddings(self, model):
        return model.vectors

    def subwords(self, model):
        config = model.config
        if model.ngrams is None:
            return None
        return Subwords(model.ngrams, config.min_n, config.max_n, config.buckets, config.ngram_hash)

    def framing(self, tokenizer) -> Framing:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((), (), (), 0, 0, False, False, pad)

    def fsdp_units(self, model):
        return []

    def compile_target(self, model):
        return model


FAMILY = StaticFamily()
