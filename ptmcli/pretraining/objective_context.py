"""What an objective's builder is given to build its training task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ObjectiveContext:
    config: Any
    """The run's PretrainConfig; ``batch_size`` is already the global micro-batch (per device x processes)."""
    tokenizer: Any
    dataset: Any
    """The training ShardDataset."""
    train_rows: Any
    """Documents (rows of ``dataset``) to train on."""
    eval_sets: list[tuple[str, Any, Any]]
    """``(name, dataset, rows)`` of each evaluation set: held-out documents, ``--eval-data``."""
    family: Any

    @property
    def end_id(self) -> int | None:
        """The token between documents: end-of-text, else [SEP]."""
        return self.tokenizer.eos_id if self.tokenizer.eos_id is not None else self.tokenizer.sep_id
