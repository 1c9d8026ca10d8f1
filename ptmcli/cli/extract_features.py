"""`ptm extract-features`: flags come from ExtractConfig's fields; the work is in ptmcli.commands.extract_features."""

from __future__ import annotations

import inspect

import typer

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.features.config import ExtractConfig

SHORT_HELP = "Extract contextual features (BERT/GPT/ELMo layers) from a checkpoint."
HELP = """Write a checkpoint's contextual vectors for each input text: per sub-token, per word, or pooled per text.

INPUT holds one text per line ('text_a ||| text_b' for a pair), whitespace-tokenized sentences (--input-format tokens), or JSON lines; gzip or not; - (the default) reads stdin. With --task TASK it is labeled data (TSV/CSV, JSONL, CoNLL), read and laid out as ptm finetune --task TASK does: the features ptm finetune --train-features trains on.

Layers: --layers -1,-2,-3,-4 indexes the Transformer blocks (LSTM layers for ELMo), -1 the last; --layers all adds the embedding layer (L + 1 layers). --combine mean|concat|scalar-mix merges them.

Output by the -o suffix: .jsonl (google-research/bert's extract_features.py layout; - streams it to stdout), .h5/.hdf5 (allennlp's elmo command layout; needs h5py), .npy/.safetensors (pooled vectors), or a directory of Arrow feature shards. Rows keep the input order; texts are batched by length inside chunks of --chunk-size.

Examples:

ptm extract-features -c runs/bert-mini input.txt -o features.jsonl --layers -1,-2,-3,-4

ptm extract-features -c runs/bert-mini sst2.txt -o sst2.npy --pool mean --layers -1 --precision bf16

ptm extract-features -c runs/elmo conll.txt --input-format tokens --words first --layers all -o conll.h5

ptm extract-features -c runs/bert-mini conll2003/train.txt --task token-classification --words first --layers all -o conll-train/

ptm extract-features -c runs/electra-mini input.txt --part generator --layers all -o generator.jsonl

echo 'Who was Jim Henson ? ||| Jim Henson was a puppeteer' | ptm extract-features -c runs/bert-mini - -o - --layers -1 | head -c 300
"""


def _extract(input: str = "-", **flags) -> None:
    from ptmcli.commands.extract_features import run
    from ptmcli.config_fields import merge

    run(merge(ExtractConfig, {}, {"input": input, **flags}))


_INPUT = inspect.Parameter(
    "input", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
    default=typer.Argument("-", metavar="[INPUT|-]", help="Input file (plain or gzip), or - for stdin.", show_default=False),
)

extract_features = with_parameters(_extract, [_INPUT, *cli_parameters(ExtractConfig, skip=("input",))])
