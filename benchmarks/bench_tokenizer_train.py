"""Tokenizer training: ptm's streaming reader + train_tokenizer vs Hugging Face tokenizers on a file path.

Trains a 30k WordPiece vocabulary (BERT settings: lowercase, accents stripped,
CJK split, limit_alphabet 1000, min_frequency 2) on the same file both ways,
each in its own process, and prints wall time and peak RSS with the ratios.
Then repeats ptm on the file concatenated 10 times to show memory stays flat.

    python benchmarks/bench_tokenizer_train.py [--input FILE] [--vocab-size 30000] [--repeat 3] [--no-10x]

With --repeat N each 1x case runs N times, alternating, and the fastest run is
kept (other work on the machine only ever adds time).

The reference reads the file with ``BertWordPieceTokenizer.train([path])``
(Rust reads it, so it sees every line, including WikiExtractor's <doc> tags
and titles, which ptm's reader leaves out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_INPUT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "enwiki-sample" / "enwiki_sample.txt"
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def child(which: str, path: str, vocab_size: int) -> None:
    """Runs in a fresh process: train once, report seconds and this process's peak RSS."""
    import resource

    start = time.perf_counter()
    if which == "ptm":
        from ptmcli.textio.inputs import iter_texts
        from ptmcli.tokenization.train import train_tokenizer

        tokenizer = train_tokenizer(iter_texts([path]), "wordpiece", vocab_size, min_frequency=2)
        size = tokenizer.vocab_size
    else:
        from tokenizers import BertWordPieceTokenizer

        tokenizer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                           lowercase=True)
        tokenizer.train([path], vocab_size=vocab_size, min_frequency=2, limit_alphabet=1000,
                        special_tokens=BERT_SPECIALS, show_progress=False)
        size = tokenizer.get_vocab_size()
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "vocab": size}))


def measure(which: str, path: str, vocab_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", which, "--input", path,
                          "--vocab-size", str(vocab_size)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fastest(results: list[dict]) -> dict:
    return min(results, key=lambda r: r["seconds"])


def baseline_mb() -> float:
    """Peak RSS of a process that only imports both libraries, to separate fixed cost from data."""
    code = ("import resource, tokenizers, ptmcli.tokenization.train, ptmcli.textio.inputs;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(DEFAULT_INPUT))
    parser.add_argument("--vocab-size", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per 1x case; the fastest is kept")
    parser.add_argument("--no-10x", action="store_true", help="skip the 10x-input memory check")
    parser.add_argument("--child", choices=["ptm", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.input, args.vocab_size)
        return
    if not os.path.exists(args.input):
        sys.exit(f"input {args.input} not found (expected ../shared/data beside the checkout; use --input)")
    size_mb = os.path.getsize(args.input) / 1e6
    print(f"input: {args.input} ({size_mb:.1f} MB), WordPiece vocab {args.vocab_size}, {os.cpu_count()} cores")
    print(f"process baseline (imports only): {baseline_mb():.0f} MB peak RSS")
    hf_runs: list[dict] = []
    ptm_runs: list[dict] = []
    for _ in range(max(1, args.repeat)):
        hf_runs.append(measure("hf", args.input, args.vocab_size))
        ptm_runs.append(measure("ptm", args.input, args.vocab_size))
    hf, ptm = fastest(hf_runs), fastest(ptm_runs)
    print(f"{'':22}{'wall s':>9}{'peak MB':>10}{'vocab':>8}")
    for name, result in (("tokenizers (file)", hf), ("ptm (stream)", ptm)):
        print(f"{name:22}{result['seconds']:9.2f}{result['peak_mb']:10.0f}{result['vocab']:8}")
    print(f"ratio ptm / tokenizers: time {ptm['seconds'] / hf['seconds']:.2f}x, "
          f"peak RSS {ptm['peak_mb'] / hf['peak_mb']:.2f}x")
    if args.no_10x:
        return
    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "input_x10.txt")
        with open(args.input, "rb") as src, open(big, "wb") as dst:
            data = src.read()
            for _ in range(10):
                dst.write(data)
        hf10 = measure("hf", big, args.vocab_size)
        ptm10 = measure("ptm", big, args.vocab_size)
    print(f"10x input ({size_mb * 10:.0f} MB):")
    for name, one, ten in (("tokenizers (file)", hf, hf10), ("ptm (stream)", ptm, ptm10)):
        print(f"  {name:20} {ten['seconds']:8.2f} s ({ten['seconds'] / one['seconds']:.1f}x the 1x time), "
              f"peak {ten['peak_mb']:.0f} MB ({ten['peak_mb'] / one['peak_mb']:.2f}x the 1x peak)")


if __name__ == "__main__":
    main()
