"""``ptm generate``: one output line per input line, from a GPT, BART or T5 checkpoint or a BERT finetuned as
UniLM's seq2seq LM, for pipelines.

Inputs are read line by line (a file or stdin) and decoded ``--batch-size`` at a
time through ``ptmcli.models.generation.decode``: greedy, sampling or beam
search, the same code ``ptm eval --sample`` and finetuning's evaluation use.
Each output is written and flushed as soon as its batch is done, so a
downstream ``head`` sees results early. A GPT prompt is framed like a document
of its training stream (after the end-of-text token) and its output is the
continuation; a BART input is a source, framed as the encoder saw it, and its
output the decoded target. Newlines and backslashes inside an output are
escaped (``\\n``, ``\\r``, ``\\\\``) so that line ``i`` of the output always
answers line ``i`` of the input.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator

from ptmcli.errors import PtmError
from ptmcli.evaluation.generate_config import GenerateConfig
from ptmcli.tasks import SEQ2SEQ


def check_flags(cfg: GenerateConfig) -> None:
    """Refuse impossible flags before any file is read or model loaded."""
    if not cfg.checkpoint:
        raise PtmError("--checkpoint is required: a GPT or BART checkpoint directory, or its run directory")
    for flag, value in (("--max-new-tokens", cfg.max_new_tokens), ("--num-beams", cfg.num_beams),
                        ("--batch-size", cfg.batch_size), ("--threads", cfg.threads)):
        if value is not None and value < 1:
            raise PtmError(f"{flag} {value}: must be at least 1")
    if cfg.min_new_tokens < 0:
        raise PtmError(f"--min-new-tokens {cfg.min_new_tokens}: must be 0 or more")
    if cfg.temperature is not None and cfg.temperature < 0:
        raise PtmError(f"--temperature {cfg.temperature}: must be 0 (greedy) or positive")
    if cfg.top_k < 0:
        raise PtmError(f"--top-k {cfg.top_k}: must be 0 (no limit) or positive")
    if not 0.0 < cfg.top_p <= 1.0:
        raise PtmError(f"--top-p {cfg.top_p}: must be in (0, 1]")
    sampling = bool(cfg.temperature) or cfg.top_k > 0 or cfg.top_p < 1.0
    if cfg.num_beams > 1 and sampling:
        raise PtmError(f"--num-beams {cfg.num_beams} is deterministic beam search: drop --temperature, --top-k and --top-p")


def escape(text: str) -> str:
    """One line whatever the text holds; ``\\`` is escaped first so the escapes stay unambiguous."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _inputs(path: str) -> Iterator[str]:
    from ptmcli.textio.lines import TextLines

    with TextLines(path) as lines:
        for _, line in lines:
            yield line


def _batches(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(cfg: GenerateConfig) -> int:
    """Carry out ``cfg``; returns the number of inputs answered."""
    import torch

    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.models.generation import Settings, decode
    from ptmcli.models.registry import FAMILIES
    from ptmcli.runtime.device import autocast, check_precision, resolve_device

    started = time.perf_counter()
    check_flags(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    lines = _inputs(cfg.input)
    first = next(lines, None)  # a missing or unreadable input fails before the model loads
    loaded = load_checkpoint(cfg.checkpoint, device, note_initialised=False)
    family, tokenizer, model = loaded.family, loaded.tokenizer, loaded.model
    seq2seq = family.is_encoder_decoder
    task = loaded.config.get("task") or {}
    prefix_lm = family.prefix_lm and task.get("type") == SEQ2SEQ
    if prefix_lm:  # an encoder finetuned as UniLM's seq2seq LM decodes behind its source
        from ptmcli.models.prefix_lm import PrefixLM

        model, seq2seq = PrefixLM(model, family, tokenizer.mask_id), True
    if not (family.generates or seq2seq):
        able = ", ".join(sorted(name for name, f in FAMILIES.items() if f.generates or f.is_encoder_decoder))
        prefix = ", ".join(sorted(name for name, f in FAMILIES.items() if f.prefix_lm))
        raise PtmError(f"--checkpoint {cfg.checkpoint}: a {loaded.arch} model does not generate text (these do: {able}; "
                       f"{prefix} once finetuned with --task seq2seq)")
    model.eval()
    limit = family.position_limit(model.config)
    max_new = cfg.max_new_tokens
    if limit is not None and max_new > limit - 1:
        # The first decoder position holds the start token (BART) or the prompt's last token (GPT).
        print(f"ptm generate: --max-new-tokens {max_new} capped at {limit - 1}: the model has {limit} positions",
              file=sys.stderr)
        max_new = limit - 1
    framing = family.framing(tokenizer)
    # What a source may hold: the encoder's positions (a decoder-only prompt keeps its end itself); a prefix LM's
    # source and output share them, so its source keeps the length finetuning gave it.
    room = None if limit is None or not seq2seq else limit - len(framing.prefix) - len(framing.suffix)
    if prefix_lm:
        longest_source = int(task.get("max_source_len", limit // 2))
        room = longest_source - len(framing.prefix) - len(framing.suffix)
        if max_new > limit - longest_source:
            max_new = limit - longest_source
            print(f"ptm generate: --max-new-tokens capped at {max_new}: sources of up to {longest_source} tokens and the "
                  f"output share the model's {limit} positions", file=sys.stderr)
    end_ids = [i for i in (tokenizer.eos_id, tokenizer.sep_id) if i is not None]
    sampling = bool(cfg.temperature) or cfg.top_k > 0 or cfg.top_p < 1.0
    temperature = cfg.temperature if cfg.temperature is not None else (1.0 if sampling else 0.0)
    settings = Settings(
        max_new_tokens=max_new, min_new_tokens=min(cfg.min_new_tokens, max_new), num_beams=cfg.num_beams,
        length_penalty=cfg.length_penalty, early_stopping=cfg.early_stopping, temperature=temperature,
        top_k=cfg.top_k, top_p=cfg.top_p, stop_ids=() if cfg.ignore_eos else tuple(end_ids[:1]),
        forced_bos_id=getattr(model.config, "forced_bos_token_id", None), pad_id=framing.pad_id,
    )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    count = cut = 0
    for batch in _batches(itertools.chain([] if first is None else [first], lines), cfg.batch_size):
        encoded = tokenizer.encode_batch(batch)
        if room is not None:
            cut += sum(len(ids) > room for ids in encoded)
            encoded = [ids[:room] for ids in encoded]
        inputs = [list(framing.prefix) + ids + list(framing.suffix) for ids in encoded]
        if not all(inputs):
            raise PtmError("an empty input needs a start token, and this checkpoint's tokenizer has none")
        with autocast(cfg.precision, device):
            results = decode(model, inputs, settings, generator=generator)
        for ids, (best, *_) in zip(encoded, results, strict=True):
            text = tokenizer.decode(best.ids) if seq2seq else _continuation(tokenizer, ids, best.ids)
            sys.stdout.write(escape(text.strip()) + "\n")
        sys.stdout.flush()
        count += len(batch)
    seconds = time.perf_counter() - started
    note = f"; {cut} inputs cut to the encoder's {room} tokens" if cut else ""
    print(f"ptm generate: {count} {'input' if count == 1 else 'inputs'} in {seconds:.1f} s with {loaded.arch}"
          f"{note}", file=sys.stderr)
    return count


def _continuation(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    from ptmcli.evaluation.sampling import continuation_text

    return continuation_text(tokenizer, prompt_ids, new_ids)
