"""ELMo's scalar mix: ``gamma * sum_j softmax(w)_j * layer_j``, a learned task-specific blend of layers."""

from __future__ import annotations

import torch
from torch import nn


class ScalarMix(nn.Module):
    """Weights start equal (w = 0) and gamma at 1, as in Peters et al. (2018).

    State-dict keys ``weights`` (``[num_layers]``, before the softmax) and
    ``gamma`` (``[1]``); ``ptm extract-features --combine scalar-mix`` reads them
    from a checkpoint under the ``scalar_mix.`` prefix.
    """

    def __init__(self, num_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, layers: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(layers) != self.weights.numel():
            raise ValueError(f"scalar mix over {self.weights.numel()} layers was given {len(layers)}")
        probs = self.weights.softmax(0)
        mixed = probs[0] * layers[0]
        for p, layer in zip(probs[1:], layers[1:]):
            mixed = mixed + p * layer
        return self.gamma * mixed
