"""GPT (Radford et al., 2018, 2019): a left-to-right Transformer language model.

Read top to bottom: the config and presets, the decoder trunk, the causal LM with
its fused next-token loss, incremental decoding with a key/value cache, then the
key map to Hugging Face ``GPT2LMHeadModel``.

GPT-2 is the default shape: learned positions, pre-LN blocks, a final LayerNorm,
tanh-approximated GELU, and the output projection tied to the token embeddings
with no bias. ``norm="post"`` gives GPT-1's post-LN blocks (no final LayerNorm).
Attention is causal through ``scaled_dot_product_attention(is_causal=True)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing
from ptmcli.models.generation import PositionBoundDecoder
from ptmcli.models.kv_cache import KVCache
from ptmcli.models.layers import Dropout, PostNormBlock, PreNormBlock, linear_cross_entropy

IGNORE_INDEX = -100


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT decoder; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the token embedding, tied to the output projection)."""
    hidden_size: int
    """Width H of every layer."""
    num_layers: int
    """Number L of Transformer blocks."""
    num_heads: int
    """Attention heads per block; hidden_size must be a multiple of it."""
    intermediate_size: int
    """Inner width of the feed-forward network (4H in the presets)."""
    max_position_embeddings: int = 1024
    """Longest context the learned positions cover."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings and on each residual branch."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm."""
    initializer_range: float = 0.02
    """Std of the normal used to initialise weights (residual projections get it / sqrt(2L))."""
    norm: str = "pre"
    """``pre``: GPT-2 blocks with a final LayerNorm; ``post``: GPT-1 blocks."""
    gelu: str = "tanh"
    """GELU variant: ``tanh`` (GPT-1/2) or ``none`` (exact erf)."""
    pad_token_id: int | None = None
    """Padding id, if the tokenizer has one (GPT-2's does not)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise PtmError(f"gpt config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.norm not in ("pre", "post"):
            raise PtmError(f"gpt config: norm {self.norm!r} must be 'pre' or 'post'")
        if self.gelu not in ("tanh", "none"):
            raise PtmError(f"gpt config: gelu {self.gelu!r} must be 'tanh' or 'none'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"gpt config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise PtmError(f"gpt config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(layers: int, hidden: int, heads: int, **extra: Any) -> dict[str, Any]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    "gpt-tiny": _preset(2, 128, 2),
    "gpt-mini": _preset(4, 256, 4),  # the shape of bert-mini
    "gpt-small": _preset(4, 512, 8),
    "gpt1": _preset(12, 768, 12, norm="post", max_position_embeddings=512),
    "gpt2-124m": _preset(12, 768, 12),
    "gpt2-355m": _preset(24, 1024, 16),
    "gpt2-774m": _preset(36, 1280, 20),
    "gpt2-1.5b": _preset(48, 1600, 25),
}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """The config of a named preset (vocab_size 50257 unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown GPT preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"vocab_size": 50257, **PRESETS[name], **overrides}
    return GPTConfig.from_dict(values)


