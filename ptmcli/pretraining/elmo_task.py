"""ELMo pretraining as a ``TrainTask``: shards -> packed sentence blocks -> both LM losses.

Blocks are built like RoBERTa's FULL-SENTENCES examples (``ExampleStream`` with
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
from ptmcli.pretraining.bert_task import ExampleStream

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


def collate_lm_blocks(blocks, specials: ElmoSpecials, seq_len: int) -> dict[str, torch.Tensor]:
    """``<begin> block <end>`` rows, right-padded to the longest row rounded up to ``LENGTH_MULTIPLE``."""
    batch = collate_blocks(blocks, specials.begin_id, specials.end_id, specials.pad_id, seq_len, pad_to_longest=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    extra = -ids.shape[1] % LENGTH_MULTIPLE
    if extra:
        ids = torch.cat([ids, ids.new_full((ids.shape[0], extra), specials.pad_id)], dim=1)
        mask = torch.cat([mask, mask.new_zeros((mask.shape[0], extra))], dim=1)
    return {"input_ids": ids, "attention_mask": mask}


class ElmoPretrainTask:
    """Forward + backward language modelling on shard rows; the loop's ``TrainTask``.

    ``stream`` is an ``ExampleStream`` with objective "mlm" (packed blocks);
    ``eval_streams`` are built the same way (unshuffled) and read once, at
    construction, into fixed batches. ``specials`` is an ``ElmoSpecials`` or a
    tokenizer to take them from (:meth:`ElmoSpecials.from_tokenizer`). Nothing
    here draws random numbers (dropout uses the global generator the loop
    saves), so ``seed`` is accepted for the common signature only.
    """

    def __init__(self, stream: ExampleStream, specials, *, batch_size: int, seed: int = 0,
                 eval_streams: dict[str, ExampleStream] | None = None, eval_batches: int = 20) -> None:
        if stream.objective != "mlm":
            raise ValueError("ELMo pretraining reads packed blocks: build the ExampleStream with objective 'mlm'")
        self.stream = stream
        self.specials = specials if isinstance(specials, ElmoSpecials) else ElmoSpecials.from_tokenizer(specials)
        self.batch_size = batch_size
        self.eval_sets = {
            name: [self._collate(s.take(batch_size)) for _ in range(eval_batches)] for name, s in (eval_streams or {}).items()
        }

    def _collate(self, blocks) -> dict[str, torch.Tensor]:
        return collate_lm_blocks(blocks, self.specials, self.stream.seq_len)

    def next_micro_batches(self, count: int) -> list[dict[str, torch.Tensor]]:
        return [self._collate(self.stream.take(self.batch_size)) for _ in range(count)]

    def normalizers(self, batches) -> dict[str, float]:
        # Each row of n tokens gives n - 1 predictions per direction.
        per_direction = sum(int(b["attention_mask"][:, 1:].sum()) for b in batches)
        return {"lm": float(max(1, 2 * per_direction))}

    def loss(self, model, batch, norms):
        out = model(batch["input_ids"], batch["attention_mask"])
        loss = (out["fwd_loss_sum"] + out["bwd_loss_sum"]) / norms["lm"]
        return loss, {key: float(out[key]) for key in _SUM_KEYS}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
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

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        from ptmcli.runtime.device import autocast

        results = {}
        for name, batches in self.eval_sets.items():
            sums = dict.fromkeys(_SUM_KEYS, 0.0)
            for batch in batches:
                with autocast(precision, device):
                    out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                for key in _SUM_KEYS:
                    sums[key] += float(out[key])
            prefix = "" if name == "heldout" else f"{name}_"
            results.update({prefix + k: v for k, v in self.summarize(sums).items()})
        return results

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
