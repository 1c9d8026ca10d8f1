"""BERT (Devlin et al., 2019): the encoder, its pretraining heads and their losses.

Read top to bottom: the config and presets, embeddings, the encoder, the MLM and
NSP heads, the pretraining model, then the key map to Hugging Face BERT weights.

State-dict keys are ptm's checkpoint format and stay stable (see docs/models.md).
The MLM head runs only on the masked positions: the encoder output is gathered at
the rows whose label is not -100 before the transform and the vocabulary
projection, so no ``[B, T, vocab]`` logits tensor is ever built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.attached_heads import attached_terms
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing
from ptmcli.models.layers import (
    Dropout,
    PostNormBlock,
    PreNormBlock,
    SelfAttention,
    encoder_attention_mask,
    init_bert_weights,
    linear_cross_entropy,
)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder; serialised as the ``model`` object of config.json."""

    kind: ClassVar[str] = "bert"
    """The family a subclass configures, for messages."""
    vocab_size: int
    """Number of token ids (rows of the word embedding and of the MLM decoder)."""
    hidden_size: int
    """Width H of every layer."""
    num_layers: int
    """Number L of Transformer blocks."""
    num_heads: int
    """Attention heads A per block; hidden_size must be a multiple of it."""
    intermediate_size: int
    """Inner width of the feed-forward network (4H in the BERT presets)."""
    max_position_embeddings: int = 512
    """Longest sequence the learned position embeddings cover."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids: 2 for sentence A/B; 0 is no segment embedding at all."""
    hidden_dropout: float = 0.1
    """Dropout on embeddings and on each residual branch."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm."""
    initializer_range: float = 0.02
    """Std of the truncated normal used to initialise weights."""
    pad_token_id: int = 0
    """Id of the padding token."""
    norm: str = "post"
    """``post``: LayerNorm after each residual sum (BERT); ``pre``: before each branch, the residual stream
    left alone, and one final LayerNorm after the last block (the layout of pre-LN recipes such as cramming)."""
    bias: bool = True
    """False: no biases in the attention, feed-forward, LayerNorm, pooler and NSP layers (cramming's recipe);
    the MLM decoder keeps its bias (see :class:`MaskedLMHead`)."""
    heads_per_layer: tuple[int, ...] | None = None
    """Heads each block keeps after head pruning (``ptm compress --prune-heads``), each of width
    hidden_size / num_heads; None: every block has num_heads."""

    def __post_init__(self) -> None:
        if self.heads_per_layer is not None:
            # JSON gives a list; a tuple keeps the frozen config hashable.
            object.__setattr__(self, "heads_per_layer", tuple(self.heads_per_layer))
            if len(self.heads_per_layer) != self.num_layers or not all(
                    isinstance(h, int) and 1 <= h <= self.num_heads for h in self.heads_per_layer):
                raise PtmError(f"{self.kind} config: heads_per_layer {list(self.heads_per_layer)} must hold "
                               f"{self.num_layers} counts between 1 and num_heads {self.num_heads}")
        if self.hidden_size % self.num_heads:
            raise PtmError(
                f"{self.kind} config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.norm not in ("post", "pre"):
            raise PtmError(f"{self.kind} config: norm {self.norm!r} must be 'post' or 'pre'")
        if not isinstance(self.bias, bool):
            raise PtmError(f"{self.kind} config: bias {self.bias!r} must be true or false")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"{cls.kind} config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise PtmError(f"{cls.kind} config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, int]] = {
    "bert-tiny": _preset(2, 128, 2),
    "bert-mini": _preset(4, 256, 4),
    "bert-small": _preset(4, 512, 8),
    "bert-medium": _preset(8, 512, 8),
    "bert-base": _preset(12, 768, 12),
    "bert-large": _preset(24, 1024, 16),
}


