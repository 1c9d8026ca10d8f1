"""The conversion table: for each ptm architecture, the transformers classes it maps to and how.

An entry (``ArchSpec``) holds the key maps and config maps as plain functions,
so adding a family is one more entry in ``_entries()``; the code that reads,
checks and writes files (``sources.py``, ``writers.py``) never asks which family it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ptmcli.errors import PtmError

# SpanBERT's objectives train the masked-LM head alone (the span boundary head is pretraining-only).
SPAN_OBJECTIVES = frozenset({"span", "span+sbo"})
# Objectives that train the plain masked-LM head under another name: DistilBERT-style distillation and UniLM.
MASKED_LM_OBJECTIVES = frozenset({"mlm-distill", "unilm"})


@dataclass(frozen=True)
class HFClass:
    """One transformers model class and the ptm parts (see ``ptmcli.models.heads``) it holds."""

    name: str
    parts: frozenset[str] = frozenset()
    """Head parts the class has besides the encoder/trunk."""
    optional: frozenset[str] = frozenset()
    """Of ``parts``, those a file of this class may lack (BertModel without its pooler)."""
    objective: str | None = None
    """The ptm ``objective`` a checkpoint converted from this class records."""
    task: str | None = None
    """The ptm task type of its head, if it is a task model."""
    exported_from: frozenset[str] = frozenset()
    """Other ptm objectives whose checkpoints convert to this class by default (span masking is a masked LM)."""


@dataclass(frozen=True)
class ArchSpec:
    """How one ptm architecture converts to and from transformers."""

    arch: str
    model_type: str
    """transformers' ``model_type`` in config.json."""
    classes: dict[str, HFClass]
    config_from_hf: Callable[[dict], dict]
    """transformers config.json -> ptm ``model`` dict (PtmError on what ptm cannot represent)."""
    config_to_hf: Callable[[dict, dict], dict]
    """(ptm ``model`` dict, special-token ids by role) -> the transformers config fields it sets."""
    weights_from_hf: Callable[[dict, HFClass], dict]
    """transformers state dict -> ptm state dict (a KeyError names a missing tensor)."""
    weights_to_hf: Callable[[dict, HFClass], dict]
    """ptm state dict of the class's parts -> transformers state dict, tied copies left out."""
    build_model: Callable[[dict], Any]
    """ptm ``model`` dict -> the architecture's pretraining module (randomly initialised)."""
    config_class: Callable[[dict], Any]
    """ptm ``model`` dict -> its config dataclass (validates the keys)."""
    input_embedding: str = ""
    """ptm key of the token embedding matrix (``--to word2vec``)."""
    hf_aliases: dict[str, str] = field(default_factory=dict)
    """transformers keys that are tied copies of another key: checked equal on read, never written."""
    hf_buffers: tuple[str, ...] = ()
    """Suffixes of non-weight buffers some files carry (position ids, causal masks): skipped."""
    hf_part_names: dict[str, str] = field(default_factory=dict)
    """How each head part is named in transformers, for messages."""
    guess_class: Callable[[set[str]], str] = lambda keys: ""
    """The class of a config.json without ``architectures``, from its weight names."""
    check_tokenizer: Callable[[dict, Any, str], None] = lambda model, tokenizer, where: None
    """(ptm ``model`` dict, the tokenizer read beside the weights or None, where) -> a PtmError when the
    model cannot be converted with that tokenizer (RoBERTa: none at all, or another padding id)."""
    class_config_to_hf: Callable[[dict, dict, HFClass], dict] | None = None
    """``config_to_hf`` for a class whose shape is not the checkpoint's encoder's (ELECTRA's generator)."""
    config_from_weights: Callable[[dict, dict], dict] = lambda model, hf_state: model
    """(ptm ``model`` dict from config.json, the transformers state dict) -> the ``model`` dict the weights imply,
    where config.json alone does not say (transformers 5 writes T5 v1.1's own ``lm_head`` under
    ``tie_word_embeddings: true``)."""
    takes: Callable[[dict], bool] = lambda model: False
    """For a later entry of an ``arch`` that has one already: whether a ptm checkpoint with this ``model``
    dict converts through this entry instead (a pre-LN RoBERTa goes to transformers' RobertaPreLayerNorm)."""

    def hf_config_fields(self, model: dict, specials: dict[str, int], cls: HFClass) -> dict:
        """The transformers config fields of ``model`` written as ``cls``."""
        if self.class_config_to_hf is not None:
            return self.class_config_to_hf(model, specials, cls)
        return self.config_to_hf(model, specials)

    def default_class(self, objective: str | None, task: dict | None) -> HFClass:
        """The class a checkpoint with this objective or task converts to."""
        for cls in self.classes.values():
            if task is not None and cls.task == task.get("type"):
                return cls
            if task is None and cls.task is None and (cls.objective == (objective or None) or objective in cls.exported_from):
                return cls
        what = f"task {task.get('type')!r}" if task else f"objective {objective!r}"
        raise PtmError(f"no transformers class for a {self.arch} checkpoint with {what}; "
                       f"pass --hf-class, one of: {', '.join(self.classes)}")


def _entries() -> list[ArchSpec]:
    # Imported here: each family pulls in torch and its model module.
    from ptmcli.convert import (
        hf_albert,
        hf_bart,
        hf_bert,
        hf_distilbert,
        hf_electra,
        hf_gpt,
        hf_roberta,
        hf_roberta_prelayernorm,
        hf_t5,
        hf_xlnet,
        nnlm,
        word2vec,
    )

    return [hf_bert.SPEC, hf_gpt.SPEC, hf_albert.SPEC, hf_roberta.SPEC, hf_distilbert.SPEC, hf_electra.SPEC, hf_bart.SPEC, hf_t5.SPEC, word2vec.SPEC, nnlm.SPEC,
            hf_xlnet.SPEC, hf_roberta_prelayernorm.SPEC]


def supported_classes() -> list[str]:
    return [name for spec in _entries() for name in spec.classes]


def spec_for_arch(arch: str, model: dict | None = None) -> ArchSpec:
    """The entry for a ptm ``arch`` (given its ``model`` dict, a later entry that ``takes`` it, if any), or a
    PtmError naming the ones ptm converts."""
    matches = [spec for spec in _entries() if spec.arch == arch]
    if matches:
        return next((spec for spec in matches[1:] if isinstance(model, dict) and spec.takes(model)), matches[0])
    raise PtmError(f"ptm cannot convert arch {arch!r}; it converts {', '.join(dict.fromkeys(s.arch for s in _entries()))}")


def spec_for_hf(model_type: str | None, class_name: str | None, where: str) -> tuple[ArchSpec, HFClass]:
    """The entry and class of a transformers model, or a PtmError naming it and listing the supported ones."""
    for spec in _entries():
        if spec.model_type == model_type and class_name in spec.classes:
            return spec, spec.classes[class_name]
    described = class_name or f"model_type {model_type!r}"
    raise PtmError(f"{where}: unsupported architecture {described}; ptm converts {', '.join(supported_classes())}")


def spec_for_model_type(model_type: str | None) -> ArchSpec | None:
    return next((spec for spec in _entries() if spec.model_type == model_type), None)
