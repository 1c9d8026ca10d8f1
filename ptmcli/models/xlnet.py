"""XLNet (Yang et al., 2019): permutation language modelling over a Transformer-XL encoder.

Read top to bottom: the config and presets, relative attention with its two
streams, the encoder (memory and masks), the permutation LM with its tied
head, then the family.

Every block is post-LN: relative multi-head attention, then a GELU
feed-forward network, each added to its input and normalised. Attention
scores are the sum of three terms (Transformer-XL and XLNet):

- content: ``(q_i + r_w_bias) . k_j``;
- position: ``(q_i + r_r_bias) . R(i - j)``, ``R`` a sinusoidal encoding of the
  signed distance, projected per layer;
- segment: ``(q_i + r_s_bias) . s``, ``s`` one of two learned vectors that say
  whether ``i`` and ``j`` share a segment (relative segment encoding).

Two streams share every weight. The *content* stream ``h`` is the usual
encoder: position ``i`` reads what the mask allows and always itself. The
*query* stream ``g`` starts from one learned vector (``mask_emb``) at each
target: it reads the content stream where the mask allows, but never position
``i``'s own content, so it can predict the token there. A factorisation order is
given as masks over the natural order, as Hugging Face takes them:
``perm_mask[b, i, j] = 1`` when ``i`` may not attend to ``j``, and
``target_mapping[b, p, t] = 1`` when prediction ``p`` is at position ``t``.

Memory (segment recurrence): ``return_mems`` gives each layer's input, the last
``mem_len`` positions of it, which a following call takes as ``mems``; its
queries then also read those states (never masked), at distances counted
across the boundary. Gradients never flow into memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.framing import Framing
from ptmcli.models.layers import Dropout, linear_cross_entropy

IGNORE_INDEX = -100
SEG_CLS = 2  # <cls>'s segment: neither text's, so relative segment encoding sees it apart from both
# Subtracted from masked scores rather than -inf: a query-stream row that may read nothing (the first
# token of an order, without memory) then averages every value instead of turning into NaN, as the
# reference implementation does.
_MASKED = 1e30


@dataclass(frozen=True)
class XLNetConfig:
    """Hyper-parameters of an XLNet encoder; serialised as the ``model`` object of config.json."""

    vocab_size: int
    """Number of token ids (rows of the word embedding, tied to the LM head)."""
    hidden_size: int
    """Width D of every layer."""
    num_layers: int
    """Number L of blocks."""
    num_heads: int
    """Attention heads per block; hidden_size must be a multiple of it."""
    intermediate_size: int
    """Inner width of the feed-forward network (4D in the presets)."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings, the relative encodings, each residual branch and the output."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    mem_len: int | None = None
    """Positions of each layer's input kept as memory for the next segment; None keeps them all."""
    clamp_len: int = -1
    """Relative distances beyond this are encoded as this distance; -1: never clamped."""
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise PtmError(f"xlnet config: hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.mem_len is not None and self.mem_len < 0:
            raise PtmError(f"--mem-len {self.mem_len}: the memory length must be 0 or more")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> XLNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PtmError(f"xlnet config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise PtmError(f"xlnet config: missing keys {', '.join(missing)}")
        return cls(**values)


def _preset(layers: int, hidden: int, heads: int, **extra: Any) -> dict[str, Any]:
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads, "intermediate_size": 4 * hidden, **extra}


PRESETS: dict[str, dict[str, Any]] = {
    "xlnet-tiny": _preset(2, 128, 2),
    "xlnet-mini": _preset(4, 256, 4),
    "xlnet-base": _preset(12, 768, 12),  # xlnet-base-cased: 32,000 sentencepiece ids, about 117M parameters
}


def preset_config(name: str, **overrides: Any) -> XLNetConfig:
    """The config of a named preset (vocab_size 32000 unless overridden), with fields replaced."""
    if name not in PRESETS:
        raise PtmError(f"unknown XLNet preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return XLNetConfig.from_dict({"vocab_size": 32000, **PRESETS[name], **overrides})


def additive_mask(blocked: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, Q, K]`` True where a query may not attend -> ``[B, 1, Q, K]`` fp32 to add to the scores: ``-1e30``
    there, 0 elsewhere (``scores + (-m)`` equals the reference's ``scores - m`` bit for bit)."""
    return None if blocked is None else (blocked.float() * -_MASKED)[:, None]


def relative_encodings(query_len: int, key_len: int, width: int, clamp_len: int, device, dtype) -> torch.Tensor:
    """``[key_len + query_len, width]`` sinusoids of the distances ``key_len, key_len - 1, ..., -query_len + 1``.

    Query ``i`` (the ``i``-th new position) and key ``j`` (memory first) are ``mlen + i - j`` apart, which is
    row ``query_len - i + j`` of this table (see :func:`_by_distance`).
    """
    distances = torch.arange(key_len, -query_len, -1, device=device, dtype=torch.int64).float()
    if clamp_len > 0:
        distances = distances.clamp(-clamp_len, clamp_len)
    inv_freq = 1.0 / torch.pow(10000, torch.arange(0, width, 2, device=device, dtype=torch.int64).float() / width)
    angles = distances[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


def _by_distance(scores: torch.Tensor, key_len: int, query_positions: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, N, Q, key_len]`` from ``[B, N, Q, P]`` scores against each row of the distance table.

    The table covers ``P - key_len`` query positions; query ``q`` sits at position ``q``, or at
    ``query_positions[b, q]`` (``[B, Q]``) when only some positions ask.
    """
    table_queries = scores.shape[3] - key_len
    keys = torch.arange(key_len, device=scores.device)
    if query_positions is None:
        rows = torch.arange(scores.shape[2], device=scores.device)
        index = (table_queries - rows[:, None] + keys[None, :]).expand(*scores.shape[:2], -1, -1)
    else:
        index = (table_queries - query_positions[:, None, :, None] + keys).expand(-1, scores.shape[1], -1, -1)
    return scores.gather(3, index)


class QueryRows(NamedTuple):
    """Where the query stream's rows sit, when each is one target position of its own (ptm's sampler always
    gives such orders): attention then runs for those P rows alone instead of all T positions."""

    positions: torch.Tensor
    """``[B, P]``: each row's position (0 for an empty row)."""
    real: torch.Tensor
    """``[B, P, 1, 1]``: 1 for a row with a target, 0 for padding (whose attention output is 0, as with the mapping)."""


def query_rows(target_mapping: torch.Tensor) -> QueryRows | None:
    """The rows of a mapping that is one-hot per row on distinct positions, else None (the general path)."""
    exact = ((target_mapping == 0) | (target_mapping == 1)).all()
    if not bool(exact & (target_mapping.sum(2) <= 1).all() & (target_mapping.sum(1) <= 1).all()):
        return None
    real = target_mapping.sum(2) > 0
    return QueryRows(target_mapping.argmax(2), real[:, :, None, None])


class QueryLayout(NamedTuple):
    """What the query stream's attention reads, made once per forward for every layer."""

    mask: torch.Tensor | None
    """Additive ``[B, 1, R, K]`` (:func:`additive_mask`) for its R query rows."""
    other_segment: torch.Tensor | None
    """``[B, R, K]``, True where query row and key lie in different segments."""
    rows: QueryRows | None
    """With one position per prediction: R = P, the rows themselves."""
    mapping: torch.Tensor | None
    """Otherwise: ``target_mapping`` (R = T), which places each prediction on the sequence and reads it back."""


def query_layout(target_mapping: torch.Tensor, blocked: torch.Tensor | None, other_segment: torch.Tensor | None,
                 dtype: torch.dtype) -> QueryLayout:
    """The query stream's layout: its targets' rows of the masks when :func:`query_rows` finds them, else the
    full masks and the mapping."""
    rows = query_rows(target_mapping)
    if rows is None:
        return QueryLayout(additive_mask(blocked), other_segment, None, target_mapping.to(dtype))
    pick = rows.positions[:, :, None]
    if blocked is not None:
        blocked = blocked.gather(1, pick.expand(-1, -1, blocked.shape[2]))
    if other_segment is not None:
        other_segment = other_segment.gather(1, pick.expand(-1, -1, other_segment.shape[2]))
    return QueryLayout(additive_mask(blocked), other_segment, rows, None)


class RelativeAttention(nn.Module):
    """Relative multi-head attention with Transformer-XL's biases and XLNet's segment term; both streams."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        d, n, s = config.hidden_size, config.num_heads, config.head_size
        self.num_heads, self.head_size = n, s
        self.query = nn.Linear(d, n * s, bias=False)
        self.key = nn.Linear(d, n * s, bias=False)
        self.value = nn.Linear(d, n * s, bias=False)
        self.position = nn.Linear(d, n * s, bias=False)
        self.out = nn.Linear(n * s, d, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(n, s))
        self.r_r_bias = nn.Parameter(torch.zeros(n, s))
        self.r_s_bias = nn.Parameter(torch.zeros(n, s))
        self.seg_embed = nn.Parameter(torch.zeros(2, n, s))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.attention_dropout = Dropout(config.attention_dropout)

    def _heads(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return linear(x).unflatten(-1, (self.num_heads, self.head_size))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pos: torch.Tensor,
                other_segment: torch.Tensor | None, mask: torch.Tensor | None,
                query_positions: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, Q, N, S]`` queries over ``[B, K, N, S]`` keys and values -> ``[B, Q, N, S]``.

        ``k_pos`` ``[P, N, S]``: the projected distance table; ``other_segment`` ``[B, Q, K]`` (True where the
        two positions lie in different segments); ``mask`` ``[B, 1, Q, K]``: added to the fp32 scores (``-1e30``
        where a query may not attend, else 0; :func:`additive_mask`); ``query_positions`` ``[B, Q]``: where
        each query sits, when not at positions ``0..Q-1``.
        """
        content = torch.einsum("bind,bjnd->bnij", q + self.r_w_bias, k)
        position = _by_distance(torch.einsum("bind,jnd->bnij", q + self.r_r_bias, k_pos), k.shape[1], query_positions)
        scores = content + position
        if other_segment is not None:
            per_segment = torch.einsum("bind,snd->bnis", q + self.r_s_bias, self.seg_embed)
            same, other = per_segment[..., 0:1], per_segment[..., 1:2]
            scores = scores + torch.where(other_segment[:, None], other, same)
        scores = scores.float() * self.head_size**-0.5
        if mask is not None:
            scores = scores + mask
        probs = self.attention_dropout(scores.softmax(dim=-1).to(v.dtype))
        return torch.einsum("bnij,bjnd->bind", probs, v)

    def _output(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.out(attended.flatten(-2))))

    def forward(self, h: torch.Tensor, g: torch.Tensor | None, memory: torch.Tensor | None, k_pos_input: torch.Tensor,
                other_segment: torch.Tensor | None, mask_h: torch.Tensor | None,
                query: QueryLayout | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        context = h if memory is None else torch.cat([memory, h], dim=1)
        k, v = self._heads(self.key, context), self._heads(self.value, context)
        k_pos = self._heads(self.position, k_pos_input)
        out_h = self._output(h, self._attend(self._heads(self.query, h), k, v, k_pos, other_segment, mask_h))
        if g is None:
            return out_h, None
        q_g = self._heads(self.query, g)
        if query.rows is not None:
            attended = self._attend(q_g, k, v, k_pos, query.other_segment, query.mask, query.rows.positions)
            attended = attended * query.rows.real
        else:
            # Each prediction's query is placed at its target's position, attends from there, and is read back.
            q_g = torch.einsum("bpnd,bpt->btnd", q_g, query.mapping)
            attended = self._attend(q_g, k, v, k_pos, query.other_segment, query.mask)
            attended = torch.einsum("btnd,bpt->bpnd", attended, query.mapping)
        return out_h, self._output(g, attended)


class FeedForward(nn.Module):
    """up, GELU, down, added to the input and normalised (post-LN)."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.down(self.dropout(F.gelu(self.up(x))))))


class XLNetLayer(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.attention = RelativeAttention(config)
        self.ffn = FeedForward(config)

    def forward(self, h, g, memory, k_pos_input, other_segment, mask_h, query):
        h, g = self.attention(h, g, memory, k_pos_input, other_segment, mask_h, query)
        return self.ffn(h), None if g is None else self.ffn(g)


class XLNetOutput(NamedTuple):
    content: torch.Tensor
    """``[B, T, D]``: the content stream's top layer (the model's output when there is no query stream)."""
    query: torch.Tensor | None
    """``[B, P, D]`` (``[B, T, D]`` without a target mapping): the query stream's top layer, when it ran."""
    states: tuple[torch.Tensor, ...]
    """With ``output_hidden_states``: the content stream's L + 1 layers (embedding output first)."""
    mems: tuple[torch.Tensor, ...] | None
    """With ``return_mems``: each layer's memory ``[B, M, D]`` for the next segment."""


class XLNetModel(nn.Module):
    """The encoder: word embeddings, the query stream's start vector, L two-stream blocks."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.mask_emb = nn.Parameter(torch.zeros(config.hidden_size))
        self.layers = nn.ModuleList(XLNetLayer(config) for _ in range(config.num_layers))
        self.dropout = Dropout(config.hidden_dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, RelativeAttention):
                for param in (module.r_w_bias, module.r_r_bias, module.r_s_bias, module.seg_embed):
                    nn.init.normal_(param, std=std)
        nn.init.normal_(self.mask_emb, std=std)

    def _memory(self, x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        joined = x if previous is None else torch.cat([previous, x], dim=1)
        keep = self.config.mem_len
        return (joined[:, -keep:] if keep else joined).detach()

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, perm_mask: torch.Tensor | None = None,
                target_mapping: torch.Tensor | None = None, mems: tuple[torch.Tensor, ...] | list | None = None,
                output_hidden_states: bool = False, return_mems: bool = False) -> XLNetOutput:
        """``[B, T]`` ids (right or left padded, ``attention_mask`` 1 at real tokens) -> :class:`XLNetOutput`.

        ``perm_mask`` ``[B, T, T]`` (1: query ``i`` may not read ``j``) and ``target_mapping`` ``[B, P, T]``
        are the factorisation order; without ``target_mapping`` no query stream runs. ``mems``: the
        ``mems`` of the previous segment's call, one ``[B, M, D]`` per layer.
        """
        batch, length = input_ids.shape
        device = input_ids.device
        memory_len = mems[0].shape[1] if mems is not None and mems[0] is not None else 0
        key_len = memory_len + length
        blocked = None
        if attention_mask is not None:
            blocked = (attention_mask == 0)[:, None, :].expand(batch, length, length)
        if perm_mask is not None:
            blocked = perm_mask > 0 if blocked is None else blocked | (perm_mask > 0)
        mask_h = None
        if blocked is not None:
            if memory_len:
                blocked = torch.cat([blocked.new_zeros(batch, length, memory_len), blocked], dim=2)
            # The content stream always reads its own position.
            itself = torch.eye(length, dtype=torch.bool, device=device)
            mask_h = blocked & ~F.pad(itself, (memory_len, 0))[None]
        other_segment = None
        if token_type_ids is not None:
            # Memory counts as segment 0.
            keys = F.pad(token_type_ids, (memory_len, 0))
            other_segment = token_type_ids[:, :, None] != keys[:, None, :]
        h = self.dropout(self.word_embeddings(input_ids))
        g = query = None
        if target_mapping is not None:
            g = self.dropout(self.mask_emb.to(h.dtype).expand(batch, target_mapping.shape[1], -1))
            query = query_layout(target_mapping, blocked, other_segment, h.dtype)
        positions = self.dropout(relative_encodings(length, key_len, self.config.hidden_size, self.config.clamp_len,
                                                    device, h.dtype))
        states, new_mems = [h], []
        # Made once per forward (as the query stream's), not in each of the 2 x L attention calls.
        mask_h = additive_mask(mask_h)
        for i, layer in enumerate(self.layers):
            memory = None if mems is None else mems[i]
            if return_mems:
                new_mems.append(self._memory(h, memory))
            h, g = layer(h, g, memory, positions, other_segment, mask_h, query)
            if output_hidden_states:
                states.append(h)
        return XLNetOutput(h, g, tuple(states) if output_hidden_states else (),
                           tuple(new_mems) if return_mems else None)


class XLNetForPermutationLM(nn.Module):
    """XLNet with its LM head: the word embedding (tied) plus a bias of its own, read from the query stream."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.xlnet = XLNetModel(config)
        self.lm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dropout = Dropout(config.hidden_dropout)

    def tied_weights(self) -> dict[str, str]:
        """No separate output weight exists: the head reads the word embedding."""
        return {}

    def tie_weights(self) -> None:
        """Nothing to re-tie: the head reads the embedding parameter itself."""

    @property
    def output_weight(self) -> torch.Tensor:
        return self.xlnet.word_embeddings.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.output_weight, self.lm_bias)

    def encode(self, input_ids: torch.Tensor, **inputs: Any) -> tuple[torch.Tensor, XLNetOutput]:
        """(the states the head reads: the query stream's when it ran, else the content stream's; the whole output)."""
        out = self.xlnet(input_ids, **inputs)
        return self.dropout(out.query if out.query is not None else out.content), out

    def forward(self, input_ids: torch.Tensor, perm_mask: torch.Tensor | None = None,
                target_mapping: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                mems: tuple[torch.Tensor, ...] | None = None, return_mems: bool = False) -> dict[str, torch.Tensor]:
        """Summed loss of ``labels`` (``[B, P]`` beside a target mapping, else ``[B, T]``; -100 is ignored).

        Keys: ``hidden`` (what the head reads), and with labels ``lm_loss_sum``, ``lm_count``, ``lm_correct``;
        with ``return_mems``, ``mems``: the memory for the next segment. The ``[N, vocab]`` logits exist one
        bounded chunk at a time.
        """
        hidden, encoded = self.encode(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                                      perm_mask=perm_mask, target_mapping=target_mapping, mems=mems,
                                      return_mems=return_mems)
        out = {"hidden": hidden}
        if return_mems:
            out["mems"] = encoded.mems
        if labels is None:
            return out
        flat_labels = labels.reshape(-1)
        loss_sum, correct = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.output_weight, self.lm_bias,
                                                 flat_labels)
        out.update(lm_loss_sum=loss_sum, lm_count=(flat_labels != IGNORE_INDEX).sum(), lm_correct=correct)
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            total -= self.xlnet.word_embeddings.weight.numel()
        return total

    def flops_per_token(self, seq_len: int, mask_fraction: float = 1.0 / 6) -> float:
        """Training flops (forward + backward) per input token.

        The content stream runs every block's matrices (``N_blocks``, the distance table's projection counted
        once per key) and attention on all T positions; the query stream runs them again on the
        predicted fraction f, as does the head (``V*D``). Attention scores are counted twice (content and
        position terms): ``6 * ((1 + f) * N_blocks + f * V*D) + 2 * (1 + f) * 12 * L * D * T``.
        """
        cfg = self.config
        blocks = sum(m.weight.numel() for m in self.xlnet.layers.modules() if isinstance(m, nn.Linear))
        f = mask_fraction
        attention = 2 * (1 + f) * 12 * cfg.num_layers * cfg.hidden_size * seq_len
        return 6.0 * ((1 + f) * blocks + f * cfg.vocab_size * cfg.hidden_size) + attention


