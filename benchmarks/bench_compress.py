"""`ptm compress --quantize int8`: checkpoint size and CPU latency, fp32 against int8, in one run.

A random-init BERT preset (bert-mini by default, vocabulary 30522) is saved as an
fp32 checkpoint and compressed; both are loaded the way every command loads
them (``load_checkpoint``) and the encoder's forward pass is timed at batch 1
and batch 32, sequence 128, the two variants interleaved step by step (median
seconds). With ``--finetuned CKPT --data DEV.tsv`` it also compresses that
checkpoint and scores both with the code ``ptm eval`` runs, printing the
accuracy change; ``--prune F --prune-data TRAIN.tsv`` adds a head-pruned copy
(and its int8 form) to that comparison.

    python benchmarks/bench_compress.py
    python benchmarks/bench_compress.py --finetuned runs/sst2/best --data sst2/dev.tsv --prune 0.25 --prune-data sst2/train.tsv
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_alternately, write_json  # noqa: E402


def _tokenizer_dir(root: Path) -> Path:
    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.tokenization.train import train_tokenizer

    with open(SAMPLE, encoding="utf-8") as handle:
        texts = [line for _, line in zip(range(2000), handle, strict=False)]
    train_tokenizer(iter(texts), "wordpiece", 2000).save(root / "tok")
    return root / "tok"


def _mb(path: Path) -> float:
    return (path / "model.safetensors").stat().st_size / 1e6


def _compress(source: Path, out: Path, **flags):
    from ptmcli.commands.compress import CompressConfig, run

    return run(CompressConfig(str(source), str(out), **flags))


def _accuracy(ckpt: Path, data: str) -> float:
    from ptmcli.commands.eval import run
    from ptmcli.config_fields import merge
    from ptmcli.evaluation.config import EvalConfig

    return float(run(merge(EvalConfig, {}, {"checkpoint": str(ckpt), "data": data, "device": "cpu"}))["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed forward passes per variant and batch size")
    parser.add_argument("--finetuned", help="a finetuned classification checkpoint: accuracy fp32 vs int8")
    parser.add_argument("--data", help="its labeled dev data")
    parser.add_argument("--prune", type=float, help="also prune this fraction of heads (with --prune-data)")
    parser.add_argument("--prune-data", help="labeled data the head importances are computed on (the train split)")
    parser.add_argument("--prune-examples", type=int, default=2000, help="examples of --prune-data read")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.models.registry import find_preset
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    figures: dict = {"preset": args.preset, "threads": torch.get_num_threads(), "engine": torch.backends.quantized.engine,
                     "cpus": os.cpu_count(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = _tokenizer_dir(root)
        tokenizer = PtmTokenizer.load(tok)
        family = find_preset(args.preset)
        torch.manual_seed(0)
        config = family.preset_config(args.preset, vocab_size=args.vocab_size, pad_token_id=tokenizer.pad_id)
        model = family.build(config)
        fp32 = save_checkpoint(root / "fp32", config={"arch": family.name, "model": config.to_dict(), "objective": "mlm+nsp",
                                                      "task": None, "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size}},
                               weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=tok)
        int8 = root / "int8"
        summary = _compress(fp32, int8, quantize="int8")
        figures.update(fp32_mb=round(_mb(fp32), 2), int8_mb=round(_mb(int8), 2), size_ratio=summary["ratio"])
        print(f"{args.preset} (vocabulary {args.vocab_size}): model.safetensors {figures['fp32_mb']:.1f} MB fp32 -> "
              f"{figures['int8_mb']:.1f} MB int8 ({summary['ratio']:.2f}x); torch {torch.__version__}, engine "
              f"{figures['engine']}, {figures['threads']} threads")
        encoders = {name: family.encoder(load_checkpoint(path).model) for name, path in (("fp32", fp32), ("int8", int8))}
        generator = torch.Generator().manual_seed(0)
        print(f"\n{'batch x seq':12s} {'fp32 ms':>9s} {'int8 ms':>9s} {'speed-up':>9s}")
        for batch in (1, 32):
            ids = torch.randint(5, tokenizer.vocab_size, (batch, args.seq_len), generator=generator)
            steps = {name: (lambda e=enc, x=ids: e(x)) for name, enc in encoders.items()}
            with torch.inference_mode():
                medians = time_alternately(steps, warmup=3, steps=args.steps if batch == 1 else max(3, args.steps // 2))
            figures[f"batch{batch}_ms"] = {k: round(v * 1e3, 2) for k, v in medians.items()}
            figures[f"batch{batch}_speedup"] = round(medians["fp32"] / medians["int8"], 2)
            print(f"{f'{batch} x {args.seq_len}':12s} {medians['fp32'] * 1e3:9.1f} {medians['int8'] * 1e3:9.1f} "
                  f"{medians['fp32'] / medians['int8']:8.2f}x")

        if args.finetuned and args.data:
            variants = {"fp32": Path(args.finetuned)}
            variants["int8"] = root / "ft-int8"
            _compress(args.finetuned, variants["int8"], quantize="int8")
            if args.prune is not None and args.prune_data:
                variants[f"pruned {args.prune:g}"] = root / "ft-pruned"
                _compress(args.finetuned, variants[f"pruned {args.prune:g}"], prune_heads=args.prune, data=args.prune_data,
                          max_examples=args.prune_examples)
                variants[f"pruned {args.prune:g} + int8"] = root / "ft-pruned-int8"
                _compress(args.finetuned, variants[f"pruned {args.prune:g} + int8"], prune_heads=args.prune,
                          data=args.prune_data, max_examples=args.prune_examples, quantize="int8")
            scores = {name: _accuracy(path, args.data) for name, path in variants.items()}
            figures["accuracy"] = {name: round(s, 4) for name, s in scores.items()}
            figures["accuracy_mb"] = {name: round(_mb(path), 2) for name, path in variants.items()}
            print(f"\n{'checkpoint':22s} {'MB':>7s} {'accuracy':>9s} {'change':>8s}")
            for name, score in scores.items():
                print(f"{name:22s} {_mb(variants[name]):7.1f} {score:9.4f} {score - scores['fp32']:+8.4f}")
    figures["load_average"] = round(os.getloadavg()[0], 2)
    print(f"load average at the end: {figures['load_average']:.2f} on {os.cpu_count()} CPUs (latency is only "
          "comparable between variants timed in the same run)")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
