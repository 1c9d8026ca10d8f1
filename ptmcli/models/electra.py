"""ELECTRA (Clark et al., 2020): a small MLM generator fills masked positions, a discriminator says which
tokens were replaced.

Read top to bottom: the config and presets, the two encoders, the heads, the pretraining model and its
loss, the task models, the key map to transformers' ELECTRA weights, and the family.

The token, position and segment tables and their LayerNorm (width E, ``electra.embeddings.*``) belong to
the discriminator and are read by the generator too; each network projects them to its own width when
E differs from it. The generator's vocabulary projection is the word table itself. The generator's shape
follows the discriminator's as the reference sizes it: hidden ``round(H x generator_size)``, feed-forward
four times that, one attention head per 64 dimensions, the same depth.

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
from ptmcli.models.bert import BertConfig, BertEmbeddings, BertFamily, _masked_rows
from ptmcli.models.framing import Framing
from ptmcli.models.layers import PostNormBlock, init_bert_weights, padding_attention_mask


@dataclass(frozen=True)
class ElectraConfig:
    """Hyper-parameters of an ELECTRA discriminator and its generator; the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the word embedding and of the generator's decoder)."""
    embedding_size: int
    """Width E of the shared token, position and segment embeddings."""
    hidden_size: int
    """Width H of the discriminator's layers."""
    num_layers: int
    """Depth L of both networks."""
    num_heads: int
    """The discriminator's attention heads; hidden_size must be a multiple of it."""
    intermediate_size: int
    """The discriminator's feed-forward width (4H in the presets)."""
    generator_size: float = 0.25
    """The generator's hidden width as a fraction of H, in (0, 1] (the paper: 1/4 to 1/2 works best)."""
    max_position_embeddings: int = 512
    """Longest sequence the learned position embeddings cover."""
    type_vocab_size: int = 2
    """Number of segment (token type) ids."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings and on each residual branch."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every LayerNorm."""
    initializer_range: float = 0.02
    """Std of the truncated normal used to initialise weights."""
    pad_token_id: int = 0
    """Id of the padding token."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise PtmError(f"electra config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if not 0.0 < self.generator_size <= 1.0:
            raise PtmError(f"--generator-size {self.generator_size}: must be in (0, 1] (a fraction of the discriminator's "
                           "hidden size; 0.25 is the paper's choice)")
        if self.generator_hidden_size < 1:
            raise PtmError(f"--generator-size {self.generator_size}: leaves the generator no hidden units at hidden size "
                           f"{self.hidden_size}")

    @property
    def generator_hidden_size(self) -> int:
        return int(round(self.hidden_size * self.generator_size))

    @property
    def generator_heads(self) -> int:
        # One head per 64 dimensions, as the reference sizes its generator.
        return max(1, self.generator_hidden_size // 64)

    @property
    def generator_intermediate_size(self) -> int:
        return 4 * self.generator_hidden_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ElectraConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"electra config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise PtmError(f"electra config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(embedding: int, layers: int, hidden: int, heads: int, generator: float = 0.25) -> dict[str, Any]:
    return {"embedding_size": embedding, "num_layers": layers, "hidden_size": hidden, "num_heads": heads,
            "intermediate_size": 4 * hidden, "generator_size": generator}


PRESETS: dict[str, dict[str, Any]] = {
    "electra-tiny": _preset(64, 2, 128, 2),
    "electra-mini": _preset(128, 4, 256, 4),
    "electra-small": _preset(128, 12, 256, 4),
    # The paper's Base generator is a third of the discriminator (google/electra-base-generator: 256 wide).
    "electra-base": _preset(768, 12, 768, 12, 1 / 3),
}


def preset_config(name: str, **overrides: Any) -> ElectraConfig:
    """The config of a named preset (vocab_size 30522 unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown ELECTRA preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 30522, **PRESETS[name], **overrides}
    return ElectraConfig.from_dict(values)


def _embedding_config(config: ElectraConfig) -> BertConfig:
    """BERT's embedding tables at width E."""
    return BertConfig(vocab_size=config.vocab_size, hidden_size=config.embedding_size, num_layers=0, num_heads=1,
                      intermediate_size=0, max_position_embeddings=config.max_position_embeddings,
                      type_vocab_size=config.type_vocab_size, hidden_dropout=config.hidden_dropout,
                      layer_norm_eps=config.layer_norm_eps)