# Hugging Face XLNet keys. Its attention projections are [D, heads, head size] tensors read by einsum: the
# input-side ones (q, k, v, r) are the transpose of our nn.Linear weight, the output one (o) is it reshaped.
_HF_PROJECTIONS = {"query": ("q", True), "key": ("k", True), "value": ("v", True), "position": ("r", True),
                   "out": ("o", False)}
_HF_LAYER_KEYS = {
    "attention.r_w_bias": "rel_attn.r_w_bias",
    "attention.r_r_bias": "rel_attn.r_r_bias",
    "attention.r_s_bias": "rel_attn.r_s_bias",
    "attention.seg_embed": "rel_attn.seg_embed",
    "attention.norm.weight": "rel_attn.layer_norm.weight",
    "attention.norm.bias": "rel_attn.layer_norm.bias",
    "ffn.norm.weight": "ff.layer_norm.weight",
    "ffn.norm.bias": "ff.layer_norm.bias",
    "ffn.up.weight": "ff.layer_1.weight",
    "ffn.up.bias": "ff.layer_1.bias",
    "ffn.down.weight": "ff.layer_2.weight",
    "ffn.down.bias": "ff.layer_2.bias",
}


def _num_layers(keys: Any, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers XLNet state dict (``XLNetModel`` or ``XLNetLMHeadModel``) to ptm keys.

    The head's weight is the word embedding (dropped); its bias becomes ``lm_bias``.
    """
    if not any(k.startswith("transformer.") for k in hf):
        hf = {f"transformer.{k}": v for k, v in hf.items()}
    out = {"xlnet.word_embeddings.weight": hf["transformer.word_embedding.weight"],
           "xlnet.mask_emb": hf["transformer.mask_emb"].reshape(-1)}
    if "lm_loss.bias" in hf:
        out["lm_bias"] = hf["lm_loss.bias"]
    for i in range(_num_layers(hf, "transformer.layer.")):
        src, dst = f"transformer.layer.{i}.", f"xlnet.layers.{i}."
        for ours, (theirs, transposed) in _HF_PROJECTIONS.items():
            tensor = hf[f"{src}rel_attn.{theirs}"]
            flat = tensor.reshape(tensor.shape[0], -1)
            out[f"{dst}attention.{ours}.weight"] = flat.t().contiguous() if transposed else flat.contiguous()
        for ours, theirs in _HF_LAYER_KEYS.items():
            out[dst + ours] = hf[src + theirs]
    return out


def state_dict_to_hf(ours: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """Map a ptm XLNet state dict to transformers ``XLNetLMHeadModel`` keys (``lm_loss.weight`` = the embedding)."""
    embedding = ours["xlnet.word_embeddings.weight"]
    out = {"transformer.word_embedding.weight": embedding, "transformer.mask_emb": ours["xlnet.mask_emb"].reshape(1, 1, -1)}
    if "lm_bias" in ours:
        out["lm_loss.weight"], out["lm_loss.bias"] = embedding, ours["lm_bias"]
    width = embedding.shape[1]
    for i in range(_num_layers(ours, "xlnet.layers.")):
        src, dst = f"xlnet.layers.{i}.", f"transformer.layer.{i}."
        for mine, (theirs, transposed) in _HF_PROJECTIONS.items():
            weight = ours[f"{src}attention.{mine}.weight"]
            flat = weight.t() if transposed else weight
            out[f"{dst}rel_attn.{theirs}"] = flat.reshape(width, num_heads, -1).contiguous()
        for mine, theirs in _HF_LAYER_KEYS.items():
            out[dst + theirs] = ours[src + mine]
    return out


class XLNetFamily(Family):
    """XLNet: ``a <sep> b <sep> <cls>``, the summary token last, segments on; the stack is the content stream."""

    name, title = "xlnet", "XLNet"
    config_class, model_class, presets = XLNetConfig, XLNetForPermutationLM, PRESETS
    preset_config = staticmethod(preset_config)
    default_preset, sample_preset = "xlnet-mini", "xlnet-tiny"
    head_parts = {"lm": "lm_bias"}
    encoder_prefix = "xlnet."
    bottom_prefixes = ("xlnet.word_embeddings.", "xlnet.mask_emb")
    sentence_pool = "last"  # XLNet's summary token closes the sequence
    # With summary_last the start token (<cls>) moves after the end one: A <sep> <cls>, A <sep> B <sep> <cls>.
    task_tokens = (("cls", "bos"), ("sep", "eos"), ("sep", "eos"))
    summary_last = True
    scorer = "permutation"  # perplexity in the left-to-right factorisation order

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        out = self.encoder(model)(input_ids, type_ids, attention_mask, output_hidden_states=True)
        return out.content, list(out.states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return self.encoder(model)(input_ids, type_ids, attention_mask).content

    def input_embeddings(self, model):
        return self.encoder(model).word_embeddings.weight

    def framing(self, tokenizer) -> Framing:
        sep = tokenizer.sep_id if tokenizer.sep_id is not None else tokenizer.eos_id
        if sep is None:
            raise PtmError("the checkpoint's tokenizer has no <sep> (or end-of-text) token, which XLNet inputs need")
        cls = tokenizer.cls_id
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        suffix = (sep,) if cls is None else (sep, cls)
        return Framing((), (sep,), suffix, 0, len(suffix), True, True, pad, None if cls is None else SEG_CLS)

    def check_tokenizer(self, tokenizer, where):
        if tokenizer.sep_id is None and tokenizer.eos_id is None:
            raise PtmError(f"{where}: tokenizer has neither a <sep> nor an end-of-text token to put between documents")


FAMILY = XLNetFamily()
