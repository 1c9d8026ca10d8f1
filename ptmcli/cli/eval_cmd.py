"""`ptm eval`: flags come from EvalConfig's fields; the work is in ptmcli.commands.eval."""

from __future__ import annotations

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.evaluation.config import EvalConfig

SHORT_HELP = "Evaluate a checkpoint: perplexity on text, sample text from a GPT, probe word vectors."
HELP = """Evaluate a pretrained checkpoint on raw text, or generate text with a GPT.

With --data: GPT perplexity over a sliding window (--context, --stride), ELMo forward, backward and average perplexity, BERT MLM loss/accuracy and pseudo-perplexity. Per-token and per-word perplexity (words: whitespace-separated words of the text, so models with different tokenizers compare). A table goes to stderr; --json prints the metrics as JSON on stdout.

With --sample PROMPT (GPT): continuations on stdout, one per line (--json: one object per sample).

A checkpoint finetuned with --task seq2seq: the teacher-forced loss on --data (source<TAB>target TSV or JSONL) or --source-file/--target-file, and the BLEU and chrF (sacrebleu, signatures printed) of its generated outputs; --metrics rouge adds ROUGE-1/2/L (pip install rouge-score); --predictions FILE writes one output line per input.

With --probe similarity|analogy: word vectors (a checkpoint's input embeddings, or a word2vec, GloVe or fastText .vec file given as --checkpoint) on word-similarity pairs (Spearman's rho) or analogy questions (3CosAdd and 3CosMul accuracy among the --restrict most frequent words).

Examples:

ptm eval -c runs/gpt-mini --data wiki.valid.raw --stride 64

ptm eval -c runs/bert-mini --data wiki.valid.raw --max-tokens 5000 --json

ptm eval -c runs/gpt-mini --sample "The history of" --top-p 0.9 --num-samples 3

cat prompts.txt | ptm eval -c runs/gpt-mini --sample - --temperature 0

ptm eval -c vectors.txt --probe similarity --data wordsim353.tsv

ptm eval -c vectors.bin --probe analogy --data questions-words.txt --restrict 30000 --json
"""


def _eval(**flags) -> None:
    from ptmcli.commands.eval import run
    from ptmcli.config_fields import merge

    run(merge(EvalConfig, {}, flags))


eval_command = with_parameters(_eval, cli_parameters(EvalConfig))
