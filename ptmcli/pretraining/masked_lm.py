"""Builder of the masked-LM objectives: ``mlm+nsp`` (BERT's sentence pairs) and ``mlm`` (packed full sentences)."""

from __future__ import annotations

from ptmcli.pretraining import mask_units
from ptmcli.pretraining.bert_task import BertPretrainTask, Specials
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.objective_context import ObjectiveContext


def example_streams(context: ObjectiveContext, objective: str, stream_class: type[ExampleStream] = ExampleStream):
    """(training stream, evaluation streams) of BERT-style examples for ``objective``."""
    cfg, tokenizer = context.config, context.tokenizer
    separator = tokenizer.sep_id if tokenizer.sep_id is not None else context.end_id
    # N-gram masking chooses whole words too, so it needs the word starts as word and lexicon units do.
    whole_word = mask_units.needs_word_starts(cfg) or _ngram(cfg) > 1

    def make(ds, rows, seed, shuffle=True):
        return stream_class(ds, rows, objective, cfg.seq_len, seed, separator_id=separator,
                            short_seq_prob=cfg.short_seq_prob, whole_word=whole_word, shuffle=shuffle)

    return make(context.dataset, context.train_rows, cfg.seed), {name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets}


def masked_lm_task(context: ObjectiveContext, streams, pair_head: str | None) -> BertPretrainTask:
    """The MLM task over ``streams`` (from :func:`example_streams`), with the sentence-pair head ``pair_head``."""
    cfg, tokenizer = context.config, context.tokenizer
    train, evaluation = streams
    specials = Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size)
    masker = mask_units.build_masker(cfg, tokenizer, context.dataset, (specials.cls_id, specials.sep_id, specials.pad_id),
                                     ngram=_ngram(cfg))
    return BertPretrainTask(train, specials, batch_size=cfg.batch_size, mask_prob=cfg.mask_prob, seed=cfg.seed,
                            eval_streams=evaluation, eval_batches=cfg.eval_batches, pad_to_longest=not cfg.compile,
                            pair_head=pair_head, ngram=_ngram(cfg), masker=masker)


def build(context: ObjectiveContext) -> BertPretrainTask:
    objective = context.config.objective
    return masked_lm_task(context, example_streams(context, objective), "nsp" if objective == "mlm+nsp" else None)


def _ngram(cfg) -> int:
    # A config made by hand for a task alone (tests, tools) may not name --ngram-mask: single tokens then.
    return getattr(cfg, "ngram_mask", 1)
