"""RoBERTa (Liu et al., 2019): BERT's encoder and MLM head, pretrained without next-sentence prediction.

Only what differs from BERT is here; the blocks, the MLM head and the pooler are
``ptmcli.models.bert``'s. Positions are numbered as fairseq numbers them: real
tokens count from ``pad_token_id + 1`` and padding tokens sit at
``pad_token_id``, so the position table has ``pad_token_id + 1`` rows more
than the ``max_position_embeddings`` tokens a sequence may hold (514 rows for
512 tokens; transformers' ``max_position_embeddings`` counts the rows). There
is one segment (one token type) and texts are framed ``<s> A </s>`` and
``<s> A </s></s> B </s>``.

Read top to bottom: the config and presets, the embeddings and the encoder,
the pretraining model (masked LM), the task models, the key map to
transformers' RoBERTa weights, and the family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models import bert
from ptmcli.models.bert import (
    BertConfig,
    BertEmbeddings,
    BertFamily,
    BertModel,
    MaskedLMHead,
    masked_lm_terms,
)
from ptmcli.models.framing import Framing, first_token
from ptmcli.models.layers import Dropout, init_bert_weights


@dataclass(frozen=True)
class RobertaConfig(BertConfig):
    """BERT's hyper-parameters with RoBERTa's defaults and its classifier dropout."""

    kind: ClassVar[str] = "roberta"
    type_vocab_size: int = 1
    """RoBERTa has one segment."""
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    """Id of the padding token, which also fixes where positions start."""
    classifier_dropout: float | None = None
    """Dropout before a finetuned task head; None is ``hidden_dropout``."""

    @property
    def position_rows(self) -> int:
        """Rows of the position table: the padding row and those below it come first."""
        return self.max_position_embeddings + self.pad_token_id + 1


def _preset(layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, int]] = {
    "roberta-tiny": _preset(2, 128, 2),
    "roberta-mini": _preset(4, 256, 4),
    "roberta-base": _preset(12, 768, 12),
    "roberta-large": _preset(24, 1024, 16),
}


def preset_config(name: str, **overrides: Any) -> RobertaConfig:
    """The config of a named preset (vocab_size 50265 unless overridden)."""
    if name not in PRESETS:
        raise PtmError(f"unknown RoBERTa preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 50265, **PRESETS[name], **overrides}
    if values.get("pad_token_id") is None:
        values.pop("pad_token_id", None)  # a tokenizer without padding: the framing refuses it
    return RobertaConfig.from_dict(values)


def position_ids(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """fairseq's numbering: real tokens pad_id + 1, pad_id + 2 ... in order; padding tokens pad_id."""
    real = input_ids.ne(pad_id).long()  # ONNX's CumSum takes no booleans
    return real.cumsum(1) * real + pad_id


class RobertaEmbeddings(BertEmbeddings):
    """BERT's embeddings with positions counted from the padding id, padding tokens at the padding row."""

    def __init__(self, config: RobertaConfig):
        super().__init__(dataclasses.replace(config, max_position_embeddings=config.position_rows))
        self.pad_id, self.max_length = config.pad_token_id, config.max_position_embeddings

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.max_length:
            raise PtmError(f"sequence of {length} tokens is longer than max_position_embeddings {self.max_length}")
        return self.position_embeddings(position_ids(input_ids, self.pad_id))


class RobertaModel(BertModel):
    """The RoBERTa encoder: BERT's, with RoBERTa's position numbering."""

    embeddings_class = RobertaEmbeddings


