"""``ptm extract-features``: check the options, open the checkpoint, stream rows into the writer.

Everything that can fail on the user's side (flags, the output target, a
missing h5py) is checked before the model is loaded, so mistakes cost nothing.
A summary line goes to stderr; the features go to the output (stdout for -o -).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.features.config import COMBINES, INPUT_FORMATS, POOLS, WORDS, ExtractConfig


def _model_defaults(cfg: ExtractConfig) -> tuple[ExtractConfig, str | None]:
    """``cfg`` with the defaults a sentence-transformers checkpoint was trained with filled in,
    and a line saying so (None when nothing was taken from it)."""
    from dataclasses import replace

    from ptmcli.checkpoint import read_config
    from ptmcli.convert.sentence_transformers import check_embedding, describe

    checkpoint = Path(cfg.checkpoint)
    embedding = check_embedding(read_config(checkpoint).get("sentence_embedding"), str(checkpoint / "config.json"))
    pool = cfg.pool if cfg.pool is not None else "none"
    if embedding is None or (cfg.pool is None and cfg.words != "none"):
        return replace(cfg, pool=pool, normalize=bool(cfg.normalize)), None
    if cfg.pool is None:
        pool = embedding["pool"]
    own = pool == embedding["pool"]
    # Labeled features train a head that later reads the model's unnormalised vectors: not normalised by default.
    normalize = cfg.normalize if cfg.normalize is not None else own and embedding["normalize"] and cfg.task is None
    max_length = cfg.max_seq_length or embedding["max_seq_length"]
    layers = cfg.layers or ("-1" if pool != "none" else None)
    cfg = replace(cfg, pool=pool, normalize=normalize, max_seq_length=max_length, layers=layers)
    if not own:
        return cfg, None
    taken = describe({**embedding, "normalize": normalize, "max_seq_length": max_length})
    return cfg, (f"ptm: {taken}, layer {layers}: as the sentence-transformers model was trained "
                 "(--pool none for per-token vectors)")


def _validate(cfg: ExtractConfig) -> str:
    from ptmcli.features.output import POOLED_ONLY, infer_format

    if cfg.normalize and cfg.pool == "none":
        raise PtmError("--normalize scales pooled vectors: add --pool cls|mean|max|last")
    for flag, value, allowed in (("--input-format", cfg.input_format, INPUT_FORMATS), ("--combine", cfg.combine, COMBINES),
                                 ("--pool", cfg.pool, POOLS), ("--words", cfg.words, WORDS)):
        if value not in allowed:
            raise PtmError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
    for flag, value in (("--batch-size", cfg.batch_size), ("--chunk-size", cfg.chunk_size), ("--max-seq-length", cfg.max_seq_length),
                        ("--threads", cfg.threads)):
        if value is not None and value < 1:
            raise PtmError(f"{flag} {value}: must be positive")
    if cfg.pool != "none" and cfg.words != "none":
        raise PtmError("--pool and --words exclude each other: one vector per text, or one per word")
    if cfg.task is not None:
        from ptmcli.features.labeled_input import check_task

        if cfg.normalize:
            raise PtmError("--normalize with --task: ptm finetune trains its head on the model's own (unnormalised) "
                           "vectors, so stored features must not be normalised (drop --normalize)")

        check_task(cfg.task)
        if cfg.input_format != "auto":
            raise PtmError(f"--input-format {cfg.input_format} reads plain text; with --task the input is labeled data, "
                           "read as ptm finetune reads it (drop one of the two)")
        if cfg.words != "none" and cfg.task != "token-classification":
            raise PtmError(f"--words with --task {cfg.task}: only token-classification data has words to align "
                           "(use --pool for one vector per text)")
    elif cfg.text_columns is not None:
        raise PtmError("--text-columns names the columns of labeled data: use it with --task")
    if cfg.input == "-" and sys.stdin.isatty():
        raise PtmError("no INPUT file given and stdin is a terminal: name a file, or pipe text in (... | ptm extract-features -c CKPT - -o OUT)")
    if cfg.input != "-":
        if not os.path.exists(cfg.input):
            raise PtmError(f"input file {cfg.input} does not exist")
        if os.path.isdir(cfg.input):
            raise PtmError(f"input {cfg.input} is a directory; give one file (or - for stdin)")
    fmt = infer_format(cfg.output, cfg.output_format)
    if fmt in POOLED_ONLY and cfg.pool == "none":
        raise PtmError(f"--output-format {fmt} holds one vector per text: add --pool cls|mean|max|last "
                       "(or write per-token features as jsonl, hdf5 or arrow)")
    if fmt == "hdf5":
        from ptmcli.features.hdf5_writer import import_h5py

        import_h5py()
    return fmt


def _part(config: dict, cfg: ExtractConfig) -> str | None:
    """The network ``--part`` names, None for the checkpoint's default one; refused before the model is loaded
    when the checkpoint holds one network."""
    from ptmcli.checkpoint.loading import check_part
    from ptmcli.models.registry import get_family

    if cfg.part is None:
        return None
    family = get_family(config["arch"])
    check_part(family, config["arch"], cfg.part)
    if config.get("task") is not None:
        raise PtmError(f"--part {cfg.part}: {cfg.checkpoint} is a finetuned {config['task'].get('type')} model, one network")
    return None if cfg.part == family.parts[0] else cfg.part


def _count_lines(path: str) -> int | None:
    """Lines of a plain file, for the progress bar's total (None for stdin or gzip)."""
    if path == "-" or not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        if handle.read(2) == b"\x1f\x8b":
            return None
        handle.seek(0)
        count, last = 0, b"\n"
        while block := handle.read(1 << 24):
            count += block.count(b"\n")
            last = block[-1:]
        return count + (last != b"\n")


