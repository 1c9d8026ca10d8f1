"""The base of the encoder-decoder pretraining tasks (denoise, span-corruption, mass): two-sequence
batches (``data.seq2seq``) whose loss is the decoder's token loss, normalised by the target tokens of the
whole global batch."""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.seq2seq import IGNORE_INDEX, target_tokens, token_normalised_loss
from ptmcli.pretraining.task_base import PretrainTask


class Seq2SeqLMTask(PretrainTask):
    """A task whose batches are two-sequence batches and whose loss is the decoder's token loss."""

    sum_keys = ("lm_loss_sum", "lm_count", "lm_correct")

    def normalizer_counts(self, batches) -> dict[str, float]:
        return {"lm": float(sum(target_tokens(b) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        # At least 1, so a step without targets gives a zero loss, not NaN.
        return {"lm": max(1.0, counts["lm"])}

    def _forward(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=batch["decoder_input_ids"],
                     labels=batch["labels"])

    def _objective(self, out, norms):
        return token_normalised_loss(out["lm_loss_sum"], norms["lm"])

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("lm_count"):
            return {}
        mean = sums["lm_loss_sum"] / sums["lm_count"]
        return {"lm_loss": mean, "lm_ppl": float(np.exp(min(mean, 50.0))), "lm_acc": sums["lm_correct"] / sums["lm_count"]}


def empty_batch(source_width: int, target_width: int) -> dict[str, torch.Tensor]:
    """The batch of a process that builds none of a micro-batch's rows."""
    source = torch.zeros((0, source_width), dtype=torch.int64)
    target = torch.zeros((0, target_width), dtype=torch.int64)
    return {"input_ids": source, "attention_mask": source.clone(), "decoder_input_ids": target,
            "labels": target.clone().fill_(IGNORE_INDEX), "target_lengths": torch.zeros(0, dtype=torch.int64)}
