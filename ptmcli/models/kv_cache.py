"""Keys and values of the positions a decoder has already seen, so a new token costs one position's work.

A forward pass given a :class:`KVCache` hands each layer's attention its
:class:`LayerCache`; the attention projects the new positions as usual, and
``LayerCache.extend`` appends their keys and values and says which of the
stored positions each new one may see. The attention then runs the same
scaled-dot-product call as in training, so decoding has no second copy of
the attention math.

A padded batch (left-padded prompts) marks which positions hold real tokens
(:meth:`KVCache.mark`); every layer then hides the padding from the new
queries. Beam search reorders the rows (:meth:`KVCache.reorder`).
"""

from __future__ import annotations

import torch


class LayerCache:
    """One layer's keys and values, ``[B, heads, capacity, head_dim]``, filled up to ``length``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.real: torch.Tensor | None = None
        """``[B, capacity]``, True at real tokens; shared by all layers; None when nothing is padded."""

    def extend(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
        """Append ``[B, h, T, d]`` new keys and values; ``(keys, values, mask, causal)`` for the new queries.

        The mask and causal flag are what ``scaled_dot_product_attention`` takes
        so that each new position sees every cached one and the new ones up to
        itself.
        """
        start, stop = self.length, self.length + key.shape[2]
        if stop > self.capacity:
            raise ValueError(f"cache of {self.capacity} positions cannot hold {stop}")
        if self.keys is None:
            batch, heads, _, dim = key.shape
            self.keys = key.new_empty((batch, heads, self.capacity, dim))
            self.values = value.new_empty((batch, heads, self.capacity, dim))
        self.keys[:, :, start:stop] = key
        self.values[:, :, start:stop] = value
        self.length = stop
        keys, values = self.keys[:, :, :stop], self.values[:, :, :stop]
        if self.real is not None:
            return keys, values, self._padded_mask(start, stop, key.device), False
        if start == 0:
            return keys, values, None, True
        if stop - start == 1:
            return keys, values, None, False  # one new token sees everything before it
        # Several new tokens after a cached prefix: each sees the prefix and the new tokens up to itself.
        device = key.device
        visible = torch.arange(stop, device=device)[None, :] <= torch.arange(start, stop, device=device)[:, None]
        return keys, values, visible, False

    def _padded_mask(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """``[B, 1, new, stop]``: causal, real keys only; each query also sees itself, so a padding
        query keeps a finite output (a row with no visible key would give NaN values that
        a real query's zero weight still multiplies)."""
        queries = torch.arange(start, stop, device=device)[:, None]
        keys = torch.arange(stop, device=device)[None, :]
        visible = (keys <= queries) & self.real[:, None, :stop]
        return (visible | (keys == queries))[:, None]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep row ``rows[i]`` as row ``i`` (beam search; repeated rows expand the batch)."""
        if self.keys is not None:
            self.keys = self.keys.index_select(0, rows)
            self.values = self.values.index_select(0, rows)


class KVCache:
    """A :class:`LayerCache` per layer, all holding the same positions."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.layers = [LayerCache(capacity) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Positions held (read it before a forward pass: that is where the new tokens go)."""
        return self.layers[0].length if self.layers else 0

    @property
    def real(self) -> torch.Tensor | None:
        return self.layers[0].real if self.layers else None

    def mark(self, real: torch.Tensor) -> None:
        """Say which of the next ``[B, n]`` positions are real tokens (False: padding), before the
        forward pass that adds them; a cache never marked has no padding."""
        start, stop = self.length, self.length + real.shape[1]
        shared = self.real
        if shared is None:
            shared = torch.ones(real.shape[0], self.capacity, dtype=torch.bool, device=real.device)
            for layer in self.layers:
                layer.real = shared
        shared[:, start:stop] = real.bool()

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep row ``rows[i]`` of every layer as row ``i``: beam search's choice of surviving beams,
        or with repeated rows the expansion of each prompt into its beams."""
        real = None if self.real is None else self.real.index_select(0, rows)
        for layer in self.layers:
            layer.reorder(rows)
            layer.real = real
