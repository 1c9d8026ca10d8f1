"""What the rest of ptm asks of a model family, answered once per family.

finetuning/, features/, evaluation/, tasks/ and training/ hold a
:class:`Family` (from :func:`ptmcli.models.registry.get_family`) and ask it;
they never compare family names. A new family is one model file defining a
subclass, one row in ``models/registry.py`` and its conversion key map
(docs/extending.md).

The *stack* is what ``--layers all`` means: L + 1 tensors ``[B, T, D]``, every
one of width :meth:`Family.feature_size`. The *encoder* is the part of the
pretraining model that computes the stack; it sits under
:attr:`Family.encoder_prefix` in a checkpoint's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.framing import Framing

WORD_TOKENIZER_TASK_TOKENS = (("bos", "cls", "unk"), ("eos", "sep", "unk"), ("eos", "sep", "unk"))
"""``task_tokens`` of families read through a word-level tokenizer, whose only special token may be [UNK]
(their task encoders drop the frame before encoding)."""


class Family:
    name: str = ""
    title: str = ""
    """The name as the literature writes it (messages)."""
    config_class: type = object
    model_class: type = nn.Module
    presets: dict[str, dict[str, Any]] = {}
    preset_config: Callable[..., Any]
    default_preset: str = ""
    sample_preset: str = ""
    """The preset ``ptm pretrain`` uses on the bundled sample (minutes on a laptop CPU)."""
    head_parts: dict[str, str] = {}
    """Parts of the pretraining model a checkpoint may lack, by key prefix (``{"nsp": "nsp."}``)."""
    encoder_prefix: str = ""
    bottom_prefixes: tuple[str, ...] = ()
    """Key prefixes (in the pretraining model) of layer group 0: embeddings or token encoder."""
    sentence_pool: str = "mean"
    """Where a finetuned sentence task reads its vector: ``pooler`` (the family's own pooler),
    ``last`` (the last real token), ``mean``."""
    always_mixes: bool = False
    """Whether finetuning always reads a scalar mix of the stack (ELMo's recipe) rather than the top layer."""
    features_all_layers: bool = False
    """Whether ``extract-features`` writes every layer by default."""
    first_position_is_summary: bool = False
    """Whether position 0 is a summary token ([CLS]), which ``--pool cls`` reads."""
    needs_mask_without_padding: bool = False
    """Whether the encoder needs the attention mask even when nothing is padded."""
    task_tokens: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (("bos", "cls"), ("eos", "sep"), ("eos", "sep"))
    """Labeled tasks lay a sequence out as ``start A end`` or ``start A delimiter B end``: the tokenizer
    roles (first one present wins) that fill the three places."""
    pair_delimiter_repeats: int = 1
    """How many delimiter tokens separate the two texts of a pair (RoBERTa: two ``</s>``)."""
    summary_last: bool = False
    """Whether labeled tasks move the start token to the end, in a segment of its own: ``A end start`` and
    ``A delimiter B end start`` (XLNet's ``A <sep> <cls>``, the summary token in segment 2), read there by
    ``sentence_pool = "last"``."""
    scorer: str | None = None
    """How ``ptm eval`` scores text: ``masked`` (pseudo-perplexity), ``causal``, ``permutation`` (XLNet),
    ``bidirectional``,
    ``feedforward`` (the NNLM)."""
    min_context: int = 3
    """Shortest evaluation window: room for one token between the special ones."""
    generates: bool = False
    """Whether the family continues text (``ptm eval --sample``, sliding-window ``--stride``). Its model
    then has ``incremental_decoder(context=None)``, returning a :class:`ptmcli.models.generation.Decoder`:
    ``start(prompt_ids) -> (logits, state)`` and ``step(state, next_ids) -> (logits, state)`` over a
    key/value cache, which is all ``generate`` needs."""
    is_encoder_decoder: bool = False
    """Whether the model encodes a source and decodes a target (BART): its forward takes a two-sequence
    batch (``ptmcli.data.seq2seq``: ``input_ids``, ``attention_mask``, ``decoder_input_ids``, ``labels``)
    and returns ``lm_loss_sum``/``lm_count``/``lm_correct``; its ``incremental_decoder(context)``'s
    ``start`` takes the sources (right-padded, optionally with their ``attention_mask``), encodes them
    once and feeds the decoder-start token. The stack is the encoder's. Such a family does not continue
    text, so ``generates`` stays False."""
    prefix_lm: bool = False
    """Whether the encoder with its masked-LM head can serve as UniLM's sequence-to-sequence LM (``--task seq2seq``
    on an encoder; ``ptmcli.models.prefix_lm``): source and target in one sequence under the seq2seq attention
    mask, each target token predicted at a [MASK]. The encoder then has ``embeddings(ids, segments, position_ids)``,
    ``layers`` of blocks taking a key/value cache and ``final_norm``, and :meth:`masked_lm_head` answers."""
    budget_recipe: dict[str, Any] = {}
    """Pretraining settings (``PretrainConfig`` fields) that ``--budget`` uses where the flag is not given: what
    measured best for this family at small budgets (docs/results.md, "Pretraining on a time budget")."""
    compiles: bool = True
    """Whether ``--compile`` applies (an LSTM with per-batch unique tokens does not compile)."""
    task_encoder: str | None = None
    """For context-free word vectors: the small encoder finetuning trains between them and the head by default
    (``bilstm``; ``--encoder``, ``ptmcli/finetuning/word_encoders.py``), the vectors frozen unless told
    otherwise. None: the head reads the top layer."""
    parts: tuple[str, ...] = ()
    """The networks of a checkpoint that ``ptm eval --part`` chooses between, the default first (ELECTRA:
    discriminator, generator); empty when the model is one network. Each other one is a ``head_parts`` name."""

    # -- shapes --------------------------------------------------------------------------------

    def num_layers(self, config: Any) -> int:
        return config.num_layers

    def feature_size(self, config: Any) -> int:
        return config.hidden_size

    def position_limit(self, config: Any) -> int | None:
        """Most positions the model takes (learned positions), or None (no limit)."""
        return getattr(config, "max_position_embeddings", None)

    def head_dropout(self, config: Any) -> float:
        return config.hidden_dropout

    def build(self, config: Any, tokenizer: Any = None) -> nn.Module:
        """The pretraining model of ``config``; ``tokenizer`` for families that read its vocabulary's spelling."""
        return self.model_class(config)

    def model_config(self, preset: str, tokenizer: Any, **overrides: Any) -> Any:
        if preset not in self.presets:
            raise PtmError(f"--preset {preset!r} is not a {self.name} preset; choose one of: {', '.join(self.presets)}")
        return self.preset_config(preset, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, **overrides)

    # -- the encoder and its stack ---------------------------------------------------------------

    def encoder(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.encoder_prefix.rstrip(".")) if self.encoder_prefix else model

    def unused_by_features(self, stored_keys: set[str]) -> tuple[str, ...]:
        """Encoder key prefixes (relative to the encoder) that features never read and a checkpoint may lack."""
        return ()

    def stack(self, model: nn.Module, input_ids: torch.Tensor, type_ids: torch.Tensor | None,
              attention_mask: torch.Tensor | None, normed_top: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(top output, the L + 1 layers) for a right-padded batch; ``attention_mask`` None: no padding."""
        raise NotImplementedError

    def top(self, model: nn.Module, input_ids: torch.Tensor, type_ids: torch.Tensor | None,
            attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The last layer ``[B, T, D]``."""
        return self.stack(model, input_ids, type_ids, attention_mask)[0]

    def pool(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """The family's own pooler (``sentence_pool == "pooler"``)."""
        raise PtmError(f"{self.name} has no pooler")

    def pooler_trained(self, objective: str | None, initialised: list[str] | None) -> bool | None:
        """Whether the checkpoint's pooler learned to summarise a sentence (None: the family has none)."""
        return None

    def part(self, model: nn.Module, name: str) -> tuple[nn.Module, Family]:
        """(module, the family that answers for it) of ``--part name``, not the default one: what ``ptm eval``
        scores in place of the whole model (ELECTRA's generator, scored as a masked LM)."""
        raise PtmError(f"a {self.name} checkpoint has no part {name!r}")

    def input_embeddings(self, model: nn.Module) -> torch.Tensor:
        """``[vocab, D]``: the context-free vector of each token id, what static-vector probes read."""
        raise PtmError(f"{self.title or self.name} has no input embedding matrix to read word vectors from")

    def subwords(self, model: nn.Module) -> Any:
        """The character n-gram table that gives a word outside the vocabulary a vector (fastText's), as
        ``ptmcli.models.static.Subwords``; None when the model has none."""
        return None

    # -- inputs ----------------------------------------------------------------------------------

    def framing(self, tokenizer: Any) -> Framing:
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: Any, where: str) -> None:
        """Refuse a tokenizer that lacks the special tokens pretraining this family needs."""

    def prepare(self, model: nn.Module, tokenizer: Any) -> None:
        """Fill in what a fresh model takes from its tokenizer (ELMo's character spellings)."""

    # -- training --------------------------------------------------------------------------------

    def fsdp_units(self, model: nn.Module) -> list[nn.Module]:
        """The modules FSDP shards one by one (each block), before the root."""
        return list(self.encoder(model).layers)

    def compile_target(self, model: nn.Module) -> nn.Module:
        """The module ``--compile`` compiles in place: fixed shapes, unlike a head over masked rows."""
        return self.encoder(model)

    def lm_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], last_hidden: torch.Tensor | None,
                mask_id: int | None, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed LM loss, predicted tokens) on a batch's own inputs: the auxiliary LM of finetuning.

        ``last_hidden`` is the top layer the task's forward pass computed, when it did.
        """
        raise PtmError(f"{self.name} has no language-model loss")

    def lm_needs_mask_token(self) -> bool:
        return False

    def masked_lm_head(self, model: nn.Module) -> nn.Module:
        """The masked-LM head of a ``prefix_lm`` family's pretraining model: hidden ``[..., D]`` -> logits
        ``[..., vocab]``, with ``transform``, ``decoder`` and ``bias`` (``ptmcli.models.bert.masked_lm_terms``)."""
        raise PtmError(f"{self.title or self.name} has no masked-LM head to predict target tokens with")
