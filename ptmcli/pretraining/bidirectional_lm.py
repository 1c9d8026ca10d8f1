"""Builder of the ``bilm`` objective: ELMo's forward and backward LMs over packed sentences."""

from __future__ import annotations

from ptmcli.pretraining.elmo_task import ElmoPretrainTask
from ptmcli.pretraining.masked_lm import example_streams
from ptmcli.pretraining.objective_context import ObjectiveContext


def build(context: ObjectiveContext) -> ElmoPretrainTask:
    cfg = context.config
    train, evaluation = example_streams(context, "mlm")  # full sentences packed into blocks; no masking happens
    return ElmoPretrainTask(train, context.tokenizer, batch_size=cfg.batch_size, seed=cfg.seed,
                            eval_streams=evaluation, eval_batches=cfg.eval_batches)
