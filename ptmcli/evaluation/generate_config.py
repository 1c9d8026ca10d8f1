"""Everything ``ptm generate`` can be told, as one frozen dataclass whose fields are its flags.

Kept free of heavy imports: it is read while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class GenerateConfig:
    checkpoint: str | None = option(None, "Checkpoint directory (a GPT or BART model), or a run directory.", short="-c", required="always")
    input: str = option("-", "File with one input per line (a GPT prompt, a BART source), or - for stdin.", short="-i")
    max_new_tokens: int = option(50, "Tokens to generate per input at most (capped by the model's positions).")
    min_new_tokens: int = option(0, "No end-of-text token before this many new tokens.")
    num_beams: int = option(1, "Beam search with this many beams; 1 is greedy decoding or sampling.")
    length_penalty: float = option(1.0, "Beam search: a finished beam scores its log-probability / length ** this (above 1 favours longer outputs).")
    early_stopping: bool = option(False, "Beam search: stop an input as soon as it has --num-beams finished beams, instead of when no running beam can beat them.")
    temperature: float | None = option(None, "Sampling temperature; 0 is greedy. Default: 0, or 1 when --top-k or --top-p is given.")
    top_k: int = option(0, "Sample from the k most likely tokens only; 0: no limit.")
    top_p: float = option(1.0, "Sample from the smallest set of most likely tokens whose probability reaches p.")
    seed: int = option(0, "Seed for sampling (the same seed gives the same outputs).")
    batch_size: int = option(16, "Inputs decoded together (padded to the longest).")
    ignore_eos: bool = option(False, "Keep generating past the end-of-text token.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    precision: str = option("fp32", "fp32, bf16 (autocast) or fp16 (CUDA only).", choices=PRECISIONS)
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice).")
