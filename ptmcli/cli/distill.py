"""`ptm distill`: flags come from DistillConfig's fields."""

from __future__ import annotations

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.finetuning.distill_config import DistillConfig

SHORT_HELP = "Distill a finetuned checkpoint into a smaller student (soft targets, hidden states, attention maps)."
HELP = """Task distillation: train a student on a finetuned teacher's soft targets mixed with the hard labels.

The student is a pretrained checkpoint or a preset of the teacher's family; --init-from-teacher
starts it from the teacher's layers (DistilBERT). The loss is alpha x T^2 x KL(teacher || student)
at temperature T plus (1 - alpha) x the label loss, plus optional hidden-state (TinyBERT, through
learned projections) and attention-map terms. The run directory is that of ptm finetune, and
RUN/best is an ordinary finetuned checkpoint of the student (ptm eval and ptm predict read it).
"""
EPILOG = """Examples:

  ptm distill --teacher runs/sst2 --student bert-tiny --task classification --train sst2/train.tsv --dev sst2/dev.tsv -o runs/sst2-tiny

  ptm distill --teacher runs/sst2-base --student bert-medium --init-from-teacher --task classification --train sst2/train.tsv --dev sst2/dev.tsv -o runs/sst2-half --hidden-weight 1 --attention-weight 1

  ptm eval --checkpoint runs/sst2-tiny/best --data sst2/dev.tsv
"""


def _distill(**flags) -> None:
    from ptmcli.commands.distill import run
    from ptmcli.config_fields import merge, read_config_file

    file_values = read_config_file(flags["config"]) if flags.get("config") else {}
    explicit = {name for name, value in flags.items() if value is not None} | set(file_values)
    run(merge(DistillConfig, file_values, flags), explicit)


distill = with_parameters(_distill, cli_parameters(DistillConfig))
