"""Everything ``ptm eval`` can be told, as one frozen dataclass whose fields are its flags.

Kept free of heavy imports: it is read while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option

FORMATS = ("auto", "text", "jsonl", "wikiextractor", "wikitext", "tsv", "csv")
SEQUENCE_MODES = ("packed", "sentence", "line")
PRECISIONS = ("fp32", "bf16", "fp16")
ERROR_MODES = ("strict", "replace", "skip")
PROBES = ("similarity", "analogy")


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str | None = option(None, "Checkpoint directory; a run directory (its best/ checkpoint, else its newest); or a Hugging Face model directory (converted for the run). With --probe, also a word2vec (text or binary), GloVe or fastText .vec file.", short="-c", required="always")
    head: str | None = option(None, "A multi-task checkpoint's head to evaluate (ptm finetune --tasks; its heads are listed when it is missing).")
    data: str | None = option(None, "Text to score: a file, glob, directory or - for stdin (gzip or not). Perplexity for GPT and ELMo; MLM loss and pseudo-perplexity for BERT. With --probe: the word pairs or analogy questions.")
    part: str | None = option(None, "ELECTRA: the network that scores --data. generator: its MLM loss, accuracy and pseudo-perplexity. [default: discriminator, the encoder finetuning reads, which is no language model and scores no text]", choices=("discriminator", "generator"))
    probe: str | None = option(None, "Evaluate word vectors instead: similarity (Spearman's rho of cosines against the human scores of --data, WordSim-353 or SimLex-999) or analogy (3CosAdd and 3CosMul accuracy on --data, Google's questions-words.txt). A checkpoint's word vectors are its input embeddings: a word is its token when it is a single token.", choices=PROBES)
    restrict: int | None = option(None, "--probe analogy: answers are searched among the N most frequent words (the first N rows of a vector file); questions with a word outside them are skipped. 0: every word. (default: 30000)")
    contextual_from: str | None = option(None, "--probe with a checkpoint: a word's vector is its top-layer vector (the mean over its sub-tokens), averaged over up to 100 occurrences in this text, instead of its input embedding.")
    lowercase: bool | None = option(None, "--probe: look words up lowercased (default: when the vocabulary has no uppercase words); --no-lowercase matches case exactly.")
    format: str = option("auto", "Input format. wikitext: WikiText's raw files, one document per ' = Title = ' article (auto-detected from a first line of that shape).", choices=FORMATS)
    text_field: str = option("text", "JSON field (jsonl) or column name (tsv/csv) holding the text.")
    errors: str = option("strict", "Invalid UTF-8 or unparsable lines in --data: stop (strict), replace bad bytes, or skip the line.", choices=ERROR_MODES)
    split_sentences: bool = option(True, "Split lines into sentences before encoding, as `ptm tokenize encode` does; without it each line is encoded whole.")
    context: int | None = option(None, "Longest sequence the model is given, special tokens included (default: the sequence length the checkpoint was trained with, else its number of positions).")
    stride: int | None = option(None, "GPT: tokens the sliding window moves each step; every token is scored once, with at least context - stride tokens of left context (default: context / 2).")
    sequences: str = option("packed", "BERT/ELMo: what one sequence holds. packed: whole sentences up to --context, as in pretraining; sentence: one sentence; line: one line. Longer ones are cut.", choices=SEQUENCE_MODES)
    max_tokens: int | None = option(None, "Score only about this many tokens of --data: reading stops at the end of the sentence that reaches it.")
    pseudo_perplexity: bool = option(True, "BERT: also compute pseudo-perplexity (each token masked in turn: one forward pass per token).")
    sample: list[str] | None = option(None, "GPT: generate a continuation of this prompt (repeatable; - reads prompts from stdin, one per line).")
    max_new_tokens: int = option(50, "Tokens to generate per sample at most.")
    temperature: float = option(1.0, "Sampling temperature; 0 picks the most likely token (greedy).")
    top_k: int = option(0, "Sample only from the k most likely tokens (0: no limit).")
    top_p: float = option(1.0, "Sample only from the smallest set of tokens whose probability reaches p (nucleus sampling; 1: no limit).")
    num_samples: int = option(1, "Continuations per prompt.")
    ignore_eos: bool = option(False, "Keep generating past the end-of-text token.")
    predictions: str | None = option(None, "Finetuned checkpoints: write one JSON line per input (its prediction; class probabilities) to this file; seq2seq: one generated line per input.")
    source_file: str | None = option(None, "seq2seq: test sources, one per line, line-aligned with --target-file (instead of --data).")
    target_file: str | None = option(None, "seq2seq: test references, line i the reference of line i of --source-file.")
    num_beams: int | None = option(None, "seq2seq: beams when generating (1: greedy) [default: the --num-beams the model was finetuned with].")
    metrics: str | None = option(None, "seq2seq: extra metrics beside BLEU and chrF, comma-separated: rouge (ROUGE-1/2/L F1, needs pip install rouge-score).")
    seed: int = option(0, "Seed for the MLM masking and for sampling.")
    batch_size: int = option(16, "Sequences per forward pass (for pseudo-perplexity: masked copies per pass).")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    precision: str = option("fp32", "fp32, bf16 (autocast) or fp16 (CUDA only).", choices=PRECISIONS)
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice).")
    json: bool = option(False, "Print the metrics as one JSON object on stdout (samples: one JSON object per line).")
    progress: bool | None = option(None, "Progress bar on stderr (default: when stderr is a terminal).")
