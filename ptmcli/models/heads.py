"""The heads a checkpoint may hold, by their state-dict names, and the task models built from them.

A ptm checkpoint stores the weights of the parts it really has, and its
``config.json`` says which: ``objective`` names the pretraining heads and
``task`` the task head. Names are fixed here so that pretraining, finetuning,
conversion and evaluation build the same modules.

BERT (``arch: "bert"``):

====================  =====================================  ==============================
part                  state-dict keys                        present when
====================  =====================================  ==============================
encoder               ``bert.embeddings.*``, ``bert.layers.*``  always
pooler                ``bert.pooler.dense.{weight,bias}``    pretrained with NSP, or a
                                                             sentence-level task; may be absent
mlm                   ``mlm.{dense,norm}.*``, ``mlm.bias``   ``objective`` contains ``mlm``
                      (decoder tied to the word embeddings)
nsp                   ``nsp.{weight,bias}``                  ``objective`` contains ``nsp``
classifier            ``classifier.{weight,bias}``           ``task`` is set
====================  =====================================  ==============================

Task heads (``task: {"type": ..., "labels": [...]}``): ``classifier`` is one
``nn.Linear(hidden_size, len(labels))`` after dropout (``hidden_dropout``):

- ``"classification"``: over the pooled [CLS] vector (``bert.pool``), so the
  pooler is part of a sentence classifier and must be present;
- ``"token-classification"``: over every token's last hidden state;
- ``"qa"`` (extractive question answering): ``nn.Linear(hidden_size, 2)`` over every token's last
  hidden state, the start and end logits (labels ``["start", "end"]``); transformers' ``qa_outputs``,
  without dropout before it.

ALBERT (``arch: "albert"``) has the same parts under ``albert.*`` (its encoder
``albert.embeddings.*``, ``albert.layers.*``, its pooler ``albert.pooler.dense.*``),
with ``mlm.*`` as above and the sentence-order head ``sop.{weight,bias}`` in
NSP's place (``objective`` contains ``sop``); its task heads apply
``classifier_dropout``.

RoBERTa (``arch: "roberta"``) has BERT's parts under ``roberta.*`` without the NSP head
(``mlm.*`` as above); its pooler ``roberta.pooler.dense.*`` is also the dense + tanh of
transformers' RoBERTa sequence-classification head, whose ``out_proj`` is ``classifier``.
DistilBERT (``arch: "distilbert"``) has the same under ``distilbert.*``; its pooler
``distilbert.pooler.dense.*`` is the sequence classifier's ``pre_classifier`` (ReLU, not tanh).
Both apply the family's classifier dropout before ``classifier``.

ELECTRA (``arch: "electra"``): the discriminator ``electra.*`` (embeddings at width E, shared with
the generator; ``electra.projection.*`` when E differs from H), the generator ``generator.*`` (its
decoder tied to the word embeddings), the replaced-token head ``rtd.*``; ``electra.pooler.dense.*``
is the dense + GELU of transformers' ELECTRA sequence classifier, whose ``out_proj`` is ``classifier``.

GPT (``arch: "gpt"``): the trunk ``gpt.*``; the output projection is the token
embedding itself, so a ``clm`` checkpoint has no separate head weight.

BART (``arch: "bart"``): the encoder-decoder ``bart.*`` (the shared embedding
``bart.word_embeddings.*``, ``bart.encoder.*``, ``bart.decoder.*``); the output
projection is the shared embedding, and its ``final_logits_bias`` buffer is the
part ``lm`` (absent from a converted ``BartModel``).

A part that a checkpoint lacks is initialised when a model that has it is
built from the checkpoint (:func:`ptmcli.checkpoint.load_partial_weights`),
and the loader says which parts it initialised.
"""

from __future__ import annotations

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models import distilbert, electra, roberta

TASK_TYPES = ("classification", "token-classification", "qa")

def head_parts(arch: str) -> dict[str, str]:
    """The parts of ``arch`` that a checkpoint may lack, by state-dict prefix: its pretraining
    heads (from the family) and, where ptm has a task model for it, the task ``classifier``."""
    from ptmcli.models.registry import (
        get_family,  # registry imports the families, which import nothing here
    )

    parts = dict(get_family(arch).head_parts)
    if any(a == arch for a, _ in TASK_MODELS):
        parts["classifier"] = "classifier."
    return parts


def part_of(arch: str, key: str) -> str | None:
    """The head part a state-dict key belongs to, or None for the encoder/trunk."""
    for part, prefix in head_parts(arch).items():
        if key.startswith(prefix):
            return part
    return None


def check_task(task: dict | None, where: str) -> None:
    """A task entry of config.json must name a known type and a non-empty list of labels."""
    if task is None:
        return
    if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
        raise PtmError(f"{where}: task type {task.get('type') if isinstance(task, dict) else task!r} is not one of {', '.join(TASK_TYPES)}")
    labels = task.get("labels")
    if not isinstance(labels, list) or not labels:
        raise PtmError(f"{where}: task {task['type']!r} needs a non-empty list of labels")


