"""`ptm predict`: flags come from PredictConfig's fields; the work is in ptmcli.commands.predict."""

from __future__ import annotations

import inspect

import typer

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.evaluation.predict_config import PredictConfig

SHORT_HELP = "Predict with a finetuned checkpoint: labels, scores, tags or choices for unlabeled text."
HELP = """Run a finetuned checkpoint on unlabeled input and write one prediction per example to stdout, in input order.

INPUT is a file (plain or gzip) or - for stdin (the default): TSV/CSV with a header or JSON lines, read as ptm finetune reads them (a label column is ignored); plain lines, one text per line ('text_a ||| text_b' for pair tasks, 'context ||| choice ||| choice ...' for multiple choice); CoNLL columns or one whitespace-tokenized sentence per line for token classification.

Output: JSON lines (label, score and probabilities; score for regression; tags and entity spans for token classification; the chosen index for multiple choice), or --output-format tsv. The input streams through in chunks; a summary line goes to stderr.

Examples:

ptm predict -c runs/sst2 new.tsv > predictions.jsonl

echo "a gripping, funny and moving film" | ptm predict -c runs/sst2

echo "A man is playing a guitar. ||| A man plays music." | ptm predict -c runs/stsb

ptm predict -c runs/ner conll2003/test.txt --output-format tsv | head

ptm predict -c runs/copa copa/val.jsonl --precision bf16 | jq .choice
"""


def _predict(input: str = "-", **flags) -> None:
    from ptmcli.commands.predict import run
    from ptmcli.config_fields import merge

    run(merge(PredictConfig, {}, {"input": input, **flags}))


_INPUT = inspect.Parameter(
    "input", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
    default=typer.Argument("-", metavar="[INPUT|-]", help="Input file (plain or gzip), or - for stdin.", show_default=False),
)

predict = with_parameters(_predict, [_INPUT, *cli_parameters(PredictConfig, skip=("input",))])
