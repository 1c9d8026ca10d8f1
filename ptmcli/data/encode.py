"""``ptm tokenize encode``: text corpora into ``ptm-shards`` directories.

The main process reads documents (``iter_documents``) and groups them into
chunks; worker processes (``encode_workers``) split each chunk's paragraphs
into sentences, encode them and flatten the result into numpy buffers; the
main process writes the chunks, in input order, as Arrow record batches
(``shard_writer``). Only a few chunks per worker are in flight, so memory
stays flat however large the corpus is. The output directory is built under a
temporary name and renamed into place when complete.

With ``pairs`` the inputs are source/target pairs (``data.pairs``) and the
output is ``kind: "pairs"`` shards; they are encoded in this process, each
side of a batch of pairs in one call on the tokenizer's own threads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from ptmcli.data.encode_workers import ChunkEncoder, chunk_documents
from ptmcli.errors import PtmError

MANIFEST = "manifest.json"
PAIRS_PER_BATCH = 1024


def encode_to_shards(
    inputs: list[str],
    tokenizer_dir: str,
    out_dir: str,
    *,
    workers: int = 2,
    shard_size_bytes: int = 256 << 20,
    fmt: str = "auto",
    text_field: str = "text",
    tsv_column: str | int | None = None,
    errors: str = "strict",
    overwrite: bool = False,
    split_sentences: bool = True,
    word_starts: bool = True,
    word_segmenter: str = "tokenizer",
    document_boundary: str = "blank",
    progress: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    pairs: bool = False,
    pair_fields: tuple[str, str] = ("source", "target"),
    target_tokenizer_dir: str | None = None,
) -> dict:
    """Encode text inputs into a ``ptm-shards`` directory and return its manifest.

    ``pairs``: the inputs hold source/target pairs (``fmt`` auto, tsv or
    jsonl; ``pair_fields`` are the JSON keys), written as ``kind: "pairs"``
    shards; ``target_tokenizer_dir`` encodes the targets with a tokenizer of their own (recorded as the
    manifest's ``target_tokenizer``), for a translation between two languages; the options of documents (sentences, word starts, ``text_field``,
    ``tsv_column``, ``document_boundary``, ``workers``) do not apply.

    ``word_segmenter``: where words begin for the word starts
    (``tokenization.word_segmenters``: the tokenizer's words, or jieba's).

    The directory is built under ``<out_dir>.tmp-<pid>`` and renamed into place
    when complete; on any error (or Ctrl-C) nothing is left behind and an
    existing ``out_dir`` (replaced only with ``overwrite``) is untouched.

    Under data parallelism (``world_size > 1``) each rank encodes its share of
    the inputs (whole files when there are at least as many files as ranks,
    else every ``world_size``-th document) into ``part-r<rank>-NNNNN.arrow``
    files of a shared temporary directory and records them in a partial
    manifest; rank 0 then waits for every rank and writes the manifest (see
    ``merge_rank_manifests``). Other ranks return their partial manifest.
    """
    from ptmcli.textio.inputs import expand_inputs
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    if workers < 1:
        raise PtmError(f"--workers must be at least 1, got {workers}")
    if shard_size_bytes < 64_000:
        raise PtmError(f"--shard-size must be at least 64KB, got {shard_size_bytes} bytes")
    if world_size < 1 or not 0 <= rank < world_size:
        raise PtmError(f"rank {rank} is out of range for world size {world_size}")
    if word_segmenter != "tokenizer":
        from ptmcli.tokenization.word_segmenters import check_available

        if pairs or not word_starts:
            raise PtmError(f"--word-segmenter {word_segmenter} finds where words start, which "
                           f"{'--pairs shards do not store' if pairs else '--no-word-starts leaves out'}")
        check_available(word_segmenter)
    paths = expand_inputs(inputs)
    if world_size > 1 and "-" in paths:
        raise PtmError("stdin ('-') cannot be split across ranks; pass input files when running under torchrun")
    target = os.path.abspath(out_dir)
    _check_target(target, overwrite)
    if pairs:
        from ptmcli.data.pairs import PAIR_FORMATS

        if fmt not in PAIR_FORMATS:
            raise PtmError(f"--format {fmt!r}: pairs are read as {', '.join(PAIR_FORMATS)}")
    if target_tokenizer_dir is not None and not pairs:
        raise PtmError("--target-tokenizer encodes the target side of --pairs; documents have one side")
    tokenizer = PtmTokenizer.load(tokenizer_dir)
    if pairs:
        options = {"pairs": True, "format": fmt, "fields": list(pair_fields), "errors": errors,
                   "shard_size_bytes": shard_size_bytes}
        if target_tokenizer_dir is not None:
            options["target_tokenizer"] = os.path.abspath(target_tokenizer_dir)
            PtmTokenizer.load(target_tokenizer_dir)  # a bad directory is named before any output
    else:
        options = {
            "split_sentences": split_sentences,
            "word_starts": word_starts,
            "word_segmenter": word_segmenter,
            "format": fmt,
            "text_field": text_field,
            "tsv_column": tsv_column,
            "errors": errors,
            "shard_size_bytes": shard_size_bytes,
            "document_boundary": document_boundary,
        }
    staging = _staging_dir(target, world_size)
    if world_size > 1:
        try:
            os.makedirs(staging, exist_ok=True)
            _remove_rank_files(staging, rank)
            manifest = _encode_share(paths, tokenizer, tokenizer_dir, staging, rank, world_size, workers,
                                     progress, options)
            _write_json(os.path.join(staging, f"rank-{rank}.json"), manifest)
        except BaseException:
            _mark_rank_failed(staging, rank)
            raise
        _barrier()
        if rank != 0:
            _barrier()  # rank 0 publishes the directory
            return manifest
        try:
            return merge_rank_manifests(target, world_size, overwrite)
        finally:
            _barrier()
    try:
        os.makedirs(staging)
        manifest = _encode_share(paths, tokenizer, tokenizer_dir, staging, 0, 1, workers, progress, options)
        if manifest["rows"] == 0:
            raise PtmError(_nothing_encoded(manifest))
        _write_json(os.path.join(staging, MANIFEST), manifest)
        _publish(staging, target, overwrite)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _nothing_encoded(manifest: dict) -> str:
    what = "pair" if manifest.get("kind") == "pairs" else "document"
    return f"no tokens: every {what} of {', '.join(manifest['source'][:3])} encoded to nothing"


def _tokenizer_info(tokenizer, tokenizer_dir: str) -> dict:
    # The path lets later commands find the tokenizer without being told; the sha256 is what binds.
    return {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size, "kind": tokenizer.kind,
            "path": os.path.abspath(tokenizer_dir)}


def _encode_share(paths: list[str], tokenizer, tokenizer_dir: str, staging: str, rank: int, world_size: int,
                  workers: int, progress: bool | None, options: dict) -> dict:
    """Encode this rank's share of ``paths`` into ``staging``; the manifest of what was written."""
    if options.get("pairs"):
        return _encode_pairs_share(paths, tokenizer, tokenizer_dir, staging, rank, world_size, progress, options)
    encoder = ChunkEncoder(tokenizer, tokenizer_dir, workers, options["split_sentences"], options["word_starts"],
                           options.get("word_segmenter", "tokenizer"))
    with encoder:
        # Imported once the workers are starting: their start-up overlaps with this.
        from ptmcli.data.shard_writer import ShardWriter
        from ptmcli.textio.inputs import ReadStats, iter_documents, total_input_bytes

        by_file = len(paths) >= world_size
        own_paths = paths[rank::world_size] if by_file else paths
        writer = ShardWriter(staging, prefix=f"part-r{rank}-" if world_size > 1 else "part-",
                             shard_size_bytes=options["shard_size_bytes"], word_starts=options["word_starts"])
        stats = ReadStats()
        counts = {"documents": 0, "empty_documents": 0}
        documents = (d.paragraphs for d in iter_documents(own_paths, options["format"], options["text_field"],
                                                          options["tsv_column"], options["errors"], stats,
                                                          options.get("document_boundary", "blank")))
        if not by_file:
            documents = (d for i, d in enumerate(documents) if i % world_size == rank)
        chunks = ((chunk, stats.bytes_read) for chunk in chunk_documents(documents))
        bar = progress_bar(progress, total_input_bytes(own_paths))
        started = time.monotonic()
        try:
            for encoded, bytes_read in encoder.map(chunks):
                writer.add(encoded)
                counts["documents"] += encoded.rows + encoded.empty_documents
                counts["empty_documents"] += encoded.empty_documents
                bar.update(bytes_read - bar.n)
                rate = counts["documents"] / max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{counts['documents']:,} docs, {rate:,.0f} docs/s", refresh=False)
            writer.close()
            bar.update(stats.bytes_read - bar.n)
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    return writer.manifest(_tokenizer_info(tokenizer, tokenizer_dir), paths, options=options, input={
        "bytes": stats.bytes_read,
        "documents": counts["documents"],
        "empty_documents": counts["empty_documents"],
        "skipped_lines": stats.skipped_lines,
        "replaced_lines": stats.replaced_lines,
        "unbroken_files": [{"file": name, "lines": lines} for name, lines in stats.unbroken_files],
    })


