"""`ptm generate`: flags come from GenerateConfig's fields; the work is in ptmcli.commands.generate."""

from __future__ import annotations

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.evaluation.generate_config import GenerateConfig

SHORT_HELP = "Generate text from a GPT, BART or T5 checkpoint, or a BERT finetuned for seq2seq: one output line per input line."
HELP = """Generate text for every line of the input (a file given with --input, or stdin) and write one line per input to stdout, in order, for pipelines.

A GPT checkpoint continues each line (the prompt); a BART checkpoint reads each line as a source and writes the decoded target, and so does a BERT finetuned with --task seq2seq (UniLM: each new token predicted at a [MASK] after the source and the output so far). Greedy decoding by default; --num-beams K for beam search (--length-penalty, --early-stopping); --temperature, --top-k, --top-p and --seed for sampling. Inputs are decoded --batch-size at a time, padded, with a key/value cache. Newlines and backslashes inside an output are escaped as \\n, \\r and \\\\. A summary line goes to stderr.

Examples:

echo "The history of" | ptm generate -c runs/gpt-mini --max-new-tokens 30

ptm generate -c runs/bart-multi30k --input test.en --num-beams 4 --length-penalty 1.0 > test.hyp.de

ptm generate -c runs/gpt-mini -i prompts.txt --top-p 0.9 --temperature 0.8 --seed 3
"""


def _generate(**flags) -> None:
    from ptmcli.commands.generate import run
    from ptmcli.config_fields import merge

    run(merge(GenerateConfig, {}, flags))


generate = with_parameters(_generate, cli_parameters(GenerateConfig))
