"""ELMo pretraining as a ``TrainTask``: shards -> packed sentence blocks -> both LM losses.

Blocks are built like RoBERTa's FULL-SENTENCES examples (``examples.ExampleStream`` with
objective "mlm": whole sentences packed into ``seq_len - 2`` tokens, across
documents) and wrapped in the begin/end-of-sentence tokens. Nothing is masked:
the forward LM predicts every token from its left, the backward LM from its
right. The loss of a step is the mean over both directions of every predicted
token in all its micro-batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ptmcli.models.elmo import sentence_boundary_ids
from ptmcli.objectives.collate import collate_blocks
from ptmcli.pretraining.examples import Drawn, ExampleStream
from ptmcli.pretraining.task_base import PretrainTask

# Batches are padded to a multiple of this length: a few shapes instead of one per
# batch, so CPU matmul libraries (oneDNN under bf16) do not cache a kernel per length.
LENGTH_MULTIPLE = 8

_SUM_KEYS = ("fwd_loss_sum", "fwd_count", "fwd_correct", "bwd_loss_sum", "bwd_count", "bwd_correct")


@dataclass(frozen=True)
class ElmoSpecials:
    """Token ids that wrap each block, and the padding id."""

    begin_id: int
    end_id: int
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> ElmoSpecials:
        """bos/eos (else [CLS]/[SEP]) as the wrappers; padding is [PAD], else the end id (it is never read)."""
        begin, end = sentence_boundary_ids(tokenizer)
        return cls(begin, end, tokenizer.pad_id if tokenizer.pad_id is not None else end)


def collate_lm_blocks(blocks, specials: ElmoSpecials, seq_len: int, longest: int | None = None) -> dict[str, torch.Tensor]:
    """``<begin> block <end>`` rows, right-padded to ``longest`` (default: the longest row) rounded up to ``LENGTH_MULTIPLE``."""
    batch = collate_blocks(blocks, specials.begin_id, specials.end_id, specials.pad_id, seq_len, pad_to_longest=longest is None)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    width = ids.shape[1] if longest is None else longest
    width += -width % LENGTH_MULTIPLE
    if width > ids.shape[1]:
        extra = width - ids.shape[1]
        ids = torch.cat([ids, ids.new_full((ids.shape[0], extra), specials.pad_id)], dim=1)
        mask = torch.cat([mask, mask.new_zeros((mask.shape[0], extra))], dim=1)
    return {"input_ids": ids[:, :width].contiguous(), "attention_mask": mask[:, :width].contiguous()}


class ElmoPretrainTask(PretrainTask):
    """Forward + backward language modelling on shard rows; the loop's ``TrainTask``.

    ``stream`` is an ``ExampleStream`` with objective "mlm" (packed blocks);
    ``eval_streams`` are built the same way (unshuffled) and read once, at
    construction, into fixed batches. ``specials`` is an ``ElmoSpecials`` or a
    tokenizer to take them from (:meth:`ElmoSpecials.from_tokenizer`). Nothing
    here draws random numbers (dropout uses the global generator the loop
    saves), so ``seed`` is accepted for the common signature only.
    """

    sum_keys = _SUM_KEYS

    def __init__(self, stream: ExampleStream, specials, *, batch_size: int, seed: int = 0,
                 eval_streams: dict[str, ExampleStream] | None = None, eval_batches: int = 20) -> None:
        if stream.objective != "mlm":
            raise ValueError("ELMo pretraining reads packed blocks: build the ExampleStream with objective 'mlm'")
        self.specials = specials if isinstance(specials, ElmoSpecials) else ElmoSpecials.from_tokenizer(specials)
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _batch(self, taken: Drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        # As wide as the whole batch would be, so a part built alone has the shape of its slice.
        return collate_lm_blocks(taken.examples, self.specials, self.stream.seq_len, longest=taken.widest + 2)

    def normalizer_counts(self, batches) -> dict[str, float]:
        # Each row of n tokens gives n - 1 predictions per direction.
        return {"lm": float(sum(int(b["attention_mask"][:, 1:].sum()) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return {"lm": float(max(1, 2 * counts["lm"]))}

    def _forward(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"])

    def _objective(self, out, norms):
        return (out["fwd_loss_sum"] + out["bwd_loss_sum"]) / norms["lm"]

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {}
        if sums.get("fwd_count") and sums.get("bwd_count"):
            count = sums["fwd_count"] + sums["bwd_count"]
            out["lm_loss"] = (sums["fwd_loss_sum"] + sums["bwd_loss_sum"]) / count
            for name in ("fwd", "bwd"):
                loss = sums[f"{name}_loss_sum"] / sums[f"{name}_count"]
                out[f"{name}_loss"] = loss
                out[f"{name}_ppl"] = math.exp(min(loss, 50.0))
                out[f"{name}_acc"] = sums[f"{name}_correct"] / sums[f"{name}_count"]
        return out