def _encode_pairs_share(paths: list[str], tokenizer, tokenizer_dir: str, staging: str, rank: int, world_size: int,
                        progress: bool | None, options: dict) -> dict:
    """Encode this rank's share of the pairs in ``paths`` into ``staging``; the manifest of what was written."""
    from itertools import islice

    from ptmcli.data.pairs import encode_pairs, iter_pairs
    from ptmcli.data.shard_writer import PAIRS, ShardWriter
    from ptmcli.textio.inputs import ReadStats, total_input_bytes
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    by_file = len(paths) >= world_size
    own_paths = paths[rank::world_size] if by_file else paths
    writer = ShardWriter(staging, prefix=f"part-r{rank}-" if world_size > 1 else "part-",
                         shard_size_bytes=options["shard_size_bytes"], kind=PAIRS)
    stats = ReadStats()
    counts = {"pairs": 0, "empty_pairs": 0}
    target_dir = options.get("target_tokenizer")
    target_tokenizer = PtmTokenizer.load(target_dir) if target_dir else None
    pairs = iter_pairs(own_paths, options["format"], tuple(options["fields"]), options["errors"], stats)
    if not by_file:
        pairs = (pair for i, pair in enumerate(pairs) if i % world_size == rank)
    bar = progress_bar(progress, total_input_bytes(own_paths))
    try:
        while batch := list(islice(pairs, PAIRS_PER_BATCH)):
            chunk = encode_pairs(tokenizer, [p.source for p in batch], [p.target for p in batch], target_tokenizer)
            writer.add(chunk)
            counts["pairs"] += len(batch)
            counts["empty_pairs"] += chunk.empty_pairs
            bar.update(stats.bytes_read - bar.n)
            bar.set_postfix_str(f"{counts['pairs']:,} pairs", refresh=False)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    # The targets' own tokenizer, when they have one, is recorded and checked like the sources'.
    target = {"target_tokenizer": _tokenizer_info(target_tokenizer, target_dir)} if target_tokenizer else {}
    return writer.manifest(_tokenizer_info(tokenizer, tokenizer_dir), paths, options=options, **target, input={
        "bytes": stats.bytes_read,
        **counts,
        "skipped_lines": stats.skipped_lines,
        "replaced_lines": stats.replaced_lines,
    })


