"""Conversion time and peak memory for a bert-base-sized model, and parity error per supported class.

A random ``transformers.BertForPreTraining`` of bert-base shape (110M parameters,
fp32, 30522-token vocab.txt) is saved in a temporary directory, then each of
these runs in a fresh process (so its peak resident memory is its own) and is
timed after its imports:

  (a) reference: ``BertForPreTraining.from_pretrained(src).save_pretrained(dst)``
      with transformers, the plain load + save of the same weights;
  (b) ptm, HF -> ptm: ``ptm convert src ckpt`` (weights and tokenizer);
  (c) ptm, ptm -> HF: ``ptm convert ckpt hf`` (weights and tokenizer).

Each is repeated ``--repeats`` times, alternating, and the medians are compared
as ratios to (a): the operation's time after torch and the library are imported,
the whole process from launch to exit, and the peak resident memory (VmHWM). Then, for every class ``ptm convert`` supports, a random
bert-mini-sized model (GPT-2: gpt-mini-sized) is converted to ptm and the
largest absolute difference of its hidden states and logits from the
original's is printed (fp32, a padded batch of 4 x 128).

    python benchmarks/bench_convert.py [--repeats 3] [--no-parity] [--no-timing]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(directory: Path, size: int) -> None:
    tokens = SPECIALS + [f"w{i}" for i in range(size - len(SPECIALS))]
    (directory / "vocab.txt").write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")


def make_bert_base(directory: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig()  # bert-base: 12 x 768, 30522 tokens
    transformers.BertForPreTraining(config).save_pretrained(directory)
    write_vocab(directory, config.vocab_size)


def child(kind: str, src: str, dst: str) -> None:
    """In a fresh process: import, then time one operation; print seconds and peak RSS as JSON."""
    import_start = time.perf_counter()
    if kind == "transformers":
        import torch  # noqa: F401
        import transformers

        transformers.BertForPreTraining  # noqa: B018  (transformers imports its modules lazily)
        imported = time.perf_counter()
        transformers.BertForPreTraining.from_pretrained(src).save_pretrained(dst)
    else:
        import torch  # noqa: F401  (timed as an import, as transformers' is)

        from ptmcli.commands.convert import run
        from ptmcli.convert.options import ConvertConfig

        imported = time.perf_counter()
        run(src, dst, ConvertConfig())
    done = time.perf_counter()
    print(json.dumps({"seconds": done - imported, "import_seconds": imported - import_start, "peak_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    exec from the forking parent, so a child would report at least the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, src: Path, dst: Path) -> dict:
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(src), str(dst)], check=True,
                         capture_output=True, text=True, cwd=REPO)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), process_seconds=time.perf_counter() - start)


def timing(repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        root = Path(tmp)
        print("building a random bert-base BertForPreTraining ...", file=sys.stderr)
        make_bert_base(root / "hf")
        size_mb = (root / "hf" / "model.safetensors").stat().st_size / 2**20
        runs: dict[str, list[dict]] = {"transformers load+save": [], "ptm HF -> ptm": [], "ptm ptm -> HF": []}
        for _ in range(repeats):
            runs["transformers load+save"].append(measure("transformers", root / "hf", root / "ref"))
            runs["ptm HF -> ptm"].append(measure("ptm", root / "hf", root / "ckpt"))
            runs["ptm ptm -> HF"].append(measure("ptm", root / "ckpt", root / "back"))
        print(f"\nbert-base BertForPreTraining, {size_mb:.0f} MB of fp32 weights; medians of {repeats} runs, each in a fresh process")
        print("seconds: the operation after imports; process: launch to exit, imports included")
        print(f"{'operation':<26}{'seconds':>9}{'ratio':>8}{'process s':>11}{'ratio':>8}{'peak RSS MB':>13}{'ratio':>8}")
        keys = ("seconds", "process_seconds", "peak_mb")
        ref = {k: statistics.median(r[k] for r in runs["transformers load+save"]) for k in keys}
        for name, results in runs.items():
            seconds, process, peak = (statistics.median(r[k] for r in results) for k in keys)
            print(f"{name:<26}{seconds:>9.2f}{seconds / ref['seconds']:>8.2f}{process:>11.2f}"
                  f"{process / ref['process_seconds']:>8.2f}{peak:>13.0f}{peak / ref['peak_mb']:>8.2f}")


def parity() -> None:
    """Largest |ptm - transformers| per supported class, on mid-sized random models."""
    import torch
    import transformers

    from ptmcli.commands.convert import run
    from ptmcli.convert.options import ConvertConfig
    from ptmcli.convert.ptm_model import load_model

    bert = transformers.BertConfig(vocab_size=2000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                   intermediate_size=1024, num_labels=5)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2000, (4, 128), generator=gen)
    types = torch.randint(0, 2, (4, 128), generator=gen)
    mask = torch.ones(4, 128, dtype=torch.long)
    mask[1, 100:] = 0
    mask[3, 20:] = 0
    print("\nparity, fp32, batch 4 x 128 with padding: max |ptm - transformers|")
    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        for name in ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
                     "BertForTokenClassification", "GPT2LMHeadModel"):
            torch.manual_seed(0)
            if name.startswith("GPT2"):
                config = transformers.GPT2Config(vocab_size=2000, n_embd=256, n_layer=4, n_head=4, n_positions=256,
                                                  bos_token_id=0, eos_token_id=0)
                model = transformers.GPT2LMHeadModel(config).eval()
            else:
                model = getattr(transformers, name)(bert).eval()
            src, dst = Path(tmp) / name, Path(tmp) / f"{name}-ptm"
            model.save_pretrained(src)
            write_vocab(src, 2000) if not name.startswith("GPT2") else None
            with contextlib.redirect_stderr(io.StringIO()):
                run(str(src), str(dst), ConvertConfig())
            ours, _, _ = load_model(dst)
            with torch.no_grad():
                if name.startswith("GPT2"):
                    ref = model(input_ids=ids, output_hidden_states=True)
                    last, states = ours.gpt(ids, output_hidden_states=True)
                    pairs = {"logits": (ours.logits(last), ref.logits), "last hidden": (last, ref.hidden_states[-1])}
                else:
                    ref = model(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
                    keep = mask.bool()[..., None]
                    if name.endswith("SequenceClassification"):
                        pairs = {"logits": (ours(ids, types, mask), ref.logits)}
                    elif name.endswith("TokenClassification"):
                        pairs = {"logits": (ours(ids, types, mask) * keep, ref.logits * keep)}
                    else:
                        last, states = ours.bert(ids, types, mask, output_hidden_states=True)
                        pairs = {"hidden states": (torch.stack(states) * keep, torch.stack(ref.hidden_states) * keep)}
                        if name == "BertForPreTraining":
                            pairs["MLM logits"] = (ours.mlm(last), ref.prediction_logits)
                            pairs["NSP logits"] = (ours.nsp(ours.bert.pool(last)), ref.seq_relationship_logits)
                        if name == "BertForMaskedLM":
                            pairs["MLM logits"] = (ours.mlm(last), ref.logits)
            errors = ", ".join(f"{k} {float((a - b).abs().max()):.1e}" for k, (a, b) in pairs.items())
            print(f"  {name:<32}{errors}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    if not args.no_timing:
        timing(args.repeats)
    if not args.no_parity:
        parity()


if __name__ == "__main__":
    main()
