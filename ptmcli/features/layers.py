"""From a model's stack of L + 1 layers to the vectors written: select, combine, then pool or gather words.

Layer indices follow google-research/bert's ``--layers``: they index the L
Transformer blocks (or LSTM layers), -1 the last. ``all`` is every entry of the
stack, the embedding layer first (index 0 .. L): the L + 1 (ELMo: 2L + 1)
representations a scalar mix runs over.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptmcli.errors import PtmError

DEFAULT_BLOCKS = (-1, -2, -3, -4)


@dataclass(frozen=True)
class LayerPlan:
    stack_indices: tuple[int, ...]
    """Entries of the L + 1 stack to read, in output order."""
    labels: tuple[int | str, ...]
    """The name of each output layer (the jsonl ``index``)."""
    combine: str
    mix_weights: tuple[float, ...] | None = None
    """Softmax-normalised scalar-mix weights (one per selected layer)."""
    mix_gamma: float = 1.0

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def output_dim(self, dim: int) -> int:
        return dim * len(self.stack_indices) if self.combine == "concat" else dim

    def apply(self, stack: list[torch.Tensor]) -> torch.Tensor:
        """``[K, B, T, D']`` in float32 from the stack's ``[B, T, D]`` tensors."""
        chosen = [stack[i].float() for i in self.stack_indices]
        if self.combine == "none":
            return torch.stack(chosen)
        if self.combine == "mean":
            return torch.stack(chosen).mean(0, keepdim=True)
        if self.combine == "concat":
            return torch.cat(chosen, dim=-1).unsqueeze(0)
        mixed = sum(w * layer for w, layer in zip(self.mix_weights, chosen))
        return (self.mix_gamma * mixed).unsqueeze(0)


def parse_layers(spec: str | None, num_layers: int, default_all: bool) -> tuple[tuple[int, ...], tuple[int | str, ...]]:
    """(stack indices, labels) of a ``--layers`` value for a model of ``num_layers`` blocks."""
    if spec is None:
        if default_all:
            spec = "all"
        else:
            blocks = [i for i in DEFAULT_BLOCKS if -i <= num_layers]
            return tuple(num_layers + 1 + i for i in blocks), tuple(blocks)
    if spec.strip().lower() == "all":
        return tuple(range(num_layers + 1)), tuple(range(num_layers + 1))
    indices, labels = [], []
    for part in spec.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise PtmError(f"--layers {spec!r}: expected comma-separated integers such as -1,-2,-3,-4, or 'all'") from None
        if not -num_layers <= value < num_layers:
            raise PtmError(f"--layers {spec!r}: {value} is out of range for a model of {num_layers} layers "
                           f"(use {-num_layers}..{num_layers - 1}, or 'all' to include the embedding layer)")
        indices.append(value + 1 if value >= 0 else num_layers + 1 + value)
        labels.append(value)
    return tuple(indices), tuple(labels)


def parse_weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise PtmError(f"--mix-weights {text!r}: expected comma-separated numbers") from None


def build_plan(spec: str | None, num_layers: int, combine: str, all_by_default: bool, mix_weights: str | None,
               mix_gamma: float | None, learned: dict[str, torch.Tensor], checkpoint: str) -> LayerPlan:
    """The layer plan of the command-line options (and of a learned mix, for scalar-mix)."""
    indices, labels = parse_layers(spec, num_layers, default_all=all_by_default or combine == "scalar-mix")
    if combine != "scalar-mix":
        if mix_weights is not None or mix_gamma is not None:
            raise PtmError("--mix-weights and --mix-gamma apply only with --combine scalar-mix")
        return LayerPlan(indices, labels if combine == "none" else (combine,), combine)
    if mix_weights is not None:
        raw = parse_weights(mix_weights)
        gamma = 1.0 if mix_gamma is None else float(mix_gamma)
        source = "--mix-weights"
    else:
        if mix_gamma is not None:
            raise PtmError("--mix-gamma needs --mix-weights (without them, both come from the checkpoint)")
        if "weights" not in learned:
            raise PtmError(f"--combine scalar-mix: give --mix-weights (and --mix-gamma), or a checkpoint with a learned mix "
                           f"(tensors 'scalar_mix.weights' and 'scalar_mix.gamma'); {checkpoint} has none")
        raw = tuple(learned["weights"].tolist())
        gamma = float(learned["gamma"][0]) if "gamma" in learned else 1.0
        source = f"the learned scalar_mix.weights of {checkpoint}"
    if len(raw) != len(indices):
        raise PtmError(f"--combine scalar-mix: {source} has {len(raw)} weights but {len(indices)} layers are selected "
                       f"(--layers {spec or 'all'})")
    probs = torch.tensor(raw, dtype=torch.float64).softmax(0).tolist()
    return LayerPlan(indices, ("scalar-mix",), combine, tuple(probs), gamma)


def output_span_mask(starts: torch.Tensor, ends: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T]`` bool: True on each row's output positions."""
    positions = torch.arange(width, device=starts.device)[None, :]
    return (positions >= starts[:, None]) & (positions < ends[:, None])


def pool(values: torch.Tensor, how: str, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``[K, B, D]``: one vector per row over its output positions (zeros for an empty span)."""
    K, B, T, D = values.shape
    rows = torch.arange(B, device=values.device)
    empty = ends <= starts
    if how == "cls":
        out = values[:, rows, starts.clamp(max=T - 1)]
    elif how == "last":
        out = values[:, rows, (ends - 1).clamp(min=0)]
    else:
        mask = output_span_mask(starts, ends, T)[None, :, :, None]
        if how == "mean":
            out = (values * mask).sum(2) / (ends - starts).clamp(min=1)[None, :, None].to(values.dtype)
        elif how == "max":
            out = values.masked_fill(~mask, float("-inf")).amax(2)
        else:
            raise ValueError(f"unknown pooling {how!r}")
    return out.masked_fill(empty[None, :, None], 0.0)


def gather_words(values: torch.Tensor, word_ids: torch.Tensor, num_words: int, how: str) -> torch.Tensor:
    """``[K, B, W, D]``: per word, its first sub-token's vector or the mean of its sub-tokens.

    ``word_ids`` is ``[B, T]`` with -1 where a position belongs to no word. A word
    with no sub-token (cut off by truncation) gets zeros.
    """
    K, B, T, D = values.shape
    slots = num_words + 1  # the last slot collects positions of no word
    target = torch.where(word_ids >= 0, word_ids, num_words)
    flat = (target + torch.arange(B, device=values.device)[:, None] * slots).reshape(-1)
    source = values.reshape(K, B * T, D)
    if how == "mean":
        sums = values.new_zeros(K, B * slots, D).index_add_(1, flat, source)
        counts = values.new_zeros(B * slots).index_add_(0, flat, values.new_ones(B * T))
        out = sums / counts.clamp(min=1)[None, :, None]
    elif how == "first":
        # Each word's first position: the smallest position scattered into its slot.
        positions = torch.arange(T, device=values.device).repeat(B)
        first = torch.full((B * slots,), T, dtype=torch.long, device=values.device)
        first = first.scatter_reduce(0, flat, positions, reduce="amin")
        present = first < T
        rows = torch.arange(B * slots, device=values.device) // slots
        out = values[:, rows, first.clamp(max=T - 1)] * present[None, :, None]
    else:
        raise ValueError(f"unknown word vector {how!r}")
    return out.reshape(K, B, slots, D)[:, :, :num_words]
