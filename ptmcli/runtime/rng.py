"""Generator states as text, so a run's random state fits in its JSON trainer state."""

from __future__ import annotations

import base64

import torch


def rng_state_to_text(state: torch.Tensor) -> str:
    """A generator's uint8 state tensor as base64, so it fits in state.json."""
    return base64.b64encode(state.numpy().tobytes()).decode("ascii")


def rng_state_from_text(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()
