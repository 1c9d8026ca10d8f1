"""Keys and values of the positions a decoder has already seen, so a new token costs one position's work.

A forward pass given a :class:`KVCache` hands each layer's attention its
:class:`LayerCache`; the attention projects the new positions as usual, and
``LayerCache.extend`` appends their keys and values and says which of the
stored positions each new one may see. The attention then runs the same
scaled-dot-product call as in training, so decoding has no second copy of
the attention math.
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
        if start == 0:
            return keys, values, None, True
        if stop - start == 1:
            return keys, values, None, False  # one new token sees everything before it
        # Several new tokens after a cached prefix: each sees the prefix and the new tokens up to itself.
        device = key.device
        visible = torch.arange(stop, device=device)[None, :] <= torch.arange(start, stop, device=device)[:, None]
        return keys, values, visible, False


class KVCache:
    """A :class:`LayerCache` per layer, all holding the same positions."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.capacity = capacity
        self.layers = [LayerCache(capacity) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Positions held (read it before a forward pass: that is where the new tokens go)."""
        return self.layers[0].length if self.layers else 0