class RobertaForMaskedLM(nn.Module):
    """RoBERTa with BERT's masked-LM head (decoder tied to the word embeddings); returns summed losses and counts."""

    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)
        self.mlm = MaskedLMHead(config, self.roberta.embeddings.word_embeddings)
        init_bert_weights(self.mlm.dense, config.initializer_range)
        init_bert_weights(self.mlm.norm, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        """State-dict keys that alias another key: store the target once, re-tie on load."""
        return {"mlm.decoder.weight": "roberta.embeddings.word_embeddings.weight"}

    def tie_weights(self) -> None:
        self.mlm.decoder.weight = self.roberta.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``mlm_loss_sum``, ``mlm_count``, ``mlm_correct`` (and ``mlm_logits`` under ``torch.no_grad()``), as
        ``BertForPreTraining.forward``; ``nsp_labels`` is taken only to say that RoBERTa has no NSP head."""
        if nsp_labels is not None:
            raise PtmError("RoBERTa has no next-sentence head: pretrain it with --objective mlm")
        hidden = self.roberta(input_ids, token_type_ids, attention_mask)
        return masked_lm_terms(self.mlm, hidden, mlm_labels)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values (the tied decoder once, the pooler included); optionally without the tables."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= sum(p.numel() for p in self.roberta.embeddings.parameters() if p.dim() == 2)
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.15) -> float:
        """Training flops per input token: BERT's count without the NSP head (docs/models.md)."""
        cfg = self.config
        encoder_matmul = sum(m.weight.numel() for m in self.roberta.layers.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.num_layers * cfg.hidden_size * seq_len
        mlm = mask_fraction * (cfg.hidden_size * cfg.hidden_size + cfg.vocab_size * cfg.hidden_size)
        return 6.0 * (encoder_matmul + mlm) + attention


def head_dropout(config: RobertaConfig) -> float:
    return config.hidden_dropout if config.classifier_dropout is None else config.classifier_dropout


class RobertaForSequenceClassification(nn.Module):
    """RoBERTa + ``classifier`` over the pooled ``<s>`` vector: transformers' classification head, whose
    dense + tanh is the pooler here and whose ``out_proj`` is ``classifier``."""

    def __init__(self, config: RobertaConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)
        self.dropout = Dropout(head_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.roberta(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(self.roberta.pool(hidden)))


class RobertaForTokenClassification(nn.Module):
    """RoBERTa + dropout + ``classifier`` on every token: ``[B, T, num_labels]`` logits."""

    def __init__(self, config: RobertaConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)
        self.dropout = Dropout(head_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.roberta(input_ids, token_type_ids, attention_mask)))


# transformers' RoBERTa encoder keys are BERT's under "roberta."; its MLM head is "lm_head".
_HF_HEAD_KEYS = {
    "mlm.dense.weight": "lm_head.dense.weight",
    "mlm.dense.bias": "lm_head.dense.bias",
    "mlm.norm.weight": "lm_head.layer_norm.weight",
    "mlm.norm.bias": "lm_head.layer_norm.bias",
    "mlm.decoder.weight": "lm_head.decoder.weight",
    "mlm.bias": "lm_head.bias",
}


def _renamed(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {new + k[len(old):]: v for k, v in state.items() if k.startswith(old)}


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers RoBERTa state dict (RobertaModel, RobertaForMaskedLM) to ptm keys.

    The encoder goes through BERT's map; heads absent from the input are absent from
    the output; unknown keys are ignored.
    """
    if not any(k.startswith("roberta.") for k in hf):
        hf = {f"roberta.{k}": v for k, v in hf.items()}
    encoder = bert.state_dict_from_hf(_renamed(hf, "roberta.", "bert."))
    out = _renamed(encoder, "bert.", "roberta.")
    out.update({ours: hf[theirs] for ours, theirs in _HF_HEAD_KEYS.items() if theirs in hf})
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm RoBERTa state dict to transformers ``RobertaForMaskedLM`` keys (plus ``roberta.pooler.*``).

    The tied decoder weight and the decoder bias (transformers' alias of ``lm_head.bias``)
    are filled in when the MLM head is there.
    """
    encoder = bert.state_dict_to_hf(_renamed(ours, "roberta.", "bert."))
    out = _renamed(encoder, "bert.", "roberta.")
    out.update({theirs: ours[mine] for mine, theirs in _HF_HEAD_KEYS.items() if mine in ours})
    if "mlm.bias" in ours:
        out.setdefault("lm_head.decoder.weight", ours["roberta.embeddings.word_embeddings.weight"])
        out["lm_head.decoder.bias"] = ours["mlm.bias"]
    return out


class RobertaFamily(BertFamily):
    """RoBERTa: ``<s> a </s></s> b </s>``, one segment; the stack is BERT's.

    A sentence task reads ``<s>`` through the pooler (dense + tanh) whether pretraining trained it or not:
    RoBERTa's finetuning recipe (transformers' RobertaClassificationHead) learns that layer on the task.
    """

    name, title = "roberta", "RoBERTa"
    config_class, model_class, presets = RobertaConfig, RobertaForMaskedLM, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "roberta-mini", "roberta-tiny"
    head_parts = {"pooler": "roberta.pooler.", "mlm": "mlm."}
    prefix_lm = False  # one segment, and positions counted from the padding id: UniLM's layout needs both
    encoder_prefix = "roberta."
    bottom_prefixes = ("roberta.embeddings.",)
    task_tokens = (("cls", "bos"), ("sep", "eos"), ("sep", "eos"))
    pair_delimiter_repeats = 2

    def head_dropout(self, config: RobertaConfig) -> float:
        return head_dropout(config)

    # One segment: segment ids that tasks lay out for pairs are not RoBERTa's inputs.
    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        return super().stack(model, input_ids, None, attention_mask, normed_top)

    def top(self, model, input_ids, type_ids, attention_mask):
        return super().top(model, input_ids, None, attention_mask)

    def pooler_trained(self, objective, initialised):
        return True

    def framing(self, tokenizer) -> Framing:
        start, end = first_token(tokenizer, "cls", "bos"), first_token(tokenizer, "sep", "eos")
        if start is None or end is None:
            raise PtmError("the checkpoint's tokenizer has no <s>/</s> tokens, which RoBERTa inputs need")
        if tokenizer.pad_id is None:
            raise PtmError("the checkpoint's tokenizer has no padding token, which RoBERTa numbers its positions from")
        return Framing((start,), (end, end), (end,), 0, 0, False, True, tokenizer.pad_id)

    def check_tokenizer(self, tokenizer, where):
        for role in ("cls", "sep", "pad", "mask"):
            if getattr(tokenizer, f"{role}_id") is None:
                raise PtmError(f"{where}: tokenizer has no {role} token, which RoBERTa pretraining needs "
                               "(train one with --special-tokens roberta)")

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        out = model(batch["mlm_input_ids"], None, batch["attention_mask"], mlm_labels=batch["mlm_labels"])
        return out["mlm_loss_sum"], out["mlm_count"]


FAMILY = RobertaFamily()