class GPTModel(nn.Module):
    """The decoder trunk: token + position embeddings, L causal blocks, final LayerNorm (pre-LN)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout)
        block = PreNormBlock if config.norm == "pre" else PostNormBlock
        self.layers = nn.ModuleList(
            block(config.hidden_size, config.num_heads, config.intermediate_size, config.hidden_dropout,
                  config.attention_dropout, config.layer_norm_eps, config.gelu)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm == "pre" else None
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # GPT-2: the projections that write into the residual stream start smaller,
        # so the stream's variance does not grow with depth.
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for layer in self.layers:
            nn.init.normal_(layer.attention.out.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.ffn.down.weight, mean=0.0, std=residual_std)

    def embed(self, input_ids: torch.Tensor, start: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``positions`` (``[B, T]``) replaces ``start``: a left-padded batch numbers each row from its first real token."""
        if positions is not None:
            return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        length = input_ids.shape[1]
        if start + length > self.config.max_position_embeddings:
            raise PtmError(
                f"sequence of {start + length} tokens is longer than the model's "
                f"{self.config.max_position_embeddings} positions"
            )
        return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings.weight[start : start + length])

    def forward(
        self, input_ids: torch.Tensor, output_hidden_states: bool = False, cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``[B, T]`` ids -> the final hidden state ``[B, T, H]``.

        Causal attention needs no padding mask for right-padded batches: a real
        token never attends to the padding after it. With ``output_hidden_states``
        the result is ``(last, all)``, ``all`` being the embedding output and each
        block's output (L + 1 tensors; the last one before the final LayerNorm).

        With a ``cache`` (decoding), ``input_ids`` are the tokens after the ones
        it holds: they take the next positions, see the cached ones, and are
        added to it.
        """
        x = self.embed(input_ids, 0 if cache is None else cache.length, positions)
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, None, True, None if cache is None else cache.layers[i])
            if output_hidden_states:
                states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x, tuple(states)) if output_hidden_states else x


class GPTForCausalLM(nn.Module):
    """GPT with its tied output projection; the training forward returns summed next-token losses."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.gpt = GPTModel(config)

    def tied_weights(self) -> dict[str, str]:
        """No separate output weight exists: the projection reads the token embedding."""
        return {}

    def tie_weights(self) -> None:
        """Nothing to re-tie: the output projection is the embedding parameter itself."""

    @property
    def output_weight(self) -> torch.Tensor:
        return self.gpt.word_embeddings.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states (for generation and scoring a few positions)."""
        return F.linear(hidden, self.output_weight)

    def incremental_decoder(self, context: int | None = None) -> GPTDecoder:
        """This model's decoder for ``models.generation`` (at most ``context`` positions; default all)."""
        return GPTDecoder(self, context)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Summed next-token loss over positions whose label is not -100.

        ``labels[b, t]`` is the token that should follow ``input_ids[b, :t+1]``
        (already shifted by the caller). Keys: ``lm_loss_sum``, ``lm_count``,
        ``lm_correct``; without labels, ``hidden`` only. The ``[N, vocab]`` logits
        exist one bounded chunk at a time (``linear_cross_entropy``).
        """
        hidden = self.gpt(input_ids)
        out = {"hidden": hidden}
        if labels is None:
            return out
        flat_hidden = hidden.reshape(-1, hidden.shape[-1])
        flat_labels = labels.reshape(-1)
        loss_sum, correct = linear_cross_entropy(flat_hidden, self.output_weight, None, flat_labels)
        out.update(lm_loss_sum=loss_sum, lm_count=(flat_labels != IGNORE_INDEX).sum(), lm_correct=correct)
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable values; optionally without the token and position embeddings."""
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.gpt.word_embeddings.weight.numel() + self.gpt.position_embeddings.weight.numel()
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 0.0) -> float:
        """Training flops (forward + backward) per token: ``6 * (N_blocks + V*H) + 12 * L * H * T``.

        N_blocks counts the matrix weights of the blocks; V*H is the output
        projection, run on every position. Attention is counted in full, as in
        the usual MFU convention, although causal kernels can skip half of it.
        ``mask_fraction`` is accepted for a common signature and ignored.
        """
        cfg = self.config
        blocks = sum(m.weight.numel() for m in self.gpt.layers.modules() if isinstance(m, nn.Linear))
        return 6.0 * (blocks + cfg.vocab_size * cfg.hidden_size) + 12 * cfg.num_layers * cfg.hidden_size * seq_len


@dataclass
class GPTDecodingState:
    """Where decoding a batch stands: the cache and the tokens it holds."""

    cache: KVCache
    tokens: torch.Tensor
    """``[B, n]``: what the cache holds, kept so that a full cache can be rebuilt from its recent half."""
    real: torch.Tensor | None = None
    """``[B, n]``: False at the left padding of a padded batch; None when nothing is padded."""
    next_position: torch.Tensor | None = None
    """``[B]``: the position of each row's next token in a padded batch."""


