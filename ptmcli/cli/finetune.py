"""`ptm finetune`: flags come from FinetuneConfig's fields."""

from __future__ import annotations

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.finetuning.config import FinetuneConfig

SHORT_HELP = "Finetune a pretrained checkpoint on a labeled task (classification, pairs, regression, tagging, multiple choice, QA, seq2seq)."
HELP = """Finetune a pretrained checkpoint (bert, gpt or elmo) on labeled data.

Full finetuning (--mode finetune) or ELMo-style feature-based use (--mode features: the
pretrained model is frozen and a learned scalar mix of its layers feeds the head), with
ULMFiT's discriminative learning rates, slanted triangular schedule and gradual unfreezing,
and an auxiliary LM loss. With --dev, evaluates every epoch and keeps the best model in RUN/best.

--train-features trains the --mode features head on vectors stored once by ptm extract-features
--task: no encoder runs while training, and RUN/best is an ordinary features-mode checkpoint.

--task seq2seq trains an encoder-decoder (bart) on source/target pairs (a source<TAB>target TSV,
JSONL with "source"/"target", or parallel files: --source-file/--target-file), with teacher forcing
and --label-smoothing; each evaluation scores the generated dev outputs by BLEU and chrF (sacrebleu)
and RUN/best keeps the best BLEU. A bert checkpoint with its MLM head trains as UniLM's seq2seq LM:
[CLS] source [SEP] target [SEP] under the seq2seq attention mask, --target-mask-prob of the target
predicted at [MASK]s.

--tasks tasks.toml trains several tasks at once (MT-DNN): one shared encoder, one head per task,
each batch from one task drawn in proportion to its size (or n ** (1/T)); RUN/best keeps the best
mean of the tasks' main dev metrics. --head NAME continues single-task finetuning from one head.
"""
EPILOG = """Examples:

  ptm finetune --checkpoint runs/bert-mini --task classification --train sst2/train.tsv --dev sst2/dev.tsv -o runs/sst2 --epochs 3 --lr 1e-4

  ptm finetune --checkpoint runs/bert-mini --task token-classification --train conll2003/train.txt --dev conll2003/valid.txt -o runs/ner

  ptm finetune --checkpoint runs/gpt-mini --task pair-classification --train rte/train.tsv --dev rte/dev.tsv -o runs/rte --aux-lm-weight 0.5

  ptm finetune --checkpoint runs/bert-mini --task classification --train sst2/train.tsv --dev sst2/dev.tsv -o runs/sst2-ulmfit --schedule stlr --discriminative-lr 2.6 --gradual-unfreeze

  ptm eval --checkpoint runs/sst2/best --data sst2/dev.tsv

  ptm finetune --checkpoint runs/bert-mini --tasks examples/tasks-glue.toml -o runs/glue-mt
  ptm finetune --checkpoint runs/glue-mt --head rte --task pair-classification --train rte/train.tsv --dev rte/dev.tsv -o runs/rte-mt

  ptm finetune --checkpoint runs/bart-mini --task seq2seq --source-file multi30k/train.en --target-file multi30k/train.de --dev-source-file multi30k/val.en --dev-target-file multi30k/val.de -o runs/en-de --label-smoothing 0.1 --max-len 64

  ptm finetune --checkpoint runs/bert-mini --task seq2seq --train pairs.tsv --dev dev.tsv -o runs/unilm --max-source-len 64 --max-target-len 64

  ptm extract-features -c runs/bert-mini sst2/train.tsv --task classification --pool mean --layers all -o feats/sst2-train
  ptm extract-features -c runs/bert-mini sst2/dev.tsv --task classification --pool mean --layers all -o feats/sst2-dev
  ptm finetune --task classification --train sst2/train.tsv --train-features feats/sst2-train --dev sst2/dev.tsv --dev-features feats/sst2-dev -o runs/sst2-stored
"""


def _finetune(**flags) -> None:
    from ptmcli.commands.finetune import run
    from ptmcli.config_fields import merge, read_config_file

    file_values = read_config_file(flags["config"]) if flags.get("config") else {}
    explicit = {name for name, value in flags.items() if value is not None} | set(file_values)
    run(merge(FinetuneConfig, file_values, flags), explicit)


finetune = with_parameters(_finetune, cli_parameters(FinetuneConfig))
