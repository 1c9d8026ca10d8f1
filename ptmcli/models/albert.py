"""ALBERT (Lan et al., 2020): BERT with factorised embeddings and layers shared across depth.

Read top to bottom: the config and presets, the embeddings (width E, projected
to the hidden width H), the layer and the encoder that applies it at every
depth, the MLM and sentence-order heads, the pretraining model, the key map to
transformers' ALBERT weights, and the family.

``share`` says what the L depths have in common: ``all`` (the paper's default)
is one layer applied L times; ``attention`` shares the attention sublayer and
gives every depth its own feed-forward sublayer; ``ffn`` the reverse; ``none``
is L separate layers, a BERT with factorised embeddings. What is shared lives
in layer 0 and ``layers.{i}`` holds only what depth i owns, so every weight is
stored once, under the names of BERT's blocks. Sharing saves parameters, not
compute: every depth still runs a whole layer.

State-dict keys are ptm's checkpoint format and stay stable (see docs/models.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.attached_heads import attached_terms
from ptmcli.models.bert import BertConfig, BertEmbeddings, _masked_rows
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing
from ptmcli.models.layers import (
    Dropout,
    FeedForward,
    SelfAttention,
    init_bert_weights,
    linear_cross_entropy,
    padding_attention_mask,
)

SHARING = ("all", "attention", "ffn", "none")
# hidden_act -> F.gelu's ``approximate``: ALBERT v2 uses the tanh approximation, v1 the exact GELU.
ACTIVATIONS = {"gelu_new": "tanh", "gelu": "none"}


@dataclass(frozen=True)
class AlbertConfig:
    """Hyper-parameters of an ALBERT encoder; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the word embedding and of the MLM decoder)."""
    embedding_size: int
    """Width E of the token, position and segment embeddings, projected to hidden_size."""
    hidden_size: int
    """Width H of every layer."""
    num_layers: int
    """Depth L: how many times a layer is applied, whatever is shared."""
    num_heads: int
    """Attention heads A per layer; hidden_size must be a multiple of it."""
    intermediate_size: int
    """Inner width of the feed-forward network (4H in the ALBERT presets)."""
    hidden_act: str = "gelu_new"
    """Activation of the feed-forward network and the MLM transform: ``gelu_new`` (tanh approximation) or ``gelu``."""
    max_position_embeddings: int = 512
    """Longest sequence the learned position embeddings cover."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids: 2 for sentence A/B."""
    hidden_dropout: float = 0.0
    """Dropout on the embeddings and on each residual branch (ALBERT v2 pretrained without dropout)."""
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities."""
    classifier_dropout: float = 0.1
    """Dropout before a finetuned task head."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm."""
    initializer_range: float = 0.02
    """Std of the truncated normal used to initialise weights."""
    pad_token_id: int = 0
    """Id of the padding token."""
    share: str = "all"
    """Cross-layer parameter sharing: ``all``, ``attention``, ``ffn`` or ``none``."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise PtmError(
                f"albert config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.num_layers < 1:
            raise PtmError(f"albert config: num_layers must be at least 1, got {self.num_layers}")
        if self.share not in SHARING:
            raise PtmError(f"albert config: share {self.share!r} is not one of {', '.join(SHARING)}")
        if self.hidden_act not in ACTIVATIONS:
            raise PtmError(f"albert config: hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlbertConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"albert config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise PtmError(f"albert config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(embedding: int, layers: int, hidden: int, heads: int) -> dict[str, int]:
    return {"embedding_size": embedding, "num_layers": layers, "hidden_size": hidden, "num_heads": heads,
            "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, int]] = {
    "albert-tiny": _preset(64, 2, 128, 2),
    "albert-mini": _preset(128, 4, 256, 4),
    "albert-base": _preset(128, 12, 768, 12),
    "albert-large": _preset(128, 24, 1024, 16),
    "albert-xlarge": _preset(128, 24, 2048, 32),
    "albert-xxlarge": _preset(128, 12, 4096, 64),
}


def preset_config(name: str, **overrides: Any) -> AlbertConfig:
    """The config of a named preset (vocab_size 30000, ALBERT's sentencepiece, unless overridden)."""
    if name not in PRESETS:
        raise PtmError(f"unknown ALBERT preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 30000, **PRESETS[name], **overrides}
    return AlbertConfig.from_dict(values)


class AlbertEmbeddings(BertEmbeddings):
    """BERT's embeddings (token + position + segment, LayerNorm, dropout) at width E, then projected to H."""

    def __init__(self, config: AlbertConfig):
        super().__init__(BertConfig(
            vocab_size=config.vocab_size, hidden_size=config.embedding_size, num_layers=0, num_heads=1,
            intermediate_size=0, max_position_embeddings=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size, hidden_dropout=config.hidden_dropout,
            layer_norm_eps=config.layer_norm_eps,
        ))
        self.projection = nn.Linear(config.embedding_size, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.projection(super().forward(input_ids, token_type_ids))


class AlbertLayer(nn.Module):
    """A post-LN Transformer layer, or the part of one that a depth owns.

    With ``attention`` False the layer has no attention sublayer of its own and
    borrows ``shared``'s (layer 0's) when called; likewise ``feed_forward``.
    """

    def __init__(self, config: AlbertConfig, attention: bool = True, feed_forward: bool = True):
        super().__init__()
        hidden = config.hidden_size
        self.owns_attention, self.owns_feed_forward = attention, feed_forward
        if attention:
            self.attention = SelfAttention(hidden, config.num_heads, config.attention_dropout)
            self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        if feed_forward:
            self.ffn = FeedForward(hidden, config.intermediate_size, ACTIVATIONS[config.hidden_act])
            self.ffn_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, shared: AlbertLayer | None = None) -> torch.Tensor:
        owner = self if self.owns_attention else shared
        x = owner.attention_norm(x + self.dropout(owner.attention(x, mask)))
        owner = self if self.owns_feed_forward else shared
        return owner.ffn_norm(x + self.dropout(owner.ffn(x)))


class AlbertModel(nn.Module):
    """The ALBERT encoder: factorised embeddings, L applications of post-LN layers, the [CLS] pooler."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.embeddings = AlbertEmbeddings(config)
        own_attention = config.share in ("ffn", "none")
        own_feed_forward = config.share in ("attention", "none")
        count = 1 if config.share == "all" else config.num_layers
        self.layers = nn.ModuleList(
            AlbertLayer(config, depth == 0 or own_attention, depth == 0 or own_feed_forward) for depth in range(count)
        )
        self.pooler = nn.ModuleDict({"dense": nn.Linear(config.hidden_size, config.hidden_size)})
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def layer_at(self, depth: int) -> AlbertLayer:
        """The layer applied at ``depth`` (0-based): the one layer under full sharing, else the depth's own."""
        return self.layers[0] if len(self.layers) == 1 else self.layers[depth]

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Encode ``[B, T]`` ids into the last hidden state ``[B, T, H]``.

        ``attention_mask`` is 1 for real tokens and 0 for padding. With
        ``output_hidden_states`` the result is ``(last, all)`` where ``all`` holds
        the projected embeddings and the output of every depth (L + 1 tensors).
        """
        mask = padding_attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        states = [x]
        shared = self.layers[0]
        for depth in range(self.config.num_layers):
            x = self.layer_at(depth)(x, mask, shared)
            if output_hidden_states:
                states.append(x)
        if output_hidden_states:
            return x, tuple(states)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled sentence vector: dense + tanh on the [CLS] (first) position."""
        return torch.tanh(self.pooler["dense"](hidden[:, 0]))


class AlbertMLMHead(nn.Module):
    """dense (H -> E) + activation + LayerNorm, then the decoder tied to the word embeddings, plus its own bias."""

    def __init__(self, config: AlbertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.approximate = ACTIVATIONS[config.hidden_act]

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The per-token transform before the vocabulary projection."""
        return self.norm(F.gelu(self.dense(hidden), approximate=self.approximate))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), self.decoder.weight, self.bias)


class AlbertForPreTraining(nn.Module):
    """ALBERT with the masked-LM and sentence-order heads; returns summed losses and counts."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.albert = AlbertModel(config)
        self.mlm = AlbertMLMHead(config, self.albert.embeddings.word_embeddings)
        self.sop = nn.Linear(config.hidden_size, 2)
        init_bert_weights(self.mlm.dense, config.initializer_range)
        init_bert_weights(self.mlm.norm, config.initializer_range)
        init_bert_weights(self.sop, config.initializer_range)

    def tied_weights(self) -> dict[str, str]:
        """State-dict keys that alias another key: store the target once, re-tie on load."""
        return {"mlm.decoder.weight": "albert.embeddings.word_embeddings.weight"}

    def tie_weights(self) -> None:
        """Make the MLM decoder share the word-embedding parameter again (after loading or moving)."""
        self.mlm.decoder.weight = self.albert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        sop_labels: torch.Tensor | None = None,
        **head_inputs: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Summed losses and counts, so a loop can normalise over accumulated micro-batches.

        As ``BertForPreTraining.forward`` with the sentence-order head in the next-sentence
        head's place: keys ``mlm_loss_sum``, ``mlm_count``, ``mlm_correct``, ``sop_loss_sum``,
        ``sop_count``, ``sop_correct`` (zeros for a head given no labels), ``sop_logits``
        (``[B, 2]``) when SOP ran, and under ``torch.no_grad()`` ``mlm_logits`` (``[M, vocab]``,
        the masked positions in row-major order). ``sop_labels``: 0 when the two segments are
        in their original order, 1 when swapped. ``head_inputs`` go to the heads an objective
        attached (``attached_heads.py``), whose terms join the result.
        """
        hidden = self.albert(input_ids, token_type_ids, attention_mask)
        out: dict[str, torch.Tensor] = {}
        for name in ("mlm", "sop"):
            out[f"{name}_loss_sum"] = hidden.new_zeros((), dtype=torch.float32)
            out[f"{name}_count"] = torch.zeros((), dtype=torch.long, device=hidden.device)
            out[f"{name}_correct"] = torch.zeros((), dtype=torch.long, device=hidden.device)
        if mlm_labels is not None:
            positions, targets, count = _masked_rows(mlm_labels)
            rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
            out["mlm_count"] = torch.tensor(count, device=hidden.device)
            if torch.is_grad_enabled():
                # Training: the fused loss never keeps the [M, vocab] logits around.
                loss_sum, correct = linear_cross_entropy(
                    self.mlm.transform(rows), self.mlm.decoder.weight, self.mlm.bias, targets
                )
            else:
                logits = self.mlm(rows)[:count]
                targets = targets[:count]
                out["mlm_logits"] = logits
                loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
                correct = (logits.argmax(-1) == targets).sum()
            out["mlm_loss_sum"], out["mlm_correct"] = loss_sum, correct
        if sop_labels is not None:
            logits = self.sop(self.albert.pool(hidden))
            labels = sop_labels.reshape(-1)
            out["sop_logits"] = logits
            out["sop_loss_sum"] = F.cross_entropy(logits.float(), labels, reduction="sum")
            out["sop_count"] = torch.tensor(labels.numel(), device=hidden.device)
            out["sop_correct"] = (logits.detach().argmax(-1) == labels).sum()
        out.update(attached_terms(self, hidden, mlm_labels, head_inputs))
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values (shared layers and the tied decoder counted once);
        optionally without the word, position and segment tables."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            embeddings = self.albert.embeddings
            tables = (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings)
            total -= sum(table.weight.numel() for table in tables)
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.15) -> float:
        """Training flops (forward + backward) per input token; see docs/models.md.

        As BERT's count: sharing saves weights, not work, so every one of the L
        depths costs a whole layer, ``4H² + 2HI`` multiply-adds per token, plus
        ``12 * L * H * T`` for attention. Add ``E * H`` for the embedding
        projection, ``f * (H*E + V*E)`` for the MLM head on the masked fraction f,
        and ``(H*H + 2*H) / T`` for the pooler and SOP head on [CLS].
        """
        cfg = self.config
        hidden, embedding = cfg.hidden_size, cfg.embedding_size
        layer = 4 * hidden * hidden + 2 * hidden * cfg.intermediate_size
        encoder = cfg.num_layers * layer + embedding * hidden
        attention = 12 * cfg.num_layers * hidden * seq_len
        mlm = mask_fraction * (hidden * embedding + cfg.vocab_size * embedding)
        sentence = (hidden * hidden + 2 * hidden) / seq_len
        return 6.0 * (encoder + mlm + sentence) + attention


# transformers ALBERT key <-> ptm key: per layer (under a layer group's one layer) and global.
_HF_LAYER_KEYS = {
    "attention.out": "attention.dense",
    "attention_norm": "attention.LayerNorm",
    "ffn.up": "ffn",
    "ffn.down": "ffn_output",
    "ffn_norm": "full_layer_layer_norm",
}
_HF_GLOBAL_KEYS = {
    "albert.embeddings.word_embeddings.weight": "albert.embeddings.word_embeddings.weight",
    "albert.embeddings.position_embeddings.weight": "albert.embeddings.position_embeddings.weight",
    "albert.embeddings.token_type_embeddings.weight": "albert.embeddings.token_type_embeddings.weight",
    "albert.embeddings.norm.weight": "albert.embeddings.LayerNorm.weight",
    "albert.embeddings.norm.bias": "albert.embeddings.LayerNorm.bias",
    "albert.embeddings.projection.weight": "albert.encoder.embedding_hidden_mapping_in.weight",
    "albert.embeddings.projection.bias": "albert.encoder.embedding_hidden_mapping_in.bias",
    "albert.pooler.dense.weight": "albert.pooler.weight",
    "albert.pooler.dense.bias": "albert.pooler.bias",
    "mlm.dense.weight": "predictions.dense.weight",
    "mlm.dense.bias": "predictions.dense.bias",
    "mlm.norm.weight": "predictions.LayerNorm.weight",
    "mlm.norm.bias": "predictions.LayerNorm.bias",
    "mlm.decoder.weight": "predictions.decoder.weight",
    "mlm.bias": "predictions.bias",
    "sop.weight": "sop_classifier.classifier.weight",
    "sop.bias": "sop_classifier.classifier.bias",
}
_HF_GROUPS = "albert.encoder.albert_layer_groups"


def _indices(keys: Any, prefix: str) -> list[int]:
    """The sorted integers that follow ``prefix`` in ``keys`` (``layers.{i}.``)."""
    return sorted({int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)})


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers ALBERT state dict (AlbertModel, AlbertForPreTraining ...) to ptm keys.

    Layer group g (whose one layer transformers applies at the depths of that
    group) becomes ``albert.layers.{g}``: one group is full sharing, one per
    depth none. Query, key and value are concatenated into the fused ``qkv``.
    Heads absent from the input are absent from the output; unknown keys are ignored.
    """
    if not any(k.startswith("albert.") for k in hf):
        hf = {f"albert.{k}": v for k, v in hf.items()}
    out = {ours: hf[theirs] for ours, theirs in _HF_GLOBAL_KEYS.items() if theirs in hf}
    for group in _indices(hf, f"{_HF_GROUPS}."):
        src = f"{_HF_GROUPS}.{group}.albert_layers.0."
        dst = f"albert.layers.{group}."
        for kind in ("weight", "bias"):
            parts = [hf[f"{src}attention.{name}.{kind}"] for name in ("query", "key", "value")]
            out[f"{dst}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
            for ours, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{ours}.{kind}"] = hf[f"{src}{theirs}.{kind}"]
    return out


def sharing_of(ours: dict[str, Any]) -> str:
    """What a ptm ALBERT state dict shares, read from which parts its layers hold."""
    layers = _indices(ours, "albert.layers.")
    if len(layers) <= 1:
        return "all"
    attention = f"albert.layers.{layers[1]}.attention.qkv.weight" in ours
    feed_forward = f"albert.layers.{layers[1]}.ffn.up.weight" in ours
    return "none" if attention and feed_forward else "attention" if feed_forward else "ffn"


def check_transformers_sharing(share: str) -> None:
    """transformers' ALBERT shares whole layers in groups: ptm's ``all`` (one group) and ``none``
    (a group per depth) map to it, sharing one sublayer only does not."""
    if share not in ("all", "none"):
        raise PtmError(f"an ALBERT pretrained with --share {share} has no transformers equivalent: transformers' "
                       "ALBERT shares whole layers (--share all) or nothing (--share none)")


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm ALBERT state dict to transformers ``AlbertForPreTraining`` keys.

    ``albert.layers.{g}`` becomes layer group g. The fused ``qkv`` splits into
    query/key/value; the tied decoder weight and the decoder bias (which
    transformers lists as an alias of ``predictions.bias``) are filled in when missing.
    A model sharing a sublayer only is a PtmError.
    """
    check_transformers_sharing(sharing_of(ours))
    out = {theirs: ours[mine] for mine, theirs in _HF_GLOBAL_KEYS.items() if mine in ours}
    if "mlm.bias" in ours:
        out.setdefault("predictions.decoder.weight", ours["albert.embeddings.word_embeddings.weight"])
        out["predictions.decoder.bias"] = ours["mlm.bias"]
    for group in _indices(ours, "albert.layers."):
        src = f"albert.layers.{group}."
        dst = f"{_HF_GROUPS}.{group}.albert_layers.0."
        for kind in ("weight", "bias"):
            query, key, value = ours[f"{src}attention.qkv.{kind}"].chunk(3, dim=0)
            for name, tensor in (("query", query), ("key", key), ("value", value)):
                out[f"{dst}attention.{name}.{kind}"] = tensor.contiguous()
            for mine, theirs in _HF_LAYER_KEYS.items():
                out[f"{dst}{theirs}.{kind}"] = ours[f"{src}{mine}.{kind}"]
    return out


class AlbertFamily(Family):
    """ALBERT: framed as BERT (``[CLS] a [SEP] b [SEP]`` with segment ids); the stack is the projected
    embeddings and the output of each of the L depths, shared layers or not."""

    name, title = "albert", "ALBERT"
    config_class, model_class, presets = AlbertConfig, AlbertForPreTraining, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "albert-mini", "albert-tiny"
    head_parts = {"pooler": "albert.pooler.", "mlm": "mlm.", "sop": "sop."}
    encoder_prefix = "albert."
    bottom_prefixes = ("albert.embeddings.",)  # the E -> H projection included
    sentence_pool = "pooler"
    first_position_is_summary = True
    scorer = "masked"
    task_tokens = (("cls",), ("sep",), ("sep",))

    def head_dropout(self, config: AlbertConfig) -> float:
        return config.classifier_dropout

    def unused_by_features(self, stored_keys: set[str]) -> tuple[str, ...]:
        # The pooler reads [CLS] for SOP and classification, never a layer; AlbertForMaskedLM has none.
        return () if any(k.startswith("albert.pooler.") for k in stored_keys) else ("pooler.",)

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        last, states = model.albert(input_ids, type_ids, attention_mask, output_hidden_states=True)
        return last, list(states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return model.albert(input_ids, type_ids, attention_mask)

    def pool(self, model, tokens):
        return model.albert.pool(tokens)

    def input_embeddings(self, model):
        # The table of width E, before its projection to H: what each token id is on its own.
        return model.albert.embeddings.word_embeddings.weight

    def pooler_trained(self, objective, initialised):
        # Only sentence-order prediction trains the pooler; after MLM alone it was never asked to summarise.
        if "pooler" in (initialised or []):
            return False
        return not objective or "sop" in objective.split("+")

    def framing(self, tokenizer) -> Framing:
        cls, sep = tokenizer.cls_id, tokenizer.sep_id
        if cls is None or sep is None:
            raise PtmError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens, which ALBERT inputs need")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        return Framing((cls,), (sep,), (sep,), 0, 0, True, True, pad)

    def check_tokenizer(self, tokenizer, where):
        for role in ("cls", "sep", "pad", "mask"):
            if getattr(tokenizer, f"{role}_id") is None:
                raise PtmError(f"{where}: tokenizer has no {role} token, which ALBERT pretraining needs "
                               "(train one with --special-tokens bert)")

    def fsdp_units(self, model):
        # A layer applied at several depths stays in the root unit, gathered once per step instead
        # of once per depth; layer 0 holds whatever is shared, the others belong to one depth each.
        encoder = self.encoder(model)
        layers = list(encoder.layers)
        return layers if encoder.config.share == "none" else layers[1:]

    def lm_needs_mask_token(self) -> bool:
        return True

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        # The caller masked the inputs (``mlm_input_ids``/``mlm_labels``), as pretraining does.
        out = model(batch["mlm_input_ids"], batch.get("token_type_ids"), batch["attention_mask"], mlm_labels=batch["mlm_labels"])
        return out["mlm_loss_sum"], out["mlm_count"]


FAMILY = AlbertFamily()
