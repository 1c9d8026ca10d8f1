"""``ptm tokenize encode``: resolve flags, encode, print the summary line."""

from __future__ import annotations

import os
import re
import sys
import time

from ptmcli.errors import PtmError
from ptmcli.training.launch import from_torchrun_env

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str, flag: str = "--shard-size") -> int:
    """Bytes from "256MB", "1GB", "512MiB", "1.5G" or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise PtmError(f"{flag} {text!r}: expected a size such as 256MB, 1GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[unit])


def run(*, inputs: list[str], tokenizer: str, out: str, workers: int | None = None, shard_size: str = "256MB",
        fmt: str = "auto", text_field: str = "text", tsv_column: str | None = None, errors: str = "strict",
        overwrite: bool = False, split_sentences: bool = True, word_starts: bool = True,
        word_segmenter: str = "tokenizer", document_boundary: str = "blank", pairs: bool = False, pair_fields: str = "source,target",
        target_tokenizer: str | None = None, progress: bool | None = None) -> dict:
    from ptmcli.data.encode import encode_to_shards, summary_line
    from ptmcli.textio.inputs import ERROR_MODES, FORMATS

    started = time.monotonic()
    if fmt not in FORMATS:
        raise PtmError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if errors not in ERROR_MODES:
        raise PtmError(f"--errors {errors!r}: choose one of {', '.join(ERROR_MODES)}")
    fields = tuple(f.strip() for f in pair_fields.split(","))
    if len(fields) != 2 or not all(fields) or fields[0] == fields[1]:
        raise PtmError(f"--pair-fields {pair_fields!r}: give two different JSON keys, source first (e.g. source,target)")
    launch = from_torchrun_env()
    rank, world_size = launch.rank, launch.world_size
    if workers is None:
        workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        if world_size > 1:  # ranks on one machine share its cores
            workers = max(1, workers // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    column: str | int | None = tsv_column
    if tsv_column is not None and tsv_column.isdigit():
        column = int(tsv_column)
    manifest = encode_to_shards(
        inputs, tokenizer, out, workers=workers, shard_size_bytes=parse_size(shard_size), fmt=fmt,
        text_field=text_field, tsv_column=column, errors=errors, overwrite=overwrite,
        split_sentences=split_sentences, word_starts=word_starts, word_segmenter=word_segmenter,
        document_boundary=document_boundary, progress=progress, rank=rank, world_size=world_size, pairs=pairs, pair_fields=fields,
        target_tokenizer_dir=target_tokenizer,
    )
    if rank == 0:
        print(f"ptm: {summary_line(manifest, time.monotonic() - started)} -> {out}", file=sys.stderr)
        for unbroken in manifest["input"].get("unbroken_files", [])[:3]:
            print(f"ptm: warning: {unbroken['file']} has no blank line, so its {unbroken['lines']:,} lines became one "
                  "document (no held-out documents, NSP pairs from one text); if it holds one sentence or paragraph "
                  "per line, encode it with --document-boundary line", file=sys.stderr)
    return manifest