class _Stack(nn.Module):
    """The E -> width projection (absent when they are equal) and L post-LN blocks of one network."""

    def __init__(self, config: ElectraConfig, width: int, heads: int, intermediate: int):
        super().__init__()
        self.projection = nn.Linear(config.embedding_size, width) if config.embedding_size != width else None
        self.layers = nn.ModuleList(
            PostNormBlock(width, heads, intermediate, config.hidden_dropout, config.attention_dropout, config.layer_norm_eps)
            for _ in range(config.num_layers)
        )

    def run(self, embedded: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool):
        x = self.projection(embedded) if self.projection is not None else embedded
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            if output_hidden_states:
                states.append(x)
        return (x, tuple(states)) if output_hidden_states else x


class ElectraModel(_Stack):
    """The discriminator: the shared embeddings, its projection and blocks, and the [CLS] head's dense layer.

    ``pooler`` is the dense + GELU that transformers' ELECTRA sequence classifier applies to [CLS] before
    its output layer; pretraining never trains it.
    """

    def __init__(self, config: ElectraConfig):
        super().__init__(config, config.hidden_size, config.num_heads, config.intermediate_size)
        self.config = config
        self.embeddings = BertEmbeddings(_embedding_config(config))
        self.pooler = nn.ModuleDict({"dense": nn.Linear(config.hidden_size, config.hidden_size)})
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False):
        """``[B, T, H]``; with ``output_hidden_states``, ``(last, the projected embeddings and each block's output)``."""
        return self.run(self.embeddings(input_ids, token_type_ids), padding_attention_mask(attention_mask),
                        output_hidden_states)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """dense + GELU on the [CLS] (first) position, as ELECTRA's classification head."""
        return F.gelu(self.pooler["dense"](hidden[:, 0]))


class ElectraGenerator(_Stack):
    """The generator: its projection and blocks over the discriminator's embeddings, and the MLM head
    (dense to E, GELU, LayerNorm, then the word table as decoder plus its own bias)."""

    def __init__(self, config: ElectraConfig, word_embeddings: nn.Embedding):
        width = config.generator_hidden_size
        super().__init__(config, width, config.generator_heads, config.generator_intermediate_size)
        self.dense = nn.Linear(width, config.embedding_size)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        for module in (*self.layers, self.dense, self.norm, *([self.projection] if self.projection is not None else [])):
            module.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), self.decoder.weight, self.bias)


class DiscriminatorHead(nn.Module):
    """dense + GELU + one logit per token: > 0 says "replaced"."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction(F.gelu(self.dense(hidden))).squeeze(-1)


def sample_rows(logits: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    """One token per row of ``[M, V]`` logits, drawn from their softmax by inverting its CDF at ``uniforms``
    (``[M]`` in [0, 1)): the caller's keyed draws make the sample reproducible anywhere; None draws here."""
    probs = logits.detach().float().softmax(-1)
    cdf = probs.cumsum(-1)
    if uniforms is None:
        uniforms = torch.rand(logits.shape[0], device=logits.device)
    targets = uniforms.to(cdf.dtype).unsqueeze(1) * cdf[:, -1:]
    return torch.searchsorted(cdf, targets).squeeze(1).clamp_(max=logits.shape[-1] - 1)


