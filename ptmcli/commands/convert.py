"""``ptm convert``: read SRC in ptm's terms, write it as DST's format, say what happened."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ptmcli.convert.options import ConvertConfig
from ptmcli.errors import PtmError


def run(src: str, dst: str, cfg: ConvertConfig) -> dict:
    """Convert ``src`` to ``dst``; returns a summary (format, class, notes, seconds)."""
    from ptmcli.convert.detect import source_kind, target_for
    from ptmcli.textio.atomic import check_output_dir

    started = time.perf_counter()
    kind = source_kind(src)
    target = target_for(kind, cfg.to)
    if cfg.hf_class and target != "hf":
        raise PtmError(f"--hf-class applies to --to hf only (converting to {target})")
    if cfg.binary and target != "word2vec":
        raise PtmError(f"--binary applies to --to word2vec only (converting to {target})")
    # Fail before reading a large model.
    if target != "word2vec":
        check_output_dir(dst, cfg.overwrite)
    elif Path(dst).is_dir():
        raise PtmError(f"output {dst} is a directory; --to word2vec writes one file")
    elif Path(dst).exists() and not cfg.overwrite:
        raise PtmError(f"output {dst} already exists; pass --overwrite to replace it")

    from ptmcli.convert.sources import read_source

    model = read_source(src, kind)
    if target in ("hf", "onnx") and not model.spec.classes:
        raise PtmError(f"{src}: a {model.spec.arch} checkpoint has no {target} form; "
                       f"ptm convert {src} DST --to word2vec writes its vectors")
    notes = list(model.notes)
    described = f"{model.spec.arch}"
    if target == "ptm":
        from ptmcli.convert.writers import write_ptm

        write_ptm(model, dst, cfg.overwrite)
        described = f"{model.source.get('class')} -> ptm {model.spec.arch} (objective {model.objective or 'null'}"
        described += f", task {model.task['type']})" if model.task else ")"
        if kind == "vectors":
            described = f"{model.source['vectors']} {model.model['hidden_size']}-d vectors ({model.source['class']}) -> ptm {model.spec.arch}"
            described += "".join(f" + {token} (a zero vector for unknown words)" for token in model.source["added_tokens"])
    elif target == "hf":
        from ptmcli.convert.writers import write_hf

        _, cls, more = write_hf(model, dst, cfg.hf_class, cfg.overwrite)
        notes += more
        described = f"ptm {model.spec.arch} -> {cls.name}"
    elif target == "word2vec":
        from ptmcli.convert.word2vec import write_word2vec

        _, count, skipped = write_word2vec(model, dst, cfg.binary, cfg.overwrite)
        width = model.state[model.spec.input_embedding].shape[1]  # ALBERT's table is narrower than its layers
        described = f"{count} {width}-d vectors ({'binary' if cfg.binary else 'text'} word2vec)"
        if skipped:
            notes.append(f"left out {len(skipped)} token(s) containing whitespace, e.g. {skipped[0]!r}")
    else:
        from ptmcli.convert.onnx_export import export_onnx

        _, more = export_onnx(model, dst, cfg.overwrite)
        notes += more
        described = f"ptm {model.spec.arch} -> ONNX"
    seconds = time.perf_counter() - started
    print(f"ptm: converted {src} -> {dst}: {described} in {seconds:.1f}s", file=sys.stderr)
    for what in model.read:
        print(f"ptm: read {what}", file=sys.stderr)
    if model.sentence_embedding is not None and target == "ptm":
        from ptmcli.convert.sentence_transformers import describe

        print(f"ptm: extract-features reads it as the model was trained ({describe(model.sentence_embedding)}), "
              f"finetune with its {model.sentence_embedding['pool']} pooling (--pool to change)", file=sys.stderr)
    for note in notes:
        print(f"ptm: note: {note}", file=sys.stderr)
    return {"target": target, "arch": model.spec.arch, "notes": notes, "seconds": seconds}