def run(cfg: ExtractConfig):
    """Carry out ``cfg``; returns the extraction statistics."""
    import torch

    from ptmcli.features.extract import FeatureExtractor
    from ptmcli.features.layers import build_plan
    from ptmcli.features.model import load_feature_model
    from ptmcli.features.output import open_writer
    from ptmcli.features.readers import iter_records
    from ptmcli.runtime.device import check_precision, resolve_device

    if not cfg.checkpoint:
        raise PtmError("--checkpoint is required: a checkpoint directory or a run directory")
    if not cfg.output:
        raise PtmError("-o/--output is required: a file, a directory (arrow), or - for stdout (jsonl)")
    from dataclasses import replace

    from ptmcli.convert.open import open_checkpoint
    from ptmcli.features.output import check_target, infer_format

    # Before the checkpoint is opened: a transformers directory is converted there.
    check_target(cfg.output, infer_format(cfg.output, cfg.output_format), cfg.overwrite)
    cfg = replace(cfg, checkpoint=str(open_checkpoint(cfg.checkpoint)))
    from ptmcli.checkpoint import read_config
    from ptmcli.finetuning.multitask_checkpoint import select_head

    part = _part(select_head(read_config(Path(cfg.checkpoint)), cfg.head, f"--checkpoint {cfg.checkpoint}"), cfg)
    cfg, defaults_line = _model_defaults(cfg)
    fmt = _validate(cfg)
    if defaults_line:
        print(defaults_line, file=sys.stderr)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model = load_feature_model(cfg.checkpoint, device, head=cfg.head, part=part)
    plan = build_plan(cfg.layers, model.num_layers, cfg.combine, model.family.features_all_layers, cfg.mix_weights, cfg.mix_gamma,
                      model.scalar_mix, str(model.path))
    extractor = FeatureExtractor(model, plan, pool=cfg.pool, normalize=cfg.normalize, words=cfg.words, max_length=cfg.max_seq_length,
                                 batch_size=cfg.batch_size, chunk_size=cfg.chunk_size, precision=cfg.precision, device=device,
                                 task=cfg.task, source=cfg.input)
    if cfg.task is not None:
        from ptmcli.features.labeled_input import iter_labeled_records

        columns = [c.strip() for c in cfg.text_columns.split(",") if c.strip()] if cfg.text_columns else None
        records = iter_labeled_records(cfg.input, cfg.task, columns)
    else:
        records = iter_records(cfg.input, cfg.input_format, cfg.text_field, cfg.text_b_field)
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    bar = None
    if show:
        from tqdm import tqdm

        total = None if cfg.task is not None else _count_lines(cfg.input)
        bar = tqdm(total=total, unit="text", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    started = time.perf_counter()
    try:
        with open_writer(fmt, cfg.output, extractor.layout, overwrite=cfg.overwrite, source=cfg.input) as writer:
            for row in extractor.rows(records, on_batch=bar.update if bar is not None else None):
                writer.write(row)
    finally:
        if bar is not None:
            bar.close()
    _summary(extractor, fmt, cfg, time.perf_counter() - started)
    return extractor.stats


def _summary(extractor, fmt: str, cfg: ExtractConfig, seconds: float) -> None:
    stats, layout = extractor.stats, extractor.layout
    where = "stdout" if cfg.output == "-" else cfg.output
    rate = stats.texts / seconds if seconds > 0 else 0.0
    print(f"ptm: {stats.texts} texts ({stats.tokens} tokens) -> {where} [{fmt}, {layout.granularity} vectors, "
          f"layers {','.join(str(label) for label in layout.labels)}, dim {layout.dim}] in {seconds:.1f}s ({rate:.0f} texts/s)",
          file=sys.stderr)
    if stats.texts == 0:
        print("ptm: warning: the input holds no texts", file=sys.stderr)
    if stats.truncated:
        lines = ", ".join(str(n) for n in stats.truncated_lines)
        where_cut = f" (lines {lines}{', ...' if stats.truncated > len(stats.truncated_lines) else ''})" if lines else ""
        print(f"ptm: warning: {stats.truncated} texts were longer than {layout.max_length} tokens and were cut"
              f"{where_cut}; see --max-seq-length", file=sys.stderr)
    if stats.empty:
        print(f"ptm: warning: {stats.empty} empty lines (their rows hold only special tokens, or nothing)", file=sys.stderr)
    if stats.words_without_tokens:
        print(f"ptm: warning: {stats.words_without_tokens} words have no sub-token (cut off, or dropped by the tokenizer); "
              "their vectors are zeros", file=sys.stderr)