class GPTDecoder(PositionBoundDecoder):
    """Incremental decoding (``models.generation.Decoder``): the prompt once, then a few tokens per step.

    Each call runs the training modules with a ``KVCache``, so a step costs its
    new tokens' work, not the sequence's. When the cache would pass the context,
    the last half of the sequence is encoded again (positions restart from 0)
    and decoding goes on, so a learned position table never runs out.
    """

    padding_side = "left"
    """Prompts of a batch end together, so every row's next token goes in the same column."""

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, GPTDecodingState]:
        """Encode ``[B, T]`` prompts (a longer one keeps its last ``capacity - 1`` tokens); the next-token logits.

        ``attention_mask`` (1 real, 0 padding) marks the left padding of a batch of unequal prompts.
        """
        keep = self.capacity - 1
        real = None if attention_mask is None or bool(attention_mask.all()) else attention_mask[:, -keep:].bool()
        return self._encode(prompt_ids[:, -keep:], real)

    @torch.no_grad()
    def step(self, state: GPTDecodingState, next_ids: torch.Tensor) -> tuple[torch.Tensor, GPTDecodingState]:
        """Feed ``[B, n]`` tokens after the state's; the logits ``[B, vocab]`` after the last, and the state
        to go on from (``state`` itself, updated, or a new one when the cache was rebuilt)."""
        tokens = torch.cat([state.tokens, next_ids], dim=1)
        real = None if state.real is None else torch.cat([state.real, torch.ones_like(next_ids, dtype=torch.bool)], dim=1)
        if state.cache.length + next_ids.shape[1] > self.capacity:
            keep = self.capacity // 2
            return self._encode(tokens[:, -keep:], None if real is None else real[:, -keep:])
        positions = None
        if real is not None:
            positions = state.next_position[:, None] + torch.arange(next_ids.shape[1], device=next_ids.device)
            state.cache.mark(real[:, -next_ids.shape[1]:])
            state.next_position = positions[:, -1] + 1
        logits = self._last_logits(next_ids, state.cache, positions)
        state.tokens, state.real = tokens, real
        return logits, state

    def reorder(self, state: GPTDecodingState, rows: torch.Tensor, same_source: bool = False) -> GPTDecodingState:
        """Row ``rows[i]`` of the state becomes row ``i`` (beam search; repeated rows expand a batch)."""
        state.cache.reorder(rows)
        state.tokens = state.tokens.index_select(0, rows)
        if state.real is not None:
            state.real, state.next_position = state.real.index_select(0, rows), state.next_position.index_select(0, rows)
        return state

    def _encode(self, ids: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, GPTDecodingState]:
        cache = KVCache(len(self.model.gpt.layers), self.capacity)
        if real is None:
            return self._last_logits(ids, cache), GPTDecodingState(cache, ids)
        # Each row counts positions from its first real token; padding reads position 0 (it is never seen).
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)
        cache.mark(real)
        state = GPTDecodingState(cache, ids, real, positions[:, -1] + 1)
        return self._last_logits(ids, cache, positions), state

    def _last_logits(self, ids: torch.Tensor, cache: KVCache, positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.logits(self.model.gpt(ids, cache=cache, positions=positions)[:, -1])


# Hugging Face GPT2LMHeadModel keys. Its Conv1D layers store weights as [in, out]:
# the transpose of nn.Linear's [out, in].
_HF_LAYER_KEYS = {
    "attention_norm": ("ln_1", False),
    "attention.qkv": ("attn.c_attn", True),
    "attention.out": ("attn.c_proj", True),
    "ffn_norm": ("ln_2", False),
    "ffn.up": ("mlp.c_fc", True),
    "ffn.down": ("mlp.c_proj", True),
}
_HF_GLOBAL_KEYS = {
    "gpt.word_embeddings.weight": "transformer.wte.weight",
    "gpt.position_embeddings.weight": "transformer.wpe.weight",
    "gpt.final_norm.weight": "transformer.ln_f.weight",
    "gpt.final_norm.bias": "transformer.ln_f.bias",
}


def _num_layers(keys: Any, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers GPT-2 state dict (``GPT2Model`` or ``GPT2LMHeadModel``) to ptm keys.

    Conv1D weights are transposed; ``lm_head.weight`` (tied) and the causal-mask
    buffers some files carry (``attn.bias``, ``attn.masked_bias``) are dropped.
    """
    if not any(k.startswith("transformer.") for k in hf):
        hf = {f"transformer.{k}": v for k, v in hf.items()}
    out = {ours: hf[theirs] for ours, theirs in _HF_GLOBAL_KEYS.items() if theirs in hf}
    for i in range(_num_layers(hf, "transformer.h.")):
        for ours, (theirs, conv) in _HF_LAYER_KEYS.items():
            for kind in ("weight", "bias"):
                tensor = hf[f"transformer.h.{i}.{theirs}.{kind}"]
                out[f"gpt.layers.{i}.{ours}.{kind}"] = tensor.t().contiguous() if conv and kind == "weight" else tensor
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ptm GPT state dict to transformers ``GPT2LMHeadModel`` keys (``lm_head.weight`` = wte)."""
    out = {theirs: ours[mine] for mine, theirs in _HF_GLOBAL_KEYS.items() if mine in ours}
    out["lm_head.weight"] = ours["gpt.word_embeddings.weight"]
    for i in range(_num_layers(ours, "gpt.layers.")):
        for mine, (theirs, conv) in _HF_LAYER_KEYS.items():
            for kind in ("weight", "bias"):
                tensor = ours[f"gpt.layers.{i}.{mine}.{kind}"]
                out[f"transformer.h.{i}.{theirs}.{kind}"] = tensor.t().contiguous() if conv and kind == "weight" else tensor
    return out


class GPTFamily(Family):
    """GPT: the end-of-text token, then the text (``a <end> b`` for a pair); the leading token is context only."""

    name, title = "gpt", "GPT"
    config_class, model_class, presets = GPTConfig, GPTForCausalLM, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "gpt-mini", "gpt-tiny"
    encoder_prefix = "gpt."
    bottom_prefixes = ("gpt.word_embeddings.", "gpt.position_embeddings.")
    sentence_pool = "last"  # the paper's "extract" position
    scorer = "causal"
    task_tokens = (("bos", "cls"), ("sep", "eos"), ("eos", "sep"))
    min_context = 1
    generates = True

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        # Causal attention: right padding never reaches a real token, so no mask is needed. The top entry
        # is after the final LayerNorm (Hugging Face's hidden_states[-1]) unless a mix learned on the
        # block's own output asks for that (``normed_top`` False).
        last, states = model.gpt(input_ids, output_hidden_states=True)
        return last, [*states[:-1], last] if normed_top else list(states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return model.gpt(input_ids)

    def input_embeddings(self, model):
        return model.gpt.word_embeddings.weight

    def framing(self, tokenizer) -> Framing:
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        end = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
        if end is None:
            return Framing((), (), (), 0, 0, False, False, pad)
        return Framing((end,), (end,), (), 1, 0, False, True, pad)

    def check_tokenizer(self, tokenizer, where):
        if tokenizer.eos_id is None and tokenizer.sep_id is None:
            raise PtmError(f"{where}: tokenizer has neither an end-of-text nor a [SEP] token to put between documents")

    def lm_loss(self, model, batch, last_hidden, mask_id, generator):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = last_hidden[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss, _ = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), model.output_weight, None, targets.reshape(-1))
        return loss, (targets != -100).sum()


FAMILY = GPTFamily()
