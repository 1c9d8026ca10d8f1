"""A progress bar on stderr for scoring loops: tqdm when wanted, nothing otherwise.

It counts bytes of input read when their total is known (files), else tokens
scored, and shows the running tokens/s and perplexity.
"""

from __future__ import annotations

import math
import sys


class Progress:
    def __init__(self, enabled: bool | None, total_bytes: int | None, max_tokens: int | None, unit_name: str = "tok") -> None:
        self.bar = None
        self.by_bytes = max_tokens is None and total_bytes is not None
        self.done = 0
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from tqdm import tqdm

            if self.by_bytes:
                self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
            else:
                self.bar = tqdm(total=max_tokens, unit=unit_name, unit_scale=True, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, bytes_read: int, tokens: int, loss: float | None) -> None:
        """Move to ``bytes_read`` bytes / ``tokens`` tokens done; ``loss`` is the running mean nll."""
        if self.bar is None:
            return
        position = bytes_read if self.by_bytes else tokens
        if self.bar.total:
            position = min(position, self.bar.total)  # reading stops at a sentence end, a little past --max-tokens
        if loss is not None:
            self.bar.set_postfix({"ppl": f"{math.exp(min(loss, 50.0)):.2f}"}, refresh=False)
        if position > self.done:
            self.bar.update(position - self.done)
            self.done = position

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
