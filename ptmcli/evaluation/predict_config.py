"""Everything ``ptm predict`` can be told, as one frozen dataclass whose fields are its flags.

Kept free of heavy imports: it is read while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option

INPUT_FORMATS = ("auto", "tsv", "csv", "jsonl", "text", "conll")
OUTPUT_FORMATS = ("jsonl", "tsv")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class PredictConfig:
    input: str = option("-", "Input file (plain or gzip), or - for stdin.")
    checkpoint: str | None = option(None, "Finetuned checkpoint directory, or a run directory (its best/ checkpoint).", short="-c")
    head: str | None = option(None, "A multi-task checkpoint's head to predict with (ptm finetune --tasks; its heads are listed when it is missing).")
    format: str = option("auto", "Input format. tsv/csv: a header, then one example per row (a label column is ignored); jsonl: one object per line, fields as ptm finetune reads them; text: one text per line ('text_a ||| text_b' for a pair, 'context ||| choice ||| choice ...' for multiple choice, whitespace-separated words for token classification); conll: one word per line, a blank line between sentences (tag columns are ignored). auto: by the file's extension, else its first lines: JSON, a header naming known columns, CoNLL words (token classification), else text.", choices=INPUT_FORMATS)
    text_columns: str | None = option(None, "tsv/csv/jsonl: comma-separated text column/field names (default: the columns the checkpoint was finetuned with when the input has them, else recognised GLUE-style names, as ptm finetune).")
    output_format: str = option("jsonl", "jsonl: one object per example (label, score, probabilities; tags and entity spans for token classification); tsv: the input texts, then label and score (token classification: one 'word TAB tag' line per word, a blank line between sentences).", choices=OUTPUT_FORMATS)
    batch_size: int = option(32, "Examples per forward pass.")
    chunk_size: int = option(1000, "Examples read, predicted and written at a time: memory stays bounded by it, and output starts after the first chunk.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    precision: str = option("fp32", "fp32, bf16 (autocast) or fp16 (CUDA only).", choices=PRECISIONS)
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice).")
