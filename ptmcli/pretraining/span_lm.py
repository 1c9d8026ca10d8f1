"""Builders of SpanBERT's objectives: ``span`` (span masking, MLM loss) and ``span+sbo`` (plus the span
boundary objective), on the packed full-sentence blocks of ``mlm``, without NSP.

The task is BERT's (``bert_task.py``) with the span masker in place of the
token masker; ``span+sbo`` also hands the model each masked token's span
boundaries, which the span boundary head (``models/span_boundary.py``,
attached by :func:`attach_span_boundary`) reads. Its loss is summed with the
MLM loss, both over the masked tokens of the step.
"""

from __future__ import annotations

import torch

from ptmcli.errors import PtmError
from ptmcli.objectives.collate import collate_blocks
from ptmcli.pretraining.bert_task import BertPretrainTask, Specials
from ptmcli.pretraining.examples import Drawn, ExampleStream
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.span_masking import SpanMasker

_SBO_KEYS = ("sbo_loss_sum", "sbo_count", "sbo_correct")


class SpanPretrainTask(BertPretrainTask):
    """MLM (+ SBO) on span-masked full-sentence blocks."""

    def __init__(self, stream: ExampleStream, specials: Specials, *, boundary: bool, mask_prob: float, **options) -> None:
        self.boundary = boundary
        self.span_masker = SpanMasker(specials.vocab_size, specials.mask_id, (specials.cls_id, specials.sep_id, specials.pad_id), mask_prob)
        super().__init__(stream, specials, mask_prob=mask_prob, **options)
        if boundary:
            self.sum_keys = self.sum_keys + _SBO_KEYS

    def _batch(self, taken: Drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        s = self.specials
        batch = collate_blocks(taken.examples, s.cls_id, s.sep_id, s.pad_id, self.seq_len, pad_to_longest=False)
        # As wide as the longest row of the whole batch, so a part built alone has the shape of its slice.
        width = taken.widest + 2 if self.pad_to_longest else self.seq_len
        batch = {k: v[:, :width].contiguous() for k, v in batch.items()}
        masks = self.span_masker(batch["input_ids"], batch["special_tokens_mask"], batch["word_starts"], taken.numbers,
                                 self.eval_mask_seed if evaluation else self.mask_seed)
        out = {"input_ids": masks.input_ids, "attention_mask": batch["attention_mask"], "mlm_labels": masks.labels,
               "token_type_ids": batch["token_type_ids"]}
        if self.boundary:
            out.update(sbo_left=masks.left, sbo_right=masks.right, sbo_offset=masks.offset)
        return out

    def _forward(self, model, batch):
        boundaries = {key: batch[key] for key in ("sbo_left", "sbo_right", "sbo_offset") if key in batch}
        return model(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"],
                     mlm_labels=batch["mlm_labels"], **boundaries)

    def _objective(self, out, norms):
        loss = out["mlm_loss_sum"] / norms["mlm"]
        if self.boundary:
            loss = loss + out["sbo_loss_sum"] / norms["mlm"]
        return loss

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = super()._metrics(sums)
        if sums.get("sbo_count"):
            out["sbo_loss"] = sums["sbo_loss_sum"] / sums["sbo_count"]
            out["sbo_acc"] = sums["sbo_correct"] / sums["sbo_count"]
        return out


def _build(context: ObjectiveContext, boundary: bool) -> SpanPretrainTask:
    cfg, tokenizer = context.config, context.tokenizer
    if not context.dataset.has_word_starts:
        raise PtmError(f"--objective {cfg.objective} masks spans of whole words: {context.dataset.path} was encoded "
                       "without word boundaries (re-encode it without --no-word-starts)")
    separator = tokenizer.sep_id if tokenizer.sep_id is not None else context.end_id

    def make(ds, rows, seed, shuffle=True):
        # The packed blocks of ``mlm``, always with word starts: spans are counted in words.
        return ExampleStream(ds, rows, "mlm", cfg.seq_len, seed, separator_id=separator, whole_word=True, shuffle=shuffle)

    specials = Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size)
    return SpanPretrainTask(make(context.dataset, context.train_rows, cfg.seed), specials, boundary=boundary,
                            batch_size=cfg.batch_size, mask_prob=cfg.mask_prob, seed=cfg.seed,
                            eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                            eval_batches=cfg.eval_batches, pad_to_longest=not cfg.compile)


def build_span(context: ObjectiveContext) -> SpanPretrainTask:
    return _build(context, boundary=False)


def build_span_boundary(context: ObjectiveContext) -> SpanPretrainTask:
    return _build(context, boundary=True)


def attach_span_boundary(model, config) -> None:
    """The ``span+sbo`` row's model preparation: attach the span boundary head as ``sbo``."""
    from ptmcli.models.attached_heads import attach_head
    from ptmcli.models.span_boundary import span_boundary_head

    attach_head(model, "sbo", span_boundary_head(model))