def preset_config(name: str, **overrides: Any) -> BertConfig:
    """The config of a named preset (vocab_size 30522 unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown BERT preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 30522, **PRESETS[name], **overrides}
    return BertConfig.from_dict(values)


class BertEmbeddings(nn.Module):
    """Token + learned position + segment embeddings, LayerNorm, dropout.

    Subclasses number positions their own way by overriding :meth:`positions`.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size else None
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.bias)
        self.dropout = Dropout(config.hidden_dropout)

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The position embeddings to add: ``[T, H]`` for positions 0 .. T-1."""
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise PtmError(
                f"sequence of {length} tokens is longer than max_position_embeddings "
                f"{self.position_embeddings.num_embeddings}"
            )
        return self.position_embeddings.weight[:length]

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        # ``position_ids`` [B, T]: a position per token, for layouts whose rows do not count from 0 alike
        # (UniLM's decoding and teacher forcing, ``prefix_lm.py``).
        positions = self.positions(input_ids) if position_ids is None else self.position_embeddings(position_ids)
        x = self.word_embeddings(input_ids) + positions
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                # Every token is segment 0: add that one row instead of a gather.
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


class BertModel(nn.Module):
    """The BERT encoder: embeddings, L post-LN blocks, and the [CLS] pooler.

    With ``norm: pre`` the blocks are pre-LN and a final LayerNorm (``final_norm``) follows the last one;
    the embeddings keep their own LayerNorm. A family with BERT's encoder and other embeddings or blocks
    names them in a subclass.
    """

    embeddings_class: type[nn.Module] = BertEmbeddings
    block_class: type[nn.Module] = PostNormBlock
    attention_patterns = True
    """Its ``attention_mask`` may be a per-query pattern ``[B, T, T]`` (what cross-view training's views need)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = self.embeddings_class(config)
        pre = config.norm == "pre"
        block = PreNormBlock if pre else self.block_class
        self.layers = nn.ModuleList(
            block(
                config.hidden_size,
                config.num_heads,
                config.intermediate_size,
                config.hidden_dropout,
                config.attention_dropout,
                config.layer_norm_eps,
                bias=config.bias,
            )
            for _ in range(config.num_layers)
        )
        for layer, heads in zip(self.layers, config.heads_per_layer or (), strict=False):
            if heads != config.num_heads:  # a pruned block: fewer heads of the same width
                layer.attention = SelfAttention(config.hidden_size, heads, config.attention_dropout, config.bias,
                                                head_dim=config.hidden_size // config.num_heads)
        # Pre-LN blocks never normalise the residual stream: the encoder's output is normalised once here.
        self.final_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.bias) if pre else None
        )
        self.pooler = nn.ModuleDict({"dense": nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)})
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Encode ``[B, T]`` ids into the last hidden state ``[B, T, H]``.

        ``attention_mask`` is 1 for real tokens and 0 for padding, or a per-query pattern
        ``[B, T, T]`` that also hides the padding (``layers.encoder_attention_mask``: UniLM's regimes). With
        ``output_hidden_states`` the result is ``(last, all)`` where ``all`` holds
        the embedding output and every layer's output (L + 1 tensors). Pre-LN: ``last``
        is after the final LayerNorm, ``all[-1]`` the last block's own output (as
        transformers' ``hidden_states``).
        """
        mask = encoder_attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            if output_hidden_states:
                states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if output_hidden_states:
            return x, tuple(states)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled sentence vector: dense + tanh on the [CLS] (first) position."""
        return torch.tanh(self.pooler["dense"](hidden[:, 0]))


# The MLM head's row count is rounded up to a multiple of this: a handful of
# shapes instead of one per batch, so CPU matmul libraries (oneDNN under bf16)
# and torch.compile reuse their kernels instead of caching one per count.
MLM_ROW_BUCKET = 32


def _masked_rows(mlm_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flat positions and targets of the predicted tokens, padded with ignored rows; the true count."""
    flat_labels = mlm_labels.reshape(-1)
    positions = (flat_labels != IGNORE_INDEX).nonzero().squeeze(1)
    count = positions.numel()
    padding = -count % MLM_ROW_BUCKET
    targets = flat_labels.index_select(0, positions)
    if padding:
        positions = torch.cat([positions, positions.new_zeros(padding)])
        targets = torch.cat([targets, targets.new_full((padding,), IGNORE_INDEX)])
    return positions, targets, count


class MaskedLMHead(nn.Module):
    """dense + GELU + LayerNorm, then the decoder tied to the word embeddings, plus its own bias.

    ``bias: false`` drops the dense and LayerNorm biases but keeps the decoder's: with the decoder tied
    to the embeddings it is the one per-token output parameter (the log-prior of each token), it costs
    V values and no per-layer work, and it keeps the ``mlm.bias`` key every BERT-family checkpoint has.
    """

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.bias)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.bias)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The per-token transform before the vocabulary projection."""
        return self.norm(F.gelu(self.dense(hidden)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self.decoder.weight, self.bias)


def masked_lm_terms(head: MaskedLMHead, hidden: torch.Tensor, mlm_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``mlm_loss_sum``, ``mlm_count``, ``mlm_correct`` of ``head`` at the positions whose label is not -100
    (zeros without labels), and under ``torch.no_grad()`` their logits ``mlm_logits`` (``[M, vocab]``)."""
    out = {
        "mlm_loss_sum": hidden.new_zeros((), dtype=torch.float32),
        "mlm_count": torch.zeros((), dtype=torch.long, device=hidden.device),
        "mlm_correct": torch.zeros((), dtype=torch.long, device=hidden.device),
    }
    if mlm_labels is None:
        return out
    positions, targets, count = _masked_rows(mlm_labels)
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    out["mlm_count"] = torch.tensor(count, device=hidden.device)
    if torch.is_grad_enabled():
        # Training: the fused loss never keeps the [M, vocab] logits around.
        loss_sum, correct = linear_cross_entropy(head.transform(rows), head.decoder.weight, head.bias, targets)
    else:
        logits = head(rows)[:count]
        targets = targets[:count]
        out["mlm_logits"] = logits
        loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
        correct = (logits.argmax(-1) == targets).sum()
    out["mlm_loss_sum"], out["mlm_correct"] = loss_sum, correct
    return out


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence heads; returns summed losses and counts."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word_embeddings)
        self.nsp = nn.Linear(config.hidden_size, 2, bias=config.bias)
        init_bert_weights(self.mlm.dense, config.initializer_range)
        init_bert_weights(self.mlm.norm, config.initializer_range)
        init_bert_weights(self.nsp, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        """State-dict keys that alias another key: store the target once, re-tie on load."""
        return {"mlm.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def tie_weights(self) -> None:
        """Make the MLM decoder share the word-embedding parameter again (after loading or moving)."""
        self.mlm.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
        **head_inputs: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Summed losses and counts, so a loop can normalise over accumulated micro-batches.

        ``head_inputs`` go to the heads an objective attached (``attached_heads.py``), whose
        terms join the result. Keys: ``mlm_loss_sum``, ``mlm_count``, ``mlm_correct``, ``nsp_loss_sum``,
        ``nsp_count``, ``nsp_correct`` (zeros for a head given no labels), and
        ``nsp_logits`` (``[B, 2]``) when NSP ran. Under ``torch.no_grad()`` it also
        returns ``mlm_logits`` (``[M, vocab]``, the masked positions in row-major
        order); with gradients on, the MLM loss is fused with the vocabulary
        projection and those logits are never materialised.
        """
        hidden = self.bert(input_ids, token_type_ids, attention_mask)
        out = masked_lm_terms(self.mlm, hidden, mlm_labels)
        out["nsp_loss_sum"] = hidden.new_zeros((), dtype=torch.float32)
        out["nsp_count"] = torch.zeros((), dtype=torch.long, device=hidden.device)
        out["nsp_correct"] = torch.zeros((), dtype=torch.long, device=hidden.device)
        if nsp_labels is not None:
            logits = self.nsp(self.bert.pool(hidden))
            out["nsp_logits"] = logits
            out["nsp_loss_sum"] = F.cross_entropy(logits.float(), nsp_labels.reshape(-1), reduction="sum")
            out["nsp_count"] = torch.tensor(nsp_labels.numel(), device=hidden.device)
            out["nsp_correct"] = (logits.detach().argmax(-1) == nsp_labels.reshape(-1)).sum()
        out.update(attached_terms(self, hidden, mlm_labels, head_inputs))
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values (the tied decoder counted once); optionally without the embeddings."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= sum(p.numel() for p in self.bert.embeddings.parameters() if p.dim() == 2)
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.15) -> float:
        """Training flops (forward + backward) per input token; see docs/models.md.

        ``6 * N_enc + 12 * L * H * T`` for the encoder, where N_enc counts the
        matrix weights of the blocks; plus ``6 * f * (H*H + V*H)`` for the MLM
        head, which only runs on the fraction f of tokens that are masked; plus
        ``6 * (H*H + 2*H) / T`` for the pooler and NSP head, which run on [CLS].
        Embedding lookups, LayerNorm, GELU and softmax are not counted.
        """
        cfg = self.config
        encoder_matmul = sum(m.weight.numel() for m in self.bert.layers.modules() if isinstance(m, nn.Linear))
        attention = 12 * cfg.num_layers * cfg.hidden_size * seq_len
        mlm = mask_fraction * (cfg.hidden_size * cfg.hidden_size + cfg.vocab_size * cfg.hidden_size)
        sentence = (cfg.hidden_size * cfg.hidden_size + 2 * cfg.hidden_size) / seq_len
        return 6.0 * (encoder_matmul + mlm + sentence) + attention


def pretraining_loss(out: dict[str, torch.Tensor], mlm_total: int | torch.Tensor, nsp_total: int | torch.Tensor) -> torch.Tensor:
    """``mlm_loss_sum / mlm_total + nsp_loss_sum / nsp_total`` for one micro-batch.

    The totals are the counts over every micro-batch of the optimizer step (and
    every rank), so the accumulated gradient is that of the mean loss. A zero
    total drops that term (no masked tokens, or no NSP objective).
    """
    loss = out["mlm_loss_sum"] / mlm_total if int(mlm_total) > 0 else out["mlm_loss_sum"] * 0.0
    if int(nsp_total) > 0:
        loss = loss + out["nsp_loss_sum"] / nsp_total
    return loss


# Hugging Face transformers BERT key <-> ptm key, per layer ("{i}") and global.
_HF_LAYER_KEYS = {
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "ffn.up": "intermediate.dense",
    "ffn.down": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_HF_GLOBAL_KEYS = {
    "bert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
    "bert.embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
    "bert.embeddings.norm.weight": "bert.embeddings.LayerNorm.weight",
    "bert.embeddings.norm.bias": "bert.embeddings.LayerNorm.bias",
    "bert.pooler.dense.weight": "bert.pooler.dense.weight",
    "bert.pooler.dense.bias": "bert.pooler.dense.bias",
    "mlm.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.decoder.weight": "cls.predictions.decoder.weight",
    "mlm.bias": "cls.predictions.bias",
    "nsp.weight": "cls.seq_relationship.weight",
    "nsp.bias": "cls.seq_relationship.bias",
}


def _num_layers(keys: Any, pattern: str) -> int:
    indices = {int(k.split(".")[pattern.count(".") + 1]) for k in keys if k.startswith(pattern)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers BERT state dict (BertModel or BertForPreTraining) to ptm keys.

    Query, key and value are concatenated into the fused ``qkv``. Heads absent
    from the input are absent from the output; unknown keys are ignored.
    """
    if not any(k.startswith("bert.") for k in hf):
        hf = {f"bert.{k}": v for k, v in hf.items()}
    out = {ours: hf[theirs] for ours, theirs in _HF_GLOBAL_KEYS.items() if theirs in hf}
    for i in range(_num_layers(hf, "bert.encoder.layer")):
        src = f"bert.encoder.layer.{i}."
        dst = f"bert.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [hf[f"{src}attention.self.{name}.{kind}"] for name in ("query", "key", "value")]
            out[f"{dst}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
            for ours, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{ours}.{kind}"] = hf[f"{src}{theirs}.{kind}"]
    return out


def refuse_bias_free(ours: dict[str, torch.Tensor], prefix: str) -> None:
    """A PtmError when the state dict under ``prefix`` is of a model built with ``bias: false``."""
    if f"{prefix}embeddings.norm.weight" in ours and f"{prefix}embeddings.norm.bias" not in ours:
        raise PtmError("the model has no biases (bias: false) and transformers' BERT-family classes always have "
                       "them: it has no transformers form (zero biases would give the same outputs but train as "
                       "another model)")


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm BERT state dict to transformers ``BertForPreTraining`` keys.

    The fused ``qkv`` splits into query/key/value; the tied decoder weight and the
    decoder bias (HF stores ``cls.predictions.decoder.bias`` as an alias of
    ``cls.predictions.bias``) are filled in when missing. A bias-free or pre-LN
    state is refused: transformers' BERT has biases and post-LN blocks.
    """
    refuse_bias_free(ours, "bert.")
    if "bert.final_norm.weight" in ours:
        raise PtmError("a pre-LN model (norm: pre) has no transformers BERT form; transformers' pre-LN encoder "
                       "is RobertaPreLayerNorm, which a pre-LN RoBERTa (--arch roberta --norm pre) converts to")
    out = {theirs: ours[mine] for mine, theirs in _HF_GLOBAL_KEYS.items() if mine in ours}
    if "mlm.bias" in ours:
        out.setdefault("cls.predictions.decoder.weight", ours["bert.embeddings.word_embeddings.weight"])
        out["cls.predictions.decoder.bias"] = ours["mlm.bias"]
    for i in range(_num_layers(ours, "bert.layers")):
        src = f"bert.layers.{i}."
        dst = f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            query, key, value = ours[f"{src}attention.qkv.{kind}"].chunk(3, dim=0)
            for name, tensor in (("query", query), ("key", key), ("value", value)):
                out[f"{dst}attention.self.{name}.{kind}"] = tensor.contiguous()
            for mine, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{theirs}.{kind}"] = ours[f"{src}{mine}.{kind}"]
    return out


class BertFamily(Family):
    """BERT: ``[CLS] a [SEP] b [SEP]`` with segment ids; the stack is the embedding output and each block's.

    The encoder is read through ``encoder_prefix``, so a family built on BertModel subclasses this one.
    """

    name, title = "bert", "BERT"
    config_class, model_class, presets = BertConfig, BertForPreTraining, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "bert-mini", "bert-tiny"
    head_parts = {"pooler": "bert.pooler.", "mlm": "mlm.", "nsp": "nsp."}
    encoder_prefix = "bert."
    bottom_prefixes = ("bert.embeddings.",)
    sentence_pool = "pooler"
    first_position_is_summary = True
    scorer = "masked"
    task_tokens = (("cls",), ("sep",), ("sep",))
    prefix_lm = True
    # Measured on a 30-minute CPU budget (docs/results.md): the peak rate decides (1e-4 stays on the unigram
    # plateau); pre-LN keeps a high rate stable; a 30% mask rate learned most; no biases or dropout cost nothing.
    budget_recipe = {"norm": "pre", "bias": False, "hidden_dropout": 0.0, "attention_dropout": 0.0, "lr": 5e-4,
                     "mask_prob": 0.3}

    def unused_by_features(self, stored_keys: set[str]) -> tuple[str, ...]:
        # The pooler reads [CLS] for NSP and classification, never a layer; a model converted from
        # BertForMaskedLM or a sentence-transformers directory has none.
        return () if any(k.startswith(f"{self.encoder_prefix}pooler.") for k in stored_keys) else ("pooler.",)

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        # Pre-LN: the top entry is after the final LayerNorm unless a mix learned on the block's own output
        # asks for that (``normed_top`` False), as GPT's; post-LN models have ``last`` there either way.
        last, states = self.encoder(model)(input_ids, type_ids, attention_mask, output_hidden_states=True)
        return last, [*states[:-1], last] if normed_top else list(states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return self.encoder(model)(input_ids, type_ids, attention_mask)

    def pool(self, model, tokens):
        return self.encoder(model).pool(tokens)

    def input_embeddings(self, model):
        return self.encoder(model).embeddings.word_embeddings.weight

    def pooler_trained(self, objective, initialised):
        # Only next-sentence prediction trains the pooler; after MLM alone it was never asked to summarise.
        if "pooler" in (initialised or []):
            return False
        return not objective or "nsp" in objective.split("+")

    def framing(self, tokenizer) -> Framing:
        cls, sep = tokenizer.cls_id, tokenizer.sep_id
        if cls is None or sep is None:
            raise PtmError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens, which BERT inputs need")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((cls,), (sep,), (sep,), 0, 0, True, True, pad)

    def check_tokenizer(self, tokenizer, where):
        for role in ("cls", "sep", "pad", "mask"):
            if getattr(tokenizer, f"{role}_id") is None:
                raise PtmError(f"{where}: tokenizer has no {role} token, which BERT pretraining needs (train one with --special-tokens bert)")

    def lm_needs_mask_token(self) -> bool:
        return True

    def masked_lm_head(self, model):
        return model.mlm

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        # The caller masked the inputs (``mlm_input_ids``/``mlm_labels``), as pretraining does.
        out = model(batch["mlm_input_ids"], batch.get("token_type_ids"), batch["attention_mask"], mlm_labels=batch["mlm_labels"])
        return out["mlm_loss_sum"], out["mlm_count"]


FAMILY = BertFamily()
