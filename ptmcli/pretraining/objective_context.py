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

    @property
    def decoder_start_id(self) -> int:
        """The token an encoder-decoder's decoder starts from, as the family's model config takes it from the
        tokenizer (BART ``</s>``, T5 ``<pad>``); ``</s>`` when the config names none."""
        from ptmcli.models.framing import first_token

        config = self.family.model_config(self.config.preset, self.tokenizer)
        start = getattr(config, "decoder_start_token_id", None)
        return int(start) if start is not None else first_token(self.tokenizer, "eos", "sep")
