"""``ptm eval --sample``: continuations of prompts from a causal LM, printed to stdout.

Each prompt is encoded like a document of the training stream: after the
end-of-text token, which is how every document after the first began in
pretraining (``ptmcli.pretraining.clm_task``). Generation stops at the
tokenizer's end-of-text (eos, else [SEP]) unless ``--ignore-eos``.
Text output is one continuation per line; ``--json`` prints one object per
sample: prompt, sample index, text, token count and why it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from ptmcli.errors import PtmError, where
from ptmcli.evaluation.config import EvalConfig
from ptmcli.evaluation.results import print_json


def read_prompts(samples: list[str]) -> Iterator[str]:
    """The ``--sample`` values; ``-`` stands for the non-empty lines of stdin."""
    for sample in samples:
        if sample != "-":
            yield sample
            continue
        for number, raw in enumerate(sys.stdin.buffer, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise PtmError(f"{where('<stdin>', number)}: invalid UTF-8 (byte 0x{raw[err.start]:02x})") from None
            if text.strip():
                yield text


def check_sampling_flags(cfg: EvalConfig) -> None:
    if cfg.max_new_tokens < 1:
        raise PtmError(f"--max-new-tokens {cfg.max_new_tokens}: must be positive")
    if cfg.temperature < 0:
        raise PtmError(f"--temperature {cfg.temperature}: must be 0 (greedy) or positive")
    if cfg.top_k < 0:
        raise PtmError(f"--top-k {cfg.top_k}: must be 0 (no limit) or positive")
    if not 0.0 < cfg.top_p <= 1.0:
        raise PtmError(f"--top-p {cfg.top_p}: must be in (0, 1]")
    if cfg.num_samples < 1:
        raise PtmError(f"--num-samples {cfg.num_samples}: must be positive")


def continuation_text(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add to the prompt (decoded together, so a word split across them joins up)."""
    head = tokenizer.decode(prompt_ids)
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(head):] if full.startswith(head) else tokenizer.decode(new_ids)


def run_samples(loaded, cfg: EvalConfig, device: torch.device) -> None:
    """Generate ``cfg.num_samples`` continuations of every prompt and print them as they come."""
    from ptmcli.evaluation.language_model import resolve_context
    from ptmcli.models.generation import generate
    from ptmcli.runtime.device import autocast

    if not loaded.family.generates:
        raise PtmError(f"--sample needs a causal language model (gpt); this checkpoint is {loaded.arch}, "
                       "which does not generate text: score it with --data instead")
    check_sampling_flags(cfg)
    tokenizer = loaded.tokenizer
    context = resolve_context(loaded, cfg.context)
    if context < 2:
        raise PtmError(f"--context {context}: generation needs at least 2 positions")
    end_ids = [i for i in (tokenizer.eos_id, tokenizer.sep_id) if i is not None]
    start = end_ids[:1]
    stop_ids = [] if cfg.ignore_eos else end_ids
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    for prompt in read_prompts(cfg.sample or []):
        prompt_ids = tokenizer.encode_batch([prompt])[0] if prompt.strip() else []
        if not start and not prompt_ids:
            raise PtmError("an empty prompt needs an end-of-text token to start from, and this tokenizer has none")
        with autocast(cfg.precision, device):
            continuations = generate(
                loaded.model, start + prompt_ids, num_samples=cfg.num_samples, max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, stop_ids=stop_ids,
                generator=generator, context=context,
            )
        for index, continuation in enumerate(continuations):
            text = continuation_text(tokenizer, prompt_ids, continuation.ids)
            if cfg.json:
                print_json({"prompt": prompt, "sample": index, "text": text, "tokens": len(continuation.ids),
                            "stopped": continuation.stopped})
            else:
                sys.stdout.write(text.replace("\n", " ").strip() + "\n")
                sys.stdout.flush()
