"""BERT pretraining as a ``TrainTask``: examples -> [CLS]/[SEP] rows -> masked batches -> MLM (+ NSP or SOP) loss.

Examples come from an ``ExampleStream`` (NSP or sentence-order pairs, or
full-sentence blocks for MLM alone) and are masked per batch, so every epoch sees new masks. A
row's masks are keyed by its example number, so they are the same whichever
process builds the row, and resuming needs no generator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptmcli.objectives.collate import collate_blocks, collate_pairs
from ptmcli.pretraining.examples import Drawn, ExampleStream
from ptmcli.pretraining.keyed_masking import KeyedMasker
from ptmcli.pretraining.task_base import PretrainTask

_MLM_KEYS = ("mlm_loss_sum", "mlm_count", "mlm_correct")


@dataclass(frozen=True)
class Specials:
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    vocab_size: int


class BertPretrainTask(PretrainTask):
    """MLM (+ a pair head) on shard rows; the loop's ``TrainTask``.

    ``pair_head`` names the sentence-pair head the model is given labels for (``"nsp"``, ``"sop"``:
    the pairs' ``is_random_next`` become ``<head>_labels``); by default NSP when the stream makes pairs.
    ``ngram`` above 1: ALBERT's n-gram masking of spans of up to that many words. ``masker``: what masks
    the rows (``mask_units.build_masker``: whole words, lexicon units); by default BERT's keyed masking.
    """

    def __init__(self, stream: ExampleStream, specials: Specials, *, batch_size: int, mask_prob: float, seed: int,
                 eval_streams: dict[str, ExampleStream] | None = None, eval_batches: int = 20, pad_to_longest: bool = True,
                 pair_head: str | None = None, ngram: int = 1, masker=None) -> None:
        self.specials = specials
        self.pair_head = pair_head or ("nsp" if stream.pairs else None)
        self.sum_keys = _MLM_KEYS + (tuple(f"{self.pair_head}_{k}" for k in ("loss_sum", "count", "correct")) if self.pair_head else ())
        self.pad_to_longest = pad_to_longest
        self.seq_len = stream.seq_len
        self.whole_word = stream.whole_word
        self.mask_seed = seed + 17
        self.eval_mask_seed = seed + 4242
        self.masker = masker or KeyedMasker(specials.vocab_size, specials.mask_id, (specials.cls_id, specials.sep_id, specials.pad_id),
                                            mask_prob, ngram=ngram)
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _batch(self, taken: Drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        s = self.specials
        collate = collate_pairs if self.pair_head else collate_blocks
        batch = collate(taken.examples, s.cls_id, s.sep_id, s.pad_id, self.seq_len, pad_to_longest=False)
        # As wide as the longest row of the whole batch, so a part built alone has the shape of its slice.
        width = taken.widest + (3 if self.pair_head else 2) if self.pad_to_longest else self.seq_len
        batch = {k: v[:, :width].contiguous() if v.dim() == 2 else v for k, v in batch.items()}
        word_starts = batch.get("word_starts") if self.whole_word else None
        inputs, labels = self.masker(batch["input_ids"], batch["special_tokens_mask"], taken.numbers,
                                     self.eval_mask_seed if evaluation else self.mask_seed, word_starts)
        out = {"input_ids": inputs, "attention_mask": batch["attention_mask"], "mlm_labels": labels}
        if "token_type_ids" in batch:
            out["token_type_ids"] = batch["token_type_ids"]
        if self.pair_head:
            out[f"{self.pair_head}_labels"] = batch["nsp_labels"]
        return out

    def normalizer_counts(self, batches) -> dict[str, float]:
        counts = {"mlm": float(sum(int((b["mlm_labels"] != -100).sum()) for b in batches))}
        if self.pair_head:
            counts[self.pair_head] = float(sum(int(b[f"{self.pair_head}_labels"].numel()) for b in batches))
        return counts

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return dict(counts, mlm=max(1.0, counts["mlm"]))

    def _forward(self, model, batch):
        pair_labels = {f"{self.pair_head}_labels": batch[f"{self.pair_head}_labels"]} if self.pair_head else {}
        return model(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"], mlm_labels=batch["mlm_labels"], **pair_labels)

    def _objective(self, out, norms):
        loss = out["mlm_loss_sum"] / norms["mlm"]
        if self.pair_head:
            loss = loss + out[f"{self.pair_head}_loss_sum"] / norms[self.pair_head]
        return loss

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {}
        if sums.get("mlm_count"):
            out["mlm_loss"] = sums["mlm_loss_sum"] / sums["mlm_count"]
            out["mlm_acc"] = sums["mlm_correct"] / sums["mlm_count"]
        head = self.pair_head
        if head and sums.get(f"{head}_count"):
            out[f"{head}_loss"] = sums[f"{head}_loss_sum"] / sums[f"{head}_count"]
            out[f"{head}_acc"] = sums[f"{head}_correct"] / sums[f"{head}_count"]
        return out