class ElectraForPreTraining(nn.Module):
    """Generator + discriminator with shared embeddings; returns summed losses and counts."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.config = config
        self.electra = ElectraModel(config)
        self.generator = ElectraGenerator(config, self.electra.embeddings.word_embeddings)
        self.rtd = DiscriminatorHead(config)
        self.rtd.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def tied_weights(self) -> dict[str, str]:
        """State-dict keys that alias another key: store the target once, re-tie on load."""
        return {"generator.decoder.weight": "electra.embeddings.word_embeddings.weight"}

    def tie_weights(self) -> None:
        self.generator.decoder.weight = self.electra.embeddings.word_embeddings.weight

    def generator_hidden(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False):
        """The generator's last layer (and, asked, its L + 1 states) over the shared embeddings."""
        embedded = self.electra.embeddings(input_ids, token_type_ids)
        return self.generator.run(embedded, padding_attention_mask(attention_mask), output_hidden_states)

    def generator_terms(self, input_ids, token_type_ids, attention_mask, mlm_labels):
        """(``mlm_loss_sum``/``mlm_count``/``mlm_correct``, the flat masked positions, their count, the generator's
        logits there): the generator's MLM on the rows ``mlm_labels`` marks (zeros when it is None)."""
        zero = torch.zeros((), dtype=torch.long, device=input_ids.device)
        out: dict[str, torch.Tensor] = {"mlm_loss_sum": torch.zeros((), device=input_ids.device), "mlm_count": zero,
                                        "mlm_correct": zero}
        if mlm_labels is None:
            return out, None, 0, None
        positions, targets, count = _masked_rows(mlm_labels)
        hidden = self.generator_hidden(input_ids, token_type_ids, attention_mask)
        rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
        logits = self.generator.logits(rows)
        out["mlm_loss_sum"] = F.cross_entropy(logits.float(), targets, reduction="sum")
        out["mlm_count"] = torch.tensor(count, device=input_ids.device)
        out["mlm_correct"] = (logits[:count].detach().argmax(-1) == targets[:count]).sum()
        return out, positions, count, logits

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        sample_uniforms: torch.Tensor | None = None,
        replacements: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Summed losses and counts, so a loop can normalise over accumulated micro-batches.

        ``input_ids`` hold [MASK] where ``mlm_labels`` is not -100. The generator predicts those positions
        (``mlm_loss_sum``, ``mlm_count``, ``mlm_correct``); a token drawn from its softmax at each
        (``sample_uniforms`` ``[B, T]``, or given as ``replacements`` ``[M]`` in row-major order) takes its
        place, without gradient; the discriminator labels every non-padding token replaced or original (a
        draw equal to the original is original): ``disc_loss_sum`` (binary cross-entropy), ``disc_count``,
        ``disc_correct``, ``disc_correct_replaced`` (of those, the replaced tokens called replaced),
        ``replaced_count``; ``disc_logits`` ``[B, T]`` too.
        """
        out, positions, count, logits = self.generator_terms(input_ids, token_type_ids, attention_mask, mlm_labels)
        corrupted = input_ids
        if mlm_labels is not None:
            if replacements is None:
                uniforms = None if sample_uniforms is None else sample_uniforms.reshape(-1)[positions[:count]]
                replacements = sample_rows(logits[:count], uniforms)
            flat = input_ids.reshape(-1).clone()
            flat[positions[:count]] = replacements.to(flat.dtype)
            corrupted = flat.view_as(input_ids)
            original = torch.where(mlm_labels != -100, mlm_labels, input_ids)
        else:
            original = input_ids
        replaced = (corrupted != original).float()
        disc = self.rtd(self.electra(corrupted, token_type_ids, attention_mask))
        real = attention_mask.float() if attention_mask is not None else torch.ones_like(replaced)
        losses = F.binary_cross_entropy_with_logits(disc.float(), replaced, reduction="none")
        out["disc_logits"] = disc
        out["disc_loss_sum"] = (losses * real).sum()
        out["disc_count"] = real.sum().long()
        said_replaced = (disc.detach() > 0).float()
        out["disc_correct"] = ((said_replaced == replaced).float() * real).sum().long()
        out["disc_correct_replaced"] = (said_replaced * replaced * real).sum().long()
        out["replaced_count"] = (replaced * real).sum().long()
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values of both networks (shared tables and the tied decoder once)."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= sum(p.numel() for p in self.electra.embeddings.parameters() if p.dim() == 2)
        return total

    def flops_per_token(self, seq_len: int, predicted_fraction: float = 1.0, masked_fraction: float = 0.15) -> float:
        """Training flops (forward + backward) per input token of both networks; see docs/models.md.

        Each network: ``6 * N + 12 * L * W * T`` (N its projection and block matrices, W its width). Plus
        the discriminator head (``H*H + H``) on the ``predicted_fraction`` of tokens (all of them) and the
        generator head (``Wg*E + V*E``) on the masked fraction. Lookups, norms and softmax are not counted.
        """
        cfg = self.config
        total = 0.0
        for stack, width in ((self.electra, cfg.hidden_size), (self.generator, cfg.generator_hidden_size)):
            matrices = sum(m.weight.numel() for m in stack.layers.modules() if isinstance(m, nn.Linear))
            if stack.projection is not None:
                matrices += stack.projection.weight.numel()
            total += 6.0 * matrices + 12 * cfg.num_layers * width * seq_len
        disc_head = predicted_fraction * (cfg.hidden_size * cfg.hidden_size + cfg.hidden_size)
        gen_head = masked_fraction * (cfg.generator_hidden_size + cfg.vocab_size) * cfg.embedding_size
        return total + 6.0 * (disc_head + gen_head)


def replaced_token_loss(out: dict[str, torch.Tensor], mlm_total, disc_total, disc_weight: float) -> torch.Tensor:
    """``mlm_loss_sum / mlm_total + disc_weight * disc_loss_sum / disc_total``: the totals are counted over the
    whole optimizer step, so accumulation equals one big batch."""
    loss = out["mlm_loss_sum"] / max(1.0, float(mlm_total))
    return loss + disc_weight * out["disc_loss_sum"] / max(1.0, float(disc_total))


# transformers ELECTRA keys: the encoder's as BERT's under "electra." (the projection "embeddings_project");
# the heads by name.
_HF_BLOCK_KEYS = {
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "ffn.up": "intermediate.dense",
    "ffn.down": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_HF_EMBEDDING_KEYS = {
    "word_embeddings.weight": "word_embeddings.weight",
    "position_embeddings.weight": "position_embeddings.weight",
    "token_type_embeddings.weight": "token_type_embeddings.weight",
    "norm.weight": "LayerNorm.weight",
    "norm.bias": "LayerNorm.bias",
}
HF_DISCRIMINATOR_HEAD = {
    "rtd.dense.weight": "discriminator_predictions.dense.weight",
    "rtd.dense.bias": "discriminator_predictions.dense.bias",
    "rtd.prediction.weight": "discriminator_predictions.dense_prediction.weight",
    "rtd.prediction.bias": "discriminator_predictions.dense_prediction.bias",
}
HF_GENERATOR_HEAD = {
    "generator.dense.weight": "generator_predictions.dense.weight",
    "generator.dense.bias": "generator_predictions.dense.bias",
    "generator.norm.weight": "generator_predictions.LayerNorm.weight",
    "generator.norm.bias": "generator_predictions.LayerNorm.bias",
    "generator.bias": "generator_lm_head.bias",
}


def _layer_count(keys, prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def encoder_from_hf(hf: dict[str, torch.Tensor], ours: str) -> dict[str, torch.Tensor]:
    """A transformers ``electra.*`` encoder (keys with that prefix) as ptm's, under ``ours`` (``"electra."`` for
    the discriminator, ``"generator."`` for the generator, whose embeddings become the shared ones)."""
    out = {f"electra.embeddings.{mine}": hf[f"electra.embeddings.{theirs}"]
           for mine, theirs in _HF_EMBEDDING_KEYS.items() if f"electra.embeddings.{theirs}" in hf}
    for kind in ("weight", "bias"):
        if f"electra.embeddings_project.{kind}" in hf:
            out[f"{ours}projection.{kind}"] = hf[f"electra.embeddings_project.{kind}"]
    for i in range(_layer_count(hf, "electra.encoder.layer.")):
        src, dst = f"electra.encoder.layer.{i}.", f"{ours}layers.{i}."
        for kind in ("weight", "bias"):
            parts = [hf[f"{src}attention.self.{name}.{kind}"] for name in ("query", "key", "value")]
            out[f"{dst}attention.qkv.{kind}"] = torch.cat(parts, dim=0)
            for mine, theirs in _HF_BLOCK_KEYS.items():
                out[f"{dst}{mine}.{kind}"] = hf[f"{src}{theirs}.{kind}"]
    return out


def encoder_to_hf(state: dict[str, torch.Tensor], ours: str) -> dict[str, torch.Tensor]:
    """The network under ``ours`` (with the shared embeddings) as a transformers ``electra.*`` encoder."""
    out = {f"electra.embeddings.{theirs}": state[f"electra.embeddings.{mine}"]
           for mine, theirs in _HF_EMBEDDING_KEYS.items() if f"electra.embeddings.{mine}" in state}
    for kind in ("weight", "bias"):
        if f"{ours}projection.{kind}" in state:
            out[f"electra.embeddings_project.{kind}"] = state[f"{ours}projection.{kind}"]
    for i in range(_layer_count(state, f"{ours}layers.")):
        src, dst = f"{ours}layers.{i}.", f"electra.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            query, key, value = state[f"{src}attention.qkv.{kind}"].chunk(3, dim=0)
            for name, tensor in (("query", query), ("key", key), ("value", value)):
                out[f"{dst}attention.self.{name}.{kind}"] = tensor.contiguous()
            for mine, theirs in _HF_BLOCK_KEYS.items():
                out[f"{dst}{theirs}.{kind}"] = state[f"{src}{mine}.{kind}"]
    return out


class GeneratorMaskedLM(nn.Module):
    """The generator of an :class:`ElectraForPreTraining` on its own, as a masked LM: ``forward`` returns the
    MLM sums a BERT model returns and ``mlm`` projects hidden rows to the vocabulary (``ptm eval --part
    generator``: MLM accuracy, pseudo-perplexity). It shares the model's parameters."""

    def __init__(self, model: ElectraForPreTraining):
        super().__init__()
        self.model = model

    def hidden(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states=False):
        return self.model.generator_hidden(input_ids, token_type_ids, attention_mask, output_hidden_states)

    def mlm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.generator.logits(hidden)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mlm_labels=None) -> dict[str, torch.Tensor]:
        return self.model.generator_terms(input_ids, token_type_ids, attention_mask, mlm_labels)[0]