# -- output directory ---------------------------------------------------------------------


def _check_target(target: str, overwrite: bool) -> None:
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise PtmError(f"output {target} already exists; pass --overwrite to replace it")
    if not os.path.isdir(target) or os.path.islink(target):
        raise PtmError(f"output {target} exists and is not a directory; refusing to replace it")
    if os.listdir(target) and not _is_shard_dir(target):
        raise PtmError(f"refusing to replace {target}: it is not a ptm shard directory (no ptm-shards manifest.json)")


def _is_shard_dir(path: str) -> bool:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as file:
            return json.load(file).get("format") == "ptm-shards"
    except (OSError, ValueError, AttributeError):
        return False


def _staging_dir(target: str, world_size: int) -> str:
    # Ranks must agree on the name, so it cannot hold a process id; torchrun gives a run id.
    suffix = os.getpid() if world_size == 1 else os.environ.get("TORCHELASTIC_RUN_ID", "dist")
    return f"{target}.tmp-{suffix}"


def _write_json(path: str, data: dict) -> None:
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, ensure_ascii=False)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _publish(staging: str, target: str, overwrite: bool) -> None:
    """Rename the finished directory into place; an old one goes only once the new one is whole."""
    _fsync_dir(staging)
    _check_target(target, overwrite)
    if os.path.lexists(target):
        retired = f"{target}.old-{os.getpid()}"
        os.rename(target, retired)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, target)
    _fsync_dir(os.path.dirname(target))


# -- several ranks ------------------------------------------------------------------------


def _barrier() -> None:
    """torch.distributed barrier when the caller set up a process group (torch is never imported here)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _remove_rank_files(staging: str, rank: int) -> None:
    """Leftovers of an earlier, failed run of the same rank."""
    for name in os.listdir(staging):
        if name.startswith(f"part-r{rank}-") or name in (f"rank-{rank}.json", f"rank-{rank}.failed"):
            os.remove(os.path.join(staging, name))


def _mark_rank_failed(staging: str, rank: int) -> None:
    try:
        _remove_rank_files(staging, rank)
        with open(os.path.join(staging, f"rank-{rank}.failed"), "w"):
            pass
    except OSError:
        pass


# How long rank 0 waits without any sign of progress from the other ranks: a rank killed
# outright (OOM killer, lost node) leaves no failure marker, and waiting on it would hang.
RANK_STALL_SECONDS = 600.0


def _staging_activity(staging: str) -> tuple:
    """What changes while ranks make progress: the staging directory's files, their sizes and times."""
    try:
        with os.scandir(staging) as entries:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries))
    except OSError:  # a file went between listing and stat; the next poll sees the change
        return ()


