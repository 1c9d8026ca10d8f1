"""Builder of ``mlm+sop``: masked LM + sentence-order prediction, as ALBERT.

The examples are pairs of consecutive segments of one document, shown in
order or swapped (``sentence_order_plans``), built and masked exactly as
BERT's pairs are, so a process builds any rows alike and resume is exact.
"""

from __future__ import annotations

from ptmcli.pretraining.bert_task import BertPretrainTask
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.masked_lm import example_streams, masked_lm_task
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.pair_plans import sentence_spans
from ptmcli.pretraining.sentence_order_plans import plan_sentence_order


class SentenceOrderStream(ExampleStream):
    """An ``ExampleStream`` of sentence-order pairs; each example's ``is_random_next`` is its SOP label."""

    @property
    def pairs(self) -> bool:
        return True

    def _fill(self) -> None:
        row = int(self.rows[next(self._iter)])
        spans = sentence_spans(self.dataset[row].sentence_ends)
        if len(spans[0]):
            self.pending.extend(plan_sentence_order(row, spans, self.max_pair_tokens, self.rng, short_seq_prob=self.short_seq_prob))


def build(context: ObjectiveContext) -> BertPretrainTask:
    return masked_lm_task(context, example_streams(context, context.config.objective, SentenceOrderStream), "sop")
