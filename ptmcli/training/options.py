"""The options ``ptm pretrain`` and ``ptm finetune`` both take, defined once.

``TrainingOptions`` is the base of both commands' configs (``PretrainConfig``,
``FinetuneConfig``): what the run session (``training/session.py``) reads from
either. The fields are declared in each config, through the functions below
where the two commands define a flag alike, so each command keeps its own
order of flags in ``--help``. Kept free of heavy imports: it runs while
building ``--help``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ptmcli.config_fields import option

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingOptions:
    """What every training config has, and the run session reads.

    ``out``, ``overwrite``, ``resume``: the run directory; ``device``,
    ``threads``, ``precision``: where it computes; ``batch_size``,
    ``grad_accum``: its micro-batch per device and the micro-batches per step;
    ``schedule``, ``clip_norm``, ``log_every``, ``save_every``, ``keep_last``,
    ``progress``: loop settings taken as they are. ``to_dict()`` is what
    ``run.json`` and every checkpoint record as the run's configuration.
    """

    def to_dict(self) -> dict:
        return asdict(self)


def out(contents: str):
    """``-o/--out``: the run directory, whose ``contents`` the help lists."""
    return option(None, f"Run directory: {contents}.", flag="--out", short="-o", required="unless --resume")


def overwrite():
    return option(False, "Replace an existing run directory instead of refusing.")


def keep_last(default: int):
    return option(default, "Keep only the newest N step checkpoints (0 keeps all).")


def device():
    return option("auto", "auto, cpu, cuda or cuda:N.")


def precision(help: str):
    return option("fp32", help, choices=PRECISIONS)


def threads():
    return option(None, "CPU threads for torch [default: all cores].")


def progress():
    return option(None, "Show a progress bar [default: when stderr is a terminal].")


def config_file():
    return option(None, "JSON or TOML file setting any of these options (flags win).")


def tensorboard():
    return option(False, "Also write the metrics.jsonl scalars (training and evaluation) as TensorBoard event files in RUN_DIR/tensorboard/ (needs the tensorboard package).")
