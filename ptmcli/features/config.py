"""Everything ``ptm extract-features`` can be told, as one frozen dataclass whose fields are its flags.

Kept free of heavy imports: it is read while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option

INPUT_FORMATS = ("auto", "text", "tokens", "jsonl")
OUTPUT_FORMATS = ("jsonl", "hdf5", "arrow", "npy", "safetensors")
COMBINES = ("none", "mean", "concat", "scalar-mix")
POOLS = ("none", "cls", "mean", "max", "last")
WORDS = ("none", "first", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
# --task: multiple choice has one sequence per choice, so no one row per example to store.
FEATURE_TASKS = ("classification", "pair-classification", "regression", "token-classification")


@dataclass(frozen=True)
class ExtractConfig:
    input: str = option("-", "Input file (plain or gzip), or - for stdin.")
    checkpoint: str | None = option(None, "Checkpoint directory; a run directory (its best/ checkpoint, else its newest); or a Hugging Face model directory (converted for the run).", short="-c", required="always")
    part: str | None = option(None, "ELECTRA: the network whose layers are written. generator: the generator's stack (its projected embeddings and each block's output, at its own width). [default: discriminator, the encoder finetuning reads]", choices=("discriminator", "generator"))
    head: str | None = option(None, "A multi-task checkpoint's head whose settings (its learned scalar mix) apply; the encoder is shared by all heads.")
    output: str | None = option(None, "Where the features go: a file (jsonl, hdf5, npy, safetensors), a directory (arrow), or - for stdout (jsonl).", short="-o", required="always")
    output_format: str | None = option(None, "Output format (default: from the -o suffix: .jsonl/.json, .h5/.hdf5, .npy, .safetensors; - is jsonl; anything else is an arrow directory).", choices=OUTPUT_FORMATS)
    input_format: str = option("auto", "text: one text per line, 'text_a ||| text_b' for a pair; tokens: one whitespace-tokenized sentence per line (no pairs); jsonl: one object per line (default: jsonl when the first line is a JSON object, else text).", choices=INPUT_FORMATS)
    task: str | None = option(None, "Read INPUT as labeled data for this ptm finetune task (TSV/CSV with a header, JSONL, CoNLL columns, read as ptm finetune reads --train) and lay each example out exactly as finetuning does, special tokens included: the features ptm finetune --train-features trains on.", choices=FEATURE_TASKS)
    text_columns: str | None = option(None, "--task: comma-separated text column/field names (default: recognised GLUE-style names, as ptm finetune).")
    text_field: str = option("text", "jsonl: field holding the text (a string, or a list of words for pre-tokenized input).")
    text_b_field: str = option("text_b", "jsonl: field holding the second text of a pair, when present.")
    layers: str | None = option(None, "Comma-separated layer indices into the Transformer blocks / LSTM layers (-1 the last, as google-research/bert's --layers), or 'all': the embedding layer and every block (L + 1 layers, index 0 the embeddings) (default: all for ELMo and scalar-mix, else -1,-2,-3,-4 (as many as the model has)).")
    combine: str = option("none", "How the selected layers become output: none (each layer kept), mean, concat, or scalar-mix (gamma * sum softmax(w)_j * layer_j).", choices=COMBINES)
    mix_weights: str | None = option(None, "scalar-mix: comma-separated weights w, one per selected layer, before the softmax (all equal = the mean) (default: the checkpoint's learned scalar_mix.weights).")
    mix_gamma: float | None = option(None, "scalar-mix: the scale gamma (default: 1 with --mix-weights, else the checkpoint's scalar_mix.gamma).")
    pool: str | None = option(None, "One vector per text instead of one per token: cls (BERT's [CLS]), mean or max over the output positions, last (the last position: GPT's whole-text summary); none keeps one vector per token (default: the pooling a model converted from sentence-transformers was trained with, else none).", choices=POOLS)
    normalize: bool | None = option(None, "Scale each pooled vector to unit length (L2), as sentence-transformers' Normalize module does (default: on for a sentence-transformers model that normalises, read with its own pooling; else off).")
    words: str = option("none", "One vector per whitespace-separated input word, from its sub-tokens: first (the first sub-token, as BERT's NER setup) or mean.", choices=WORDS)
    max_seq_length: int | None = option(None, "Longest sequence the model is given, special tokens included; longer texts are cut (pairs: the longer text first) (default: the model's limit).")
    batch_size: int = option(32, "Texts per forward pass.")
    chunk_size: int = option(10000, "Texts read, sorted by length and written back in input order at a time; memory stays bounded by it.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    precision: str = option("fp32", "fp32, bf16 (autocast; features are written as float32) or fp16 (CUDA only).", choices=PRECISIONS)
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice).")
    overwrite: bool = option(False, "Replace an existing output.")
    progress: bool | None = option(None, "Progress bar on stderr (default: when stderr is a terminal).")
