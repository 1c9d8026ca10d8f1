"""Encoding throughput: `ptm tokenize encode` end to end vs the tokenizer library's own batch encode.

Both sides use the same 30k WordPiece tokenizer (trained on the input with
ptm's ``train_tokenizer`` and cached under benchmarks/results/) and the same text:

  (a) reference: Hugging Face ``tokenizers.Tokenizer.encode_batch`` on every line of
      the file at once (its Rust threads use every core), timed from reading the
      file to the last encoding, in a fresh process after imports;
  (b) ptm: ``ptm tokenize encode FILE --workers 2`` as a subprocess, timed from
      launch to exit: start-up, reading, sentence splitting, word starts, Arrow
      writing, fsync and all.

The two alternate ``--repeats`` times (the machine may be shared) and the
medians are compared; ``--scale N`` compares them on the file concatenated N
times, where ptm's fixed start-up (about half a second) weighs less. Then ptm encodes the file and the file concatenated 10
times (written to /tmp) while the resident memory of its process tree is
sampled: the peak should not grow with the input.

    python benchmarks/bench_encode.py [--input FILE] [--repeats 3] [--workers 2] [--scale 1] [--no-10x]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = (REPO / ".." / "shared" / "data" / "enwiki-sample" / "enwiki_sample.txt").resolve()
RESULTS = REPO / "benchmarks" / "results"


def cached_tokenizer(path: Path, vocab_size: int) -> Path:
    """A WordPiece tokenizer trained on ``path`` by ptm, trained once and kept under benchmarks/results/."""
    directory = RESULTS / f"encode-wordpiece-{vocab_size}-{path.stem}"
    if not (directory / "tokenizer.json").is_file():
        from ptmcli.textio.inputs import iter_texts
        from ptmcli.tokenization.train import train_tokenizer

        print(f"training a {vocab_size} WordPiece tokenizer on {path} (cached in {directory}) ...", file=sys.stderr)
        tokenizer = train_tokenizer(iter_texts([str(path)]), "wordpiece", vocab_size)
        tokenizer.save(directory, overwrite=True)
    return directory


def reference_child(path: str, tokenizer_dir: str) -> None:
    """In a fresh process: the library's own batch encode of every line; prints seconds as JSON."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    encodings = tokenizer.encode_batch(lines, add_special_tokens=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu": cpu, "tokens": sum(len(e.ids) for e in encodings)}))


def run_reference(path: Path, tokenizer_dir: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--reference-child", str(path), str(tokenizer_dir)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start  # with interpreter start-up and imports
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, RSS of ``pid`` plus all its descendants), in KB; (0, 0) once it is gone."""
    own = total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{current}/task/{current}/children") as children:
                stack.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue
        total += rss
        if current == pid:
            own = rss
    return own, total


def run_ptm(path: Path, tokenizer_dir: Path, workers: int, out_dir: Path) -> dict:
    """Wall seconds of `ptm tokenize encode` and the peak RSS of its main process and of its whole tree."""
    command = [sys.executable, "-m", "ptmcli", "tokenize", "encode", str(path), "--tokenizer", str(tokenizer_dir),
               "-o", str(out_dir), "--workers", str(workers), "--overwrite", "--no-progress"]
    start, cpu_start = time.perf_counter(), _children_cpu()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_own = peak_tree = 0
    while process.poll() is None:
        own, tree = _tree_rss_kb(process.pid)
        peak_own, peak_tree = max(peak_own, own), max(peak_tree, tree)
        time.sleep(0.05)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"ptm tokenize encode failed ({process.returncode}):\n{stderr}")
    return {"seconds": seconds, "cpu": cpu, "peak_main_mb": peak_own / 1024, "peak_tree_mb": peak_tree / 1024,
            "summary": stderr.strip().splitlines()[-1]}


def concatenated(path: Path, times: int, directory: Path) -> Path:
    """``path`` repeated ``times`` times, written under ``directory``."""
    target = directory / f"{path.stem}-x{times}{path.suffix}"
    with open(target, "wb") as out:
        for _ in range(times):
            with open(path, "rb") as part:
                shutil.copyfileobj(part, out)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-10x", action="store_true", help="skip the memory check on the 10x file")
    parser.add_argument("--scale", type=int, default=1,
                        help="compare throughput on the input concatenated this many times (start-up matters less)")
    parser.add_argument("--reference-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        reference_child(*args.reference_child)
        return
    if not args.input.is_file():
        raise SystemExit(f"input {args.input} not found (pass --input FILE)")

    tokenizer_dir = cached_tokenizer(args.input, args.vocab_size)
    scratch = Path(tempfile.mkdtemp(prefix="ptm-bench-encode-"))
    try:
        if args.scale > 1:
            args.input = concatenated(args.input, args.scale, scratch)
        megabytes = args.input.stat().st_size / 1e6
        print(f"input: {args.input} ({megabytes:.1f} MB), tokenizer: {tokenizer_dir}, cores: {os.cpu_count()}")
        reference_times, reference_process_times, ptm_times = [], [], []
        for repeat in range(args.repeats):
            reference = run_reference(args.input, tokenizer_dir)
            ptm = run_ptm(args.input, tokenizer_dir, args.workers, scratch / "shards")
            reference_times.append(reference["seconds"])
            reference_process_times.append(reference["process_seconds"])
            ptm_times.append(ptm["seconds"])
            print(f"  run {repeat + 1}: reference {megabytes / reference['seconds']:.2f} MB/s "
                  f"({reference['cpu']:.1f} CPU s), ptm {megabytes / ptm['seconds']:.2f} MB/s ({ptm['cpu']:.1f} CPU s)")
        reference_mbs = megabytes / statistics.median(reference_times)
        ptm_mbs = megabytes / statistics.median(ptm_times)
        print(f"reference tokenizers.encode_batch (all lines, all cores): {reference_mbs:.2f} MB/s (median)")
        print(f"ptm tokenize encode --workers {args.workers} (end to end):  {ptm_mbs:.2f} MB/s (median)")
        print(f"ratio ptm / reference: {ptm_mbs / reference_mbs:.2f}  (target >= 0.9)")
        best = min(reference_times) / min(ptm_times)
        print(f"ratio of the best runs (least disturbed by other load): {best:.2f}")
        whole = statistics.median(reference_process_times) / statistics.median(ptm_times)
        print(f"ratio with the reference's own process start-up counted too (python, imports, loading): {whole:.2f}")

        if not args.no_10x:
            big = concatenated(args.input, 10, scratch)
            one = run_ptm(args.input, tokenizer_dir, args.workers, scratch / "shards")
            ten = run_ptm(big, tokenizer_dir, args.workers, scratch / "shards")
            for name, result, size in (("1x", one, megabytes), ("10x", ten, megabytes * 10)):
                print(f"peak RSS {name} ({size:.0f} MB): main process {result['peak_main_mb']:.0f} MB, "
                      f"process tree {result['peak_tree_mb']:.0f} MB, {size / result['seconds']:.2f} MB/s")
            print(f"peak RSS ratio 10x / 1x (main process): {ten['peak_main_mb'] / one['peak_main_mb']:.2f}  "
                  "(flat is ~1)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
