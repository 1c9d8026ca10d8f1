"""``ptm eval`` of a checkpoint finetuned with ``--task seq2seq``: teacher-forced loss, then the generated
outputs scored by BLEU and chrF (sacrebleu, signatures reported) and, when asked, ROUGE (rouge-score).

The test pairs are read (``--data`` TSV/JSONL, or ``--source-file``/``--target-file``) and the metrics'
packages found before the weights load, so a bad line or a missing package fails at once.
``--predictions FILE`` gets one generated line per input, in input order (newlines inside an output
escaped, as ``ptm generate`` writes them), written in one rename once every output is known.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ptmcli.errors import PtmError


def evaluate_seq2seq(checkpoint, cfg) -> dict[str, Any]:
    from ptmcli.finetuning import seq2seq
    from ptmcli.finetuning.task_model import load_task_model
    from ptmcli.runtime.device import resolve_device
    from ptmcli.tasks.seq2seq_data import read_set

    if cfg.batch_size < 1:
        raise PtmError(f"--batch-size {cfg.batch_size}: must be positive")
    metrics = seq2seq.parse_metrics(cfg.metrics)
    if "rouge" in metrics:
        seq2seq.rouge([], [])  # a missing rouge-score fails now, not after generating
    pairs = read_set(cfg.data, cfg.source_file, cfg.target_file, "--data")
    if pairs is None:
        raise PtmError("--data is required: source<TAB>target TSV or JSONL, or --source-file with --target-file")
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    model, config, tokenizer = load_task_model(checkpoint, device)
    task = config["task"]
    source_len, target_len = int(task.get("max_source_len", 128)), int(task.get("max_target_len", 128))
    num_beams = cfg.num_beams if cfg.num_beams is not None else int(task.get("num_beams", 1))
    seq2seq = seq2seq.style(model.family, config["arch"], str(checkpoint))  # an encoder-decoder, or UniLM's prefix LM
    framing = model.family.framing(tokenizer)
    rows = seq2seq.encode_pairs(pairs, tokenizer, framing, source_len, target_len)
    seq2seq.announce_cuts(rows, "data", source_len, target_len)
    settings = seq2seq.generation_settings(model.lm, tokenizer, framing, target_len, num_beams)
    batch_of = seq2seq.evaluation_collator(framing.pad_id, model.lm, tokenizer)
    result, hypotheses = seq2seq.evaluate_rows(model, rows, tokenizer, settings, batch_of, batch_size=cfg.batch_size,
                                               device=device, precision=cfg.precision, metrics=metrics)
    if cfg.predictions:
        from ptmcli.textio.atomic import atomic_write_text

        atomic_write_text(cfg.predictions, "".join(seq2seq.escape(text) + "\n" for text in hypotheses))
    # The table shortens long values: the signatures, which say how to reproduce the scores, get a line of their own.
    print(f"ptm eval: sacrebleu signatures: BLEU {result['bleu_signature']}; chrF {result['chrf_signature']}", file=sys.stderr)
    data = cfg.data if cfg.data is not None else f"{cfg.source_file} -> {cfg.target_file}"
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "task": task["type"], "data": str(data)}
    out.update(result)
    out.update(num_beams=num_beams, seconds=round(time.perf_counter() - started, 2), metric=task.get("metric"))
    return out
