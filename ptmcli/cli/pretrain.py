"""`ptm pretrain`: flags come from PretrainConfig's fields."""

from __future__ import annotations

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.pretraining.config import PretrainConfig

SHORT_HELP = "Pretrain a model (BERT MLM+NSP, ...) on token shards."
HELP = """Pretrain a model on token shards (from `ptm tokenize encode`).

With no --data, trains on a small Wikipedia sample bundled with ptm (a tokenizer for it
is trained on first use and cached), which is the quickest way to see ptm work.
"""
EPILOG = """Examples:

  ptm pretrain -o runs/sample                          # bundled sample, bert-tiny, ~2 minutes

  ptm pretrain --arch bert --objective mlm+nsp --data shards/ -o runs/bert-mini --preset bert-mini --seq-len 128 --batch-size 32 --lr 1e-4 --max-steps 10000 --save-every 1000 --eval-every 500 --precision bf16

  ptm pretrain --resume runs/bert-mini                 # continue where it stopped
"""


def _pretrain(**flags) -> None:
    from ptmcli.commands.pretrain import run
    from ptmcli.config_fields import merge, read_config_file

    file_values = read_config_file(flags["config"]) if flags.get("config") else {}
    model_table = file_values.pop("model", {}) if isinstance(file_values.get("model"), dict) else {}
    file_values.update(model_table)
    explicit = {name for name, value in flags.items() if value is not None} | set(file_values)
    run(merge(PretrainConfig, file_values, flags), explicit)


pretrain = with_parameters(_pretrain, cli_parameters(PretrainConfig))
