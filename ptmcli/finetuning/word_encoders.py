"""Small task encoders over context-free word vectors (the pre-BERT baselines ``ptm finetune`` trains on a
static checkpoint) or over a frozen contextual model's scalar mix (``--mode features --encoder``).

A family whose ``task_encoder`` is set (static word vectors) gives finetuning one vector per token and
no context, so a head on its top layer would see a bag of words. The task model then puts one of these
between the vectors and the head (``--encoder``):

- ``bilstm``: a 1-2 layer bidirectional LSTM (``--encoder-hidden`` per direction, ``--encoder-layers``);
  per-token outputs for tagging, max or mean pooling over the words for sentences (``--pool``;
  max by default, InferSent's choice).
- ``cnn``: Kim (2014): filter widths 3, 4 and 5, 100 feature maps each (``--encoder-hidden``), ReLU,
  max over time. Sentence tasks only.

Two texts (pairs, multiple choice) are encoded apart and combined as InferSent (Conneau et al., 2017)
does: ``[u; v; |u - v|; u * v]``. The encoder reads only the words: the special positions
``tasks/encode.py`` lays around them (start, delimiter, end; the word tokenizer's [UNK] when it has
nothing else) are dropped, so each text is encoded exactly as it would be alone.

Its weights are task-side (``word_encoder.*`` in a finetuned checkpoint), beside ``classifier.*``; the
vectors keep their pretraining name and, frozen by default, their values.

A contextual model in ``--mode features`` is already contextual, but ELMo and CoVe were not used with a
head on their features alone: their papers feed the mixed layers to the task's own BiLSTM (ELMo's
taggers, CoVe's biattentive classifier). ``--encoder`` there puts the same encoder over the scalar
mix, the model frozen as always in that mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ptmcli.errors import PtmError
from ptmcli.tasks import QA


@dataclass(frozen=True)
class EncoderKind:
    per_token: bool
    """Whether it gives an output per token (tagging, QA) rather than only a sentence vector."""
    hidden: int
    """Default ``--encoder-hidden``: LSTM size per direction, or feature maps per filter width."""
    has_layers: bool
    pools: tuple[str, ...]
    """``--pool`` values it reads a sentence by; the first is the default."""


ENCODERS = {
    "bilstm": EncoderKind(True, 256, True, ("max", "mean")),
    "cnn": EncoderKind(False, 100, False, ("max", "mean")),
}
CNN_WIDTHS = (3, 4, 5)
DROPOUT = 0.5  # on the vector the head reads: Kim's and Lample et al.'s rate
ENCODER_LR = 1e-3  # the encoder and head train from scratch: Adam's usual rate, not a finetuning one
PER_TOKEN_TASKS = ("token-classification", QA)

# Flags only a family with a task encoder reads: refused for the others rather than ignored.
ENCODER_FLAGS = ("encoder", "encoder_hidden", "encoder_layers", "freeze_embeddings")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def encoder_spec(cfg, family, pairs: bool) -> dict | None:
    """The encoder ``cfg`` asks for (saved as the checkpoint's ``task.encoder``), or None when the head reads the
    family's top layer or scalar mix directly; flags that would not apply are refused.

    Static word vectors always get one (``--encoder``, default the family's ``task_encoder``); a contextual
    model gets one in ``--mode features`` when ``--encoder`` asks, over its frozen scalar mix (ELMo's and
    CoVe's recipe: the mixed layers feed the task's own BiLSTM)."""
    static = family.task_encoder is not None
    if not static and (cfg.mode != "features" or cfg.encoder is None):
        given = [name for name in ENCODER_FLAGS if getattr(cfg, name) is not None]
        if given:
            if cfg.mode == "features" and given[0] != "freeze_embeddings":
                raise PtmError(f"{_flag(given[0])} sizes the encoder that --encoder bilstm|cnn asks for; add --encoder")
            raise PtmError(f"{_flag(given[0])} applies to static word vectors, or to a {family.title} checkpoint in "
                           "--mode features with --encoder; in --mode finetune its head reads its own top layer")
        return None
    kind_name = cfg.encoder or family.task_encoder
    if kind_name not in ENCODERS:
        raise PtmError(f"--encoder {kind_name!r}: choose one of {', '.join(ENCODERS)}")
    kind = ENCODERS[kind_name]
    what = f"static word vectors (--encoder {kind_name})" if static else f"--encoder {kind_name} over the scalar mix"
    if cfg.task in PER_TOKEN_TASKS and not kind.per_token:
        raise PtmError(f"--encoder {kind_name} reads whole sentences (max over time); --task {cfg.task} needs an output "
                       "per token: use --encoder bilstm")
    if static and (cfg.mode != "finetune" or cfg.train_features):
        raise PtmError(f"--{'train-features' if cfg.train_features else 'mode features'} trains a scalar mix of a "
                       f"contextual model's layers; {what} feed a small encoder instead (their vectors "
                       "frozen by default)")
    if not static:
        if cfg.train_features:
            raise PtmError(f"--train-features holds pooled or per-word vectors, not the token sequence {what} reads; "
                           "train through the encoder (drop --train-features)")
        if cfg.freeze_embeddings is not None:
            raise PtmError("--freeze-embeddings / --no-freeze-embeddings choose for static word vectors; in --mode "
                           "features the whole model stays frozen (--mode finetune trains it)")
        if family.summary_last:
            raise PtmError(f"--encoder reads the words between a start and an end token; a {family.title} input "
                           "ends with its summary token instead")
    if cfg.aux_lm_weight > 0:
        raise PtmError(f"--aux-lm-weight keeps a language-model loss, which {what} have not")
    if cfg.pool is not None and cfg.pool not in kind.pools:
        raise PtmError(f"--pool {cfg.pool}: {what} read a sentence by {' or '.join(kind.pools)} over its words")
    if cfg.encoder_layers is not None and not kind.has_layers:
        raise PtmError(f"--encoder-layers applies to --encoder bilstm; --encoder {kind_name} has one layer of filters")
    for name in ("encoder_hidden", "encoder_layers"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise PtmError(f"{_flag(name)} {getattr(cfg, name)}: must be positive")
    frozen = True if cfg.freeze_embeddings is None else bool(cfg.freeze_embeddings)
    if frozen and (cfg.gradual_unfreeze or cfg.discriminative_lr != 1.0):
        flag = "--gradual-unfreeze" if cfg.gradual_unfreeze else "--discriminative-lr"
        if static:
            raise PtmError(f"{flag} acts on the word vectors, which stay frozen; add --no-freeze-embeddings")
        raise PtmError(f"{flag} acts on the pretrained layers, which --mode features keeps frozen")
    return {"type": kind_name, "hidden_size": cfg.encoder_hidden or kind.hidden,
            "num_layers": (cfg.encoder_layers or 1) if kind.has_layers else 1,
            "pairs": bool(pairs), "dropout": DROPOUT, "frozen_embeddings": frozen}


def has_pairs(row: dict) -> bool:
    """Whether an encoded row holds two texts (segment 1 follows the delimiter)."""
    return bool(np.asarray(row["token_type_ids"]).any())


def unknown_share(rows, unk_id: int | None, delimiter_repeats: int = 1) -> tuple[int, int]:
    """(words the tokenizer mapped to its unknown id, words) over ``rows``' texts, special positions left out."""
    unknown = total = 0
    if unk_id is None:
        return 0, 0
    for i in range(len(rows)):
        row = rows[i]
        ids, types = np.atleast_2d(row["input_ids"]), np.atleast_2d(row["token_type_ids"])
        lengths = row["lengths"] if "lengths" in row else [ids.shape[1]]
        for line, kinds, length in zip(ids, types, lengths):
            keep = _word_positions(np.arange(ids.shape[1]), int(length), kinds, delimiter_repeats)
            unknown += int((line[keep] == unk_id).sum())
            total += int(keep.sum())
    return unknown, total


def _word_positions(positions, length, types, repeats):
    """Positions of words (not start, delimiter, end, padding), as ``tasks/encode.py`` lays a row out."""
    real = positions < length
    firsts = ((types == 0) & real).sum(-1, keepdims=True)  # start, text A and the delimiter(s)
    paired = ((types != 0) & real).any(-1, keepdims=True)
    delimiter = paired & (positions >= firsts - repeats) & (positions < firsts)
    return real & (positions > 0) & (positions < length - 1) & ~delimiter


def _compact(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index ``[B, W]`` of the kept positions first, in order; mask ``[B, W]`` of the real ones)."""
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    counts = keep.sum(1)
    width = max(1, int(counts.max()))
    return order[:, :width], torch.arange(width, device=keep.device)[None, :] < counts[:, None]


def _pool(tokens: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, D]`` over the real positions; a text without words gives zeros."""
    weights = mask.unsqueeze(-1)
    if how == "max":
        pooled = tokens.masked_fill(~weights, torch.finfo(tokens.dtype).min).amax(1)
        return torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


class BiLSTM(nn.Module):
    def __init__(self, size: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(size, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.output_size = 2 * hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Packed, so a padded row gives what the row alone gives (the backward LSTM starts at its last word).
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


class KimCNN(nn.Module):
    def __init__(self, size: int, maps: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(size, maps, width) for width in CNN_WIDTHS)
        self.output_size = maps * len(CNN_WIDTHS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # One window starting at each word, zero vectors past the text's end (so short texts still fill
        # every width): position t of the output is the windows starting at word t, aligned with ``mask``.
        channels = x.transpose(1, 2)
        outs = [torch.relu(conv(nn.functional.pad(channels, (0, conv.kernel_size[0] - 1)))) for conv in self.convs]
        return torch.cat(outs, 1).transpose(1, 2)


class WordEncoder(nn.Module):
    """Word vectors ``[B, T, D]`` of a framed batch -> per-token features or one vector per example."""

    def __init__(self, size: int, spec: dict, pool: str, delimiter_repeats: int = 1) -> None:
        super().__init__()
        kind = spec["type"]
        if kind not in ENCODERS:
            raise PtmError(f"task encoder {kind!r}: choose one of {', '.join(ENCODERS)}")
        if kind == "cnn":
            self.net: nn.Module = KimCNN(size, int(spec["hidden_size"]))
        else:
            self.net = BiLSTM(size, int(spec["hidden_size"]), int(spec["num_layers"]), float(spec["dropout"]))
        self.pairs, self.pool, self.repeats = bool(spec["pairs"]), pool, delimiter_repeats
        self.token_size = self.net.output_size
        self.sentence_size = self.token_size * (4 if self.pairs else 1)

    def _encode(self, vectors: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, mask = _compact(keep)
        words = vectors.gather(1, index.unsqueeze(-1).expand(-1, -1, vectors.shape[-1]))
        words = words * mask.unsqueeze(-1).to(words.dtype)
        return self.net(words, mask), index, mask

    def forward(self, vectors: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
                per_token: bool) -> torch.Tensor:
        """``[B, T, H]`` (zeros at the special positions) when ``per_token``, else ``[B, H]`` or, for pairs,
        ``[B, 4H]``."""
        positions = torch.arange(vectors.shape[1], device=vectors.device)[None, :]
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(attention_mask)
        keep = _word_positions(positions, attention_mask.sum(1, keepdim=True), types, self.repeats)
        if per_token:
            out, index, mask = self._encode(vectors, keep)
            full = out.new_zeros(*keep.shape, out.shape[-1])
            return full.scatter(1, index.unsqueeze(-1).expand(-1, -1, out.shape[-1]), out * mask.unsqueeze(-1).to(out.dtype))
        if not self.pairs:
            out, _, mask = self._encode(vectors, keep)
            return _pool(out, mask, self.pool)
        # Both texts in one pass: the first texts, then the second ones.
        both = torch.cat([keep & (types == 0), keep & (types != 0)])
        out, _, mask = self._encode(torch.cat([vectors, vectors]), both)
        u, v = _pool(out, mask, self.pool).chunk(2)
        return torch.cat([u, v, (u - v).abs(), u * v], -1)


def describe_encoder(spec: dict, pool: str, over_mix: bool = False, per_token: bool = False) -> str:
    """The encoder in a few words, for the start-up line; ``over_mix``: it reads a frozen model's scalar mix;
    ``per_token``: the head reads every position (tagging, QA), so nothing is pooled."""
    if spec["type"] == "cnn":
        what = f"cnn encoder ({spec['hidden_size']} maps x widths {','.join(map(str, CNN_WIDTHS))}, {pool} over time)"
    else:
        reads = "per token" if per_token else f"{pool} pooling"
        what = f"bilstm encoder ({spec['num_layers']} x 2 x {spec['hidden_size']}, {reads})"
    if spec["pairs"]:
        what += ", pairs as [u; v; |u-v|; u*v]"
    if over_mix:
        return f"mode features, {what} over the scalar mix"
    return what + (", frozen vectors" if spec["frozen_embeddings"] else ", vectors trained")
