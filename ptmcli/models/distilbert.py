"""DistilBERT (Sanh et al., 2019): a BERT with half the layers, no segment embeddings and no pooler.

Only what differs from BERT is here; the embeddings, blocks and MLM head are
``ptmcli.models.bert``'s. Inputs are framed as BERT's (``[CLS] a [SEP] b [SEP]``)
but carry no segment ids. Positions are learned, or fixed sinusoids
(``sinusoidal_positions``), which then get no gradient. The blocks are BERT's
post-LN blocks, with dropout on the feed-forward branch only, as DistilBERT
has it. A sentence classifier reads [CLS] through ``pre_classifier`` + ReLU,
held here as the pooler (``pool``), then dropout (``classifier_dropout``,
transformers' ``seq_classif_dropout``) and ``classifier``.

Read top to bottom: the config and presets, the embeddings, block and
encoder, the pretraining model (masked LM), the task models, the key map to
transformers' DistilBERT weights, and the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.bert import (
    BertConfig,
    BertEmbeddings,
    BertFamily,
    BertModel,
    MaskedLMHead,
    masked_lm_terms,
)
from ptmcli.models.framing import Framing
from ptmcli.models.kv_cache import LayerCache
from ptmcli.models.layers import Dropout, PostNormBlock, init_bert_weights


@dataclass(frozen=True)
class DistilBertConfig(BertConfig):
    """BERT's hyper-parameters without segments, with DistilBERT's classifier dropout and position choice."""

    kind: ClassVar[str] = "distilbert"
    type_vocab_size: int = 0
    """DistilBERT has no segment embeddings: always 0."""
    classifier_dropout: float = 0.2
    """Dropout before a finetuned task head (transformers' ``seq_classif_dropout``)."""
    sinusoidal_positions: bool = False
    """Fixed sinusoidal position embeddings instead of learned ones."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.type_vocab_size != 0:
            raise PtmError(f"distilbert config: type_vocab_size must be 0 (DistilBERT has no segment embeddings), "
                           f"got {self.type_vocab_size}")
        # The norm/bias switches are BERT's and RoBERTa's: DistilBERT's block (dropout on the FFN branch only)
        # and its transformers form are post-LN with biases, so the other settings are refused, not half-built.
        if self.norm != "post":
            raise PtmError(f"distilbert config: norm {self.norm!r} is not available: DistilBERT's blocks are post-LN "
                           "(pre-LN is a setting of --arch bert and roberta)")
        if not self.bias:
            raise PtmError("distilbert config: bias false is not available: DistilBERT's layers have biases "
                           "(the bias-free recipe is a setting of --arch bert and roberta)")


def _preset(layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, int]] = {
    "distilbert-tiny": _preset(2, 128, 2),
    "distilbert-mini": _preset(3, 256, 4),
    "distilbert-base": _preset(6, 768, 12),
}


def preset_config(name: str, **overrides: Any) -> DistilBertConfig:
    """The config of a named preset (vocab_size 30522, BERT's uncased WordPiece, unless overridden)."""
    if name not in PRESETS:
        raise PtmError(f"unknown DistilBERT preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 30522, **PRESETS[name], **overrides}
    return DistilBertConfig.from_dict(values)


def sinusoidal_table(positions: int, width: int) -> torch.Tensor:
    """``[positions, width]``: sin at even columns, cos at odd ones, of pos / 10000^(2*(j//2)/width)."""
    position = torch.arange(positions, dtype=torch.float64)[:, None]
    column = torch.arange(width)
    angle = position / torch.pow(10000.0, (2 * (column // 2)).double() / width)
    return torch.where(column % 2 == 0, angle.sin(), angle.cos()).float()


class DistilBertEmbeddings(BertEmbeddings):
    """BERT's embeddings without a segment table; fixed sinusoidal positions get no gradient."""

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.fixed_positions = config.sinusoidal_positions
        if self.fixed_positions:
            # Frozen for DDP and optimisers; detached below too, so unfreezing layers cannot train it.
            self.position_embeddings.weight.requires_grad_(False)

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        table = super().positions(input_ids)
        return table.detach() if self.fixed_positions else table


class DistilBertBlock(PostNormBlock):
    """BERT's post-LN block with dropout on the feed-forward branch only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                cache: LayerCache | None = None) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, mask, causal, cache))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class DistilBertModel(BertModel):
    """The DistilBERT encoder; its pooler is the sentence classifier's ``pre_classifier`` + ReLU on [CLS]."""

    embeddings_class = DistilBertEmbeddings
    block_class = DistilBertBlock

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        if config.sinusoidal_positions:
            table = self.embeddings.position_embeddings.weight
            with torch.no_grad():
                table.copy_(sinusoidal_table(table.shape[0], table.shape[1]).to(table.device))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pooler["dense"](hidden[:, 0]))


class DistilBertForMaskedLM(nn.Module):
    """DistilBERT with BERT's masked-LM head (decoder tied to the word embeddings); returns summed losses and counts."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.mlm = MaskedLMHead(config, self.distilbert.embeddings.word_embeddings)
        init_bert_weights(self.mlm.dense, config.initializer_range)
        init_bert_weights(self.mlm.norm, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        """State-dict keys that alias another key: store the target once, re-tie on load."""
        return {"mlm.decoder.weight": "distilbert.embeddings.word_embeddings.weight"}

    def tie_weights(self) -> None:
        self.mlm.decoder.weight = self.distilbert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``mlm_loss_sum``, ``mlm_count``, ``mlm_correct`` (and ``mlm_logits`` under ``torch.no_grad()``), as
        ``BertForPreTraining.forward``. Segment ids are ignored; ``nsp_labels`` is taken only to refuse it."""
        if nsp_labels is not None:
            raise PtmError("DistilBERT has no next-sentence head: pretrain it with --objective mlm")
        hidden = self.distilbert(input_ids, None, attention_mask)
        return masked_lm_terms(self.mlm, hidden, mlm_labels)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct values (the tied decoder once, the pooler and fixed sinusoids included);
        optionally without the word and position tables."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= sum(p.numel() for p in self.distilbert.embeddings.parameters() if p.dim() == 2)
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.15) -> float:
        """Training flops per input token: BERT's count without the NSP head (docs/models.md)."""
        cfg = self.config
        encoder_matmul = sum(m.weight.numel() for m in self.distilbert.layers.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.num_layers * cfg.hidden_size * seq_len
        mlm = mask_fraction * (cfg.hidden_size * cfg.hidden_size + cfg.vocab_size * cfg.hidden_size)
        return 6.0 * (encoder_matmul + mlm) + attention


class DistilBertForSequenceClassification(nn.Module):
    """DistilBERT + dropout + ``classifier`` over the pooled [CLS] vector (``pre_classifier`` + ReLU)."""

    def __init__(self, config: DistilBertConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.distilbert(input_ids, None, attention_mask)
        return self.classifier(self.dropout(self.distilbert.pool(hidden)))


class DistilBertForTokenClassification(nn.Module):
    """DistilBERT + dropout + ``classifier`` on every token: ``[B, T, num_labels]`` logits."""

    def __init__(self, config: DistilBertConfig, num_labels: int):
        super().__init__()
        self.config = config
        self.distilbert = DistilBertModel(config)
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        return {}

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.distilbert(input_ids, None, attention_mask)))


# transformers DistilBERT key <-> ptm key, per layer ("{i}") and global.
_HF_LAYER_KEYS = {
    "attention.out": "attention.out_lin",
    "attention_norm": "sa_layer_norm",
    "ffn.up": "ffn.lin1",
    "ffn.down": "ffn.lin2",
    "ffn_norm": "output_layer_norm",
}
_HF_GLOBAL_KEYS = {
    "distilbert.embeddings.word_embeddings.weight": "distilbert.embeddings.word_embeddings.weight",
    "distilbert.embeddings.position_embeddings.weight": "distilbert.embeddings.position_embeddings.weight",
    "distilbert.embeddings.norm.weight": "distilbert.embeddings.LayerNorm.weight",
    "distilbert.embeddings.norm.bias": "distilbert.embeddings.LayerNorm.bias",
    "distilbert.pooler.dense.weight": "pre_classifier.weight",
    "distilbert.pooler.dense.bias": "pre_classifier.bias",
    "mlm.dense.weight": "vocab_transform.weight",
    "mlm.dense.bias": "vocab_transform.bias",
    "mlm.norm.weight": "vocab_layer_norm.weight",
    "mlm.norm.bias": "vocab_layer_norm.bias",
    "mlm.decoder.weight": "vocab_projector.weight",
    "mlm.bias": "vocab_projector.bias",
}
_HF_LAYERS = "distilbert.transformer.layer"
_HF_OWN_KEYS = ("pre_classifier.", "vocab_", "classifier.")  # a DistilBertModel file has none of these


def _layer_count(keys: Any, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers DistilBERT state dict (DistilBertModel, DistilBertForMaskedLM ...) to ptm keys.

    ``q_lin``, ``k_lin`` and ``v_lin`` are concatenated into the fused ``qkv``. Heads absent
    from the input are absent from the output; unknown keys are ignored.
    """
    if not any(k.startswith("distilbert.") for k in hf):
        hf = {k if k.startswith(_HF_OWN_KEYS) else f"distilbert.{k}": v for k, v in hf.items()}
    out = {ours: hf[theirs] for ours, theirs in _HF_GLOBAL_KEYS.items() if theirs in hf}
    for i in range(_layer_count(hf, f"{_HF_LAYERS}.")):
        src, dst = f"{_HF_LAYERS}.{i}.", f"distilbert.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [hf[f"{src}attention.{name}.{kind}"] for name in ("q_lin", "k_lin", "v_lin")]
            out[f"{dst}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
            for ours, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{ours}.{kind}"] = hf[f"{src}{theirs}.{kind}"]
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm DistilBERT state dict to transformers keys (``DistilBertForMaskedLM``'s, plus ``pre_classifier``).

    The fused ``qkv`` splits into q_lin/k_lin/v_lin; the tied decoder weight is filled in
    when the MLM head is there.
    """
    out = {theirs: ours[mine] for mine, theirs in _HF_GLOBAL_KEYS.items() if mine in ours}
    if "mlm.bias" in ours:
        out.setdefault("vocab_projector.weight", ours["distilbert.embeddings.word_embeddings.weight"])
    for i in range(_layer_count(ours, "distilbert.layers.")):
        src, dst = f"distilbert.layers.{i}.", f"{_HF_LAYERS}.{i}."
        for kind in ("weight", "bias"):
            query, key, value = ours[f"{src}attention.qkv.{kind}"].chunk(3, dim=0)
            for name, tensor in (("q_lin", query), ("k_lin", key), ("v_lin", value)):
                out[f"{dst}attention.{name}.{kind}"] = tensor.contiguous()
            for mine, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{theirs}.{kind}"] = ours[f"{src}{mine}.{kind}"]
    return out


class DistilBertFamily(BertFamily):
    """DistilBERT: framed as BERT without segment ids; the stack is the embedding output and each block's.

    A sentence task reads [CLS] through the pooler (``pre_classifier`` + ReLU) whether pretraining trained
    it or not: DistilBERT's finetuning recipe (transformers' DistilBertForSequenceClassification) learns it
    on the task.
    """

    budget_recipe: dict = {}  # no --norm/--bias switches; not measured
    name, title = "distilbert", "DistilBERT"
    config_class, model_class, presets = DistilBertConfig, DistilBertForMaskedLM, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "distilbert-mini", "distilbert-tiny"
    head_parts = {"pooler": "distilbert.pooler.", "mlm": "mlm."}
    prefix_lm = False  # no segment embeddings to tell the target from the source
    encoder_prefix = "distilbert."
    bottom_prefixes = ("distilbert.embeddings.",)

    def head_dropout(self, config: DistilBertConfig) -> float:
        return config.classifier_dropout

    def pooler_trained(self, objective, initialised):
        return True

    def framing(self, tokenizer) -> Framing:
        cls, sep = tokenizer.cls_id, tokenizer.sep_id
        if cls is None or sep is None:
            raise PtmError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens, which DistilBERT inputs need")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((cls,), (sep,), (sep,), 0, 0, False, True, pad)

    def check_tokenizer(self, tokenizer, where):
        for role in ("cls", "sep", "pad", "mask"):
            if getattr(tokenizer, f"{role}_id") is None:
                raise PtmError(f"{where}: tokenizer has no {role} token, which DistilBERT pretraining needs "
                               "(train one with --special-tokens bert)")


FAMILY = DistilBertFamily()