class _EncoderClassifier(nn.Module):
    """An encoder + dropout + ``classifier``: over the pooled first token (``pooled``: ``[B, num_labels]``)
    or on every token (``[B, T, num_labels]``). Subclasses name the encoder attribute (its state-dict prefix)."""

    encoder_name = ""
    dropout_field = "hidden_dropout"
    pooled = True

    def __init__(self, config, num_labels: int):
        super().__init__()
        from ptmcli.models.layers import Dropout, init_bert_weights

        self.config = config
        setattr(self, self.encoder_name, self.encoder_class()(config))
        self.dropout = Dropout(getattr(config, self.dropout_field))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    @staticmethod
    def encoder_class() -> type:
        raise NotImplementedError

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        encoder = getattr(self, self.encoder_name)
        hidden = encoder(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(encoder.pool(hidden) if self.pooled else hidden))


class _BertEncoder:
    encoder_name = "bert"

    @staticmethod
    def encoder_class() -> type:
        from ptmcli.models.bert import BertModel

        return BertModel


class _AlbertEncoder:
    encoder_name, dropout_field = "albert", "classifier_dropout"

    @staticmethod
    def encoder_class() -> type:
        from ptmcli.models.albert import AlbertModel

        return AlbertModel


class BertForSequenceClassification(_BertEncoder, _EncoderClassifier):
    """BERT encoder + dropout + ``classifier`` over the pooled [CLS] vector: ``[B, num_labels]`` logits."""


class BertForTokenClassification(_BertEncoder, _EncoderClassifier):
    """BERT encoder + dropout + ``classifier`` on every token: ``[B, T, num_labels]`` logits."""

    pooled = False


class AlbertForSequenceClassification(_AlbertEncoder, _EncoderClassifier):
    """ALBERT encoder + dropout + ``classifier`` over the pooled [CLS] vector: ``[B, num_labels]`` logits."""


class AlbertForTokenClassification(_AlbertEncoder, _EncoderClassifier):
    """ALBERT encoder + dropout + ``classifier`` on every token: ``[B, T, num_labels]`` logits."""

    pooled = False


class _ElectraEncoder:
    encoder_name = "electra"

    @staticmethod
    def encoder_class() -> type:
        return electra.ElectraModel


class ElectraForSequenceClassification(_ElectraEncoder, _EncoderClassifier):
    """The discriminator + dropout + ``classifier`` over the pooled [CLS] vector (dense + GELU): transformers'
    classification head, whose ``out_proj`` is ``classifier``."""


class ElectraForTokenClassification(_ElectraEncoder, _EncoderClassifier):
    """The discriminator + dropout + ``classifier`` on every token."""

    pooled = False


class SpanQuestionAnswering(nn.Module):
    """An encoder + ``classifier`` (transformers' ``qa_outputs``) on every token: ``[B, T, 2]`` start/end logits."""

    encoder_name = ""

    def __init__(self, config, num_labels: int = 2):
        super().__init__()
        from ptmcli.models.layers import init_bert_weights

        self.config = config
        setattr(self, self.encoder_name, self.encoder_class()(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    @staticmethod
    def encoder_class() -> type:
        raise NotImplementedError

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(getattr(self, self.encoder_name)(input_ids, token_type_ids, attention_mask))


class BertForQuestionAnswering(SpanQuestionAnswering):
    encoder_name = "bert"

    @staticmethod
    def encoder_class() -> type:
        from ptmcli.models.bert import BertModel

        return BertModel


class AlbertForQuestionAnswering(SpanQuestionAnswering):
    encoder_name = "albert"

    @staticmethod
    def encoder_class() -> type:
        from ptmcli.models.albert import AlbertModel

        return AlbertModel


class RobertaForQuestionAnswering(SpanQuestionAnswering):
    encoder_name = "roberta"

    @staticmethod
    def encoder_class() -> type:
        return roberta.RobertaModel


TASK_MODELS: dict[tuple[str, str], type] = {
    ("bert", "qa"): BertForQuestionAnswering,
    ("albert", "qa"): AlbertForQuestionAnswering,
    ("roberta", "qa"): RobertaForQuestionAnswering,
    ("bert", "classification"): BertForSequenceClassification,
    ("bert", "token-classification"): BertForTokenClassification,
    ("albert", "classification"): AlbertForSequenceClassification,
    ("albert", "token-classification"): AlbertForTokenClassification,
    ("roberta", "classification"): roberta.RobertaForSequenceClassification,
    ("roberta", "token-classification"): roberta.RobertaForTokenClassification,
    ("distilbert", "classification"): distilbert.DistilBertForSequenceClassification,
    ("distilbert", "token-classification"): distilbert.DistilBertForTokenClassification,
    ("electra", "classification"): ElectraForSequenceClassification,
    ("electra", "token-classification"): ElectraForTokenClassification,
}


def build_task_model(arch: str, model_config, task: dict) -> nn.Module:
    """The model of ``arch`` with the head ``task`` describes (randomly initialised)."""
    check_task(task, "task")
    cls = TASK_MODELS.get((arch, task["type"]))
    if cls is None:
        have = ", ".join(f"{a} {t}" for a, t in TASK_MODELS)
        raise PtmError(f"no {task['type']} head for arch {arch!r} (ptm has: {have})")
    return cls(model_config, len(task["labels"]))
