"""Builder of the ``clm`` objective: next-token prediction over packed blocks of documents."""

from __future__ import annotations

from ptmcli.pretraining.clm_task import BlockStream, CausalLMTask
from ptmcli.pretraining.objective_context import ObjectiveContext


def build(context: ObjectiveContext) -> CausalLMTask:
    cfg = context.config

    def make(ds, rows, seed, shuffle=True):
        return BlockStream(ds, rows, cfg.seq_len, seed, eos_id=context.end_id, shuffle=shuffle)

    return CausalLMTask(make(context.dataset, context.train_rows, cfg.seed), batch_size=cfg.batch_size,
                        eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                        eval_batches=cfg.eval_batches)