class ElectraFamily(BertFamily):
    """ELECTRA: the discriminator is the encoder that finetuning, features and eval read; framed as BERT.

    A sentence task reads [CLS] through dense + GELU (``electra.pooler``), learned on the task as in
    ELECTRA's finetuning recipe. ``ptm eval`` has no text scorer for the discriminator, which is no language
    model; ``--part generator`` scores text with the generator, a masked LM.
    """

    budget_recipe: dict = {}  # no --norm/--bias switches; its recipe is not measured
    name, title = "electra", "ELECTRA"
    config_class, model_class, presets = ElectraConfig, ElectraForPreTraining, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "electra-mini", "electra-tiny"
    head_parts = {"pooler": "electra.pooler.", "generator": "generator.", "rtd": "rtd."}
    prefix_lm = False  # the discriminator has no masked-LM head
    encoder_prefix = "electra."
    bottom_prefixes = ("electra.embeddings.", "electra.projection.")
    scorer = None
    parts = ("discriminator", "generator")

    def unused_by_features(self, stored_keys: set[str]) -> tuple[str, ...]:
        return ("pooler.",)

    def part(self, model, name):
        if name != "generator":
            return super().part(model, name)
        return GeneratorMaskedLM(model).eval(), GENERATOR_FAMILY

    def pooler_trained(self, objective, initialised):
        return True

    def framing(self, tokenizer) -> Framing:
        if tokenizer.cls_id is None or tokenizer.sep_id is None:
            raise PtmError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens, which ELECTRA inputs need")
        return super().framing(tokenizer)

    def check_tokenizer(self, tokenizer, where):
        for role in ("cls", "sep", "pad", "mask"):
            if getattr(tokenizer, f"{role}_id") is None:
                raise PtmError(f"{where}: tokenizer has no {role} token, which ELECTRA pretraining needs "
                               "(train one with --special-tokens bert)")

    def fsdp_units(self, model):
        return [*model.electra.layers, *model.generator.layers]

    def lm_needs_mask_token(self) -> bool:
        return False

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        raise PtmError("ELECTRA's discriminator is no language model: finetune it without an auxiliary LM loss")


class GeneratorFamily(ElectraFamily):
    """What ``ptm eval`` and ``ptm extract-features`` ask of a :class:`GeneratorMaskedLM`: a masked LM whose
    stack is the generator's (its projected embeddings, then each block's output), at the generator's width."""

    scorer = "masked"
    parts = ()

    def feature_size(self, config):
        return config.generator_hidden_size

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        last, states = model.hidden(input_ids, type_ids, attention_mask, output_hidden_states=True)
        return last, list(states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return model.hidden(input_ids, type_ids, attention_mask)


FAMILY = ElectraFamily()
GENERATOR_FAMILY = GeneratorFamily()
