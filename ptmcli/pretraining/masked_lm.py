"""Builder of the masked-LM objectives: ``mlm+nsp`` (BERT's sentence pairs) and ``mlm`` (packed full sentences)."""

from __future__ import annotations

from ptmcli.pretraining.bert_task import BertPretrainTask, Specials
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.objective_context import ObjectiveContext


def example_streams(context: ObjectiveContext, objective: str):
    """(training stream, evaluation streams) of BERT-style examples for ``objective``."""
    cfg, tokenizer = context.config, context.tokenizer
    separator = tokenizer.sep_id if tokenizer.sep_id is not None else context.end_id

    def make(ds, rows, seed, shuffle=True):
        return ExampleStream(ds, rows, objective, cfg.seq_len, seed, separator_id=separator,
                             short_seq_prob=cfg.short_seq_prob, whole_word=cfg.whole_word_mask, shuffle=shuffle)

    return make(context.dataset, context.train_rows, cfg.seed), {name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets}


def build(context: ObjectiveContext) -> BertPretrainTask:
    cfg, tokenizer = context.config, context.tokenizer
    train, evaluation = example_streams(context, cfg.objective)
    specials = Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size)
    return BertPretrainTask(train, specials, batch_size=cfg.batch_size, mask_prob=cfg.mask_prob, seed=cfg.seed,
                            eval_streams=evaluation, eval_batches=cfg.eval_batches, pad_to_longest=not cfg.compile)