def merge_rank_manifests(out_dir: str, world_size: int, overwrite: bool = False,
                         poll_seconds: float = 0.5, timeout: float | None = RANK_STALL_SECONDS) -> dict:
    """Rank 0's last step: wait for every rank's partial manifest, write manifest.json, publish.

    Raises PtmError if a rank failed (its ``rank-<r>.failed`` marker appears)
    or ``timeout`` seconds pass with no sign of progress (no file of the
    shared temporary directory appearing, growing or changing), naming the
    ranks whose manifests are missing; the shared temporary directory is
    then removed. ``timeout=None`` waits for ever.
    """
    target = os.path.abspath(out_dir)
    staging = _staging_dir(target, world_size)
    partial_paths = [os.path.join(staging, f"rank-{r}.json") for r in range(world_size)]
    activity = _staging_activity(staging)
    last_progress = time.monotonic()
    try:
        while not all(os.path.exists(p) for p in partial_paths):
            failed = [r for r in range(world_size) if os.path.exists(os.path.join(staging, f"rank-{r}.failed"))]
            if failed:
                raise PtmError(f"rank {failed[0]} failed while encoding; no output was written to {target}")
            now_activity = _staging_activity(staging)
            if now_activity != activity:
                activity, last_progress = now_activity, time.monotonic()
            elif timeout is not None and time.monotonic() - last_progress > timeout:
                missing = [r for r, p in enumerate(partial_paths) if not os.path.exists(p)]
                raise PtmError(f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} wrote no "
                               f"partial manifest and showed no progress for {timeout:g} s (did the process die?); "
                               f"no output was written to {target}")
            time.sleep(poll_seconds)
        partials = []
        for path in partial_paths:
            with open(path, encoding="utf-8") as file:
                partials.append(json.load(file))
        manifest = dict(partials[0])
        manifest["shards"] = [s for p in partials for s in p["shards"]]
        manifest["rows"] = sum(p["rows"] for p in partials)
        manifest["tokens"] = sum(p["tokens"] for p in partials)
        if "target_tokens" in manifest:
            manifest["target_tokens"] = sum(p["target_tokens"] for p in partials)
        manifest["input"] = {k: sum((p["input"][k] for p in partials), [] if isinstance(partials[0]["input"][k], list) else 0)
                             for k in partials[0]["input"]}
        manifest["world_size"] = world_size
        if manifest["rows"] == 0:
            raise PtmError(_nothing_encoded(manifest))
        _write_json(os.path.join(staging, MANIFEST), manifest)
        for path in partial_paths:
            os.remove(path)
        _publish(staging, target, overwrite)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# -- progress and summary -----------------------------------------------------------------


def progress_bar(enabled: bool | None, total_bytes: int | None):
    """A tqdm bar on stderr counting input bytes (MB/s, ETA when the size is known)."""
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000, desc="encode",
                file=sys.stderr, disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def summary_line(manifest: dict, seconds: float) -> str:
    """The one line printed when encoding finishes."""
    read = manifest.get("input", {})
    megabytes = read.get("bytes", 0) / 1e6
    if manifest.get("kind") == "pairs":
        encoded = (f"encoded {manifest['rows']:,} pairs ({manifest['tokens']:,} source and "
                   f"{manifest['target_tokens']:,} target tokens)")
    else:
        encoded = f"encoded {manifest['rows']:,} documents ({manifest['tokens']:,} tokens)"
    parts = [
        encoded,
        f"{megabytes:,.1f} MB in {seconds:.1f} s ({megabytes / max(seconds, 1e-9):.2f} MB/s)",
        f"{len(manifest['shards'])} shard file(s)",
    ]
    for key, what in (("empty_documents", "empty documents dropped"), ("empty_pairs", "pairs with an empty side dropped"),
                      ("skipped_lines", "bad lines skipped"),
                      ("replaced_lines", "lines with bad UTF-8 repaired")):
        if read.get(key):
            parts.append(f"{read[key]:,} {what}")
    return "; ".join(parts)
