"""Named sums of training statistics that stay on the device until they are read.

Reading a CUDA value waits for every kernel queued before it, so a loop that
reads each micro-batch's loss keeps the GPU idle between steps. Values here
are added as float64 tensors where they live (Python numbers stay Python
floats) and read together, once, when a log line or an evaluation needs them.
Float64 and the order of additions make the sums equal to adding the values
one by one as Python floats.
"""

from __future__ import annotations

import torch


class RunningSums:
    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor | float] = {}

    def add(self, key: str, value) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().to(torch.float64)
        else:
            value = float(value)
        previous = self.values.get(key)
        self.values[key] = value if previous is None else previous + value

    def add_all(self, values: dict) -> None:
        for key, value in values.items():
            self.add(key, value)

    def add_sums(self, other: RunningSums) -> None:
        """Add another set's sums, each as one value (a step's sums to a log window's)."""
        self.add_all(other.values)

    def pop(self, key: str) -> float:
        """Remove one sum and read it."""
        return float(self.values.pop(key))

    def read(self) -> dict[str, float]:
        """Every sum as a Python float: one transfer per device that holds some."""
        out = {k: v for k, v in self.values.items() if not isinstance(v, torch.Tensor)}
        by_device: dict[torch.device, list[str]] = {}
        for key, value in self.values.items():
            if isinstance(value, torch.Tensor):
                by_device.setdefault(value.device, []).append(key)
        for keys in by_device.values():
            out.update(zip(keys, torch.stack([self.values[k].reshape(()) for k in keys]).tolist()))
        return {key: out[key] for key in self.values}
