"""Feature extraction speed, whole process: ``ptm extract-features`` against a plain transformers script, SST-2 dev.

The model is set up as published sentence-embedding models are, in a temporary
directory: a Hugging Face BERT directory (``model.safetensors``, ``config.json``,
``vocab.txt``, ``tokenizer_config.json``) whose WordPiece ``tokenizer.json``
carries fixed-length padding and truncation (``"padding": {"strategy":
{"Fixed": 128}}``, ``"truncation": {"max_length": 128}``). By default the
weights are random (speed does not depend on them): hidden 256, 4 layers,
4 heads, with the tokenizer of ``runs/tok8k`` (trained with ``ptm tokenize
train`` when it is missing). ``--checkpoint CKPT`` takes a ptm checkpoint
instead, written out with ``ptm convert CKPT DIR --to hf``.

Two whole processes, start-up included, turn the 872 sentences into one
vector each (the last layer, mean over the attention mask), alternating for
``--repeats`` rounds after one untimed round that also checks the vectors:

  (a) reference: a plain script as people write it (``reference_script``):
      ``AutoTokenizer`` and ``AutoModel.from_pretrained(DIR)``, batches of 32 in
      file order, ``tokenizer(batch, padding=True, truncation=True,
      return_tensors="pt")``, ``torch.inference_mode()`` (and bf16 autocast
      for ``--precision bf16``), mean pooling, ``np.save``;
  (b) ptm: ``ptm extract-features --checkpoint PTMDIR dev.txt --layers -1
      --pool mean -o out.npy``, PTMDIR made once (untimed) by ``ptm convert
      DIR PTMDIR``; its tokenizer.json still carries the padding.

Both sides run with ``--threads`` intra-op threads (and the same thread
variables for OpenMP and the tokenizer's Rust pool). Printed: sentences/s of
each (the medians), the ratio ptm / reference, and the largest absolute
difference between the two sides' vectors.

Then the start-up breakdown: medians over ``--repeats`` alternating rounds of
``python -c pass``, ``python -c "import torch"``, ``ptm --version``, both sides
on a one-sentence input, and ptm's one-sentence run with timestamps at each
step (CLI modules, torch, ptm's modules, flag parsing, checkpoint config and
tokenizer, model build, weights, input, first batch).

``--in-process`` keeps the steady-state comparison: the same weights in a
``transformers`` ``BertModel`` / ``GPT2Model`` and ptm's ``FeatureExtractor``
timed alternately inside one process, start-up excluded.

    python benchmarks/bench_extract_features.py [--repeats 5] [--threads 1] [--precision fp32 bf16]
        [--checkpoint CKPT] [--no-startup] [--in-process [--gpt-checkpoint CKPT]]
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SST2_DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
ENWIKI_SAMPLE = REPO.parent / "shared" / "data" / "enwiki-sample" / "enwiki_sample.txt"
DEFAULT_TOKENIZER = REPO / "runs" / "tok8k"
PUBLISHED_LENGTH = 128  # the fixed padding and truncation length the tokenizer.json carries


def read_sst2(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


# --- the two sides, each a whole process ---------------------------------------------------------


def reference_script(model_dir: str, input_path: str, output_path: str, threads: str, precision: str,
                     batch_size: str) -> None:
    """A plain transformers feature script, as people write it (run in a fresh process)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(int(threads))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    with open(input_path, encoding="utf-8") as handle:
        sentences = [line.strip() for line in handle]
    size = int(batch_size)
    vectors = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, len(sentences), size):
            batch = tokenizer(sentences[start : start + size], padding=True, truncation=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    np.save(output_path, np.concatenate(vectors))


def reference_command(model_dir: Path, input_path: Path, output: Path, threads: int, precision: str,
                      batch_size: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--reference-child", str(model_dir), str(input_path),
            str(output), str(threads), precision, str(batch_size)]


def ptm_command(checkpoint: Path, input_path: Path, output: Path, threads: int, precision: str,
                batch_size: int) -> list[str]:
    return [sys.executable, "-m", "ptmcli", "extract-features", "--checkpoint", str(checkpoint), str(input_path),
            "--layers", "-1", "--pool", "mean", "-o", str(output), "--overwrite", "--threads", str(threads),
            "--precision", precision, "--batch-size", str(batch_size), "--no-progress"]


def child_env(threads: int) -> dict[str, str]:
    """The same thread limits for both sides; ptm from this tree."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PTM_DEBUG", None)
    return env


def run_timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one whole process, launch to exit."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    return seconds


def time_processes(variants: dict[str, list[str]], env: dict[str, str], repeats: int) -> dict[str, float]:
    """Median wall seconds of each command, the commands alternating round by round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, command in variants.items():
            times[name].append(run_timed(command, env))
    return {name: statistics.median(t) for name, t in times.items()}


# --- the published-style model directory -----------------------------------------------------------


def run_ptm(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "ptmcli", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ptm {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def tokenizer_source(scratch: Path, env: dict[str, str]) -> Path:
    if (DEFAULT_TOKENIZER / "tokenizer.json").is_file():
        return DEFAULT_TOKENIZER
    target = scratch / "tok8k"
    print(f"(no {DEFAULT_TOKENIZER}: training an 8000-token WordPiece tokenizer on {ENWIKI_SAMPLE})")
    run_ptm("tokenize", "train", str(ENWIKI_SAMPLE), "--model", "wordpiece", "--vocab-size", "8000", "-o", str(target),
            env=env)
    return target


def publish_tokenizer(source: Path, model_dir: Path) -> int:
    """Write tokenizer.json with fixed padding and truncation, vocab.txt and tokenizer_config.json; the vocabulary size."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]", length=PUBLISHED_LENGTH)
    tokenizer.enable_truncation(max_length=PUBLISHED_LENGTH)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    (model_dir / "vocab.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, "pad_token": "[PAD]",
              "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return len(tokens)


def random_bert(model_dir: Path, vocab_size: int, hidden: int, layers: int, heads: int) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512)
    transformers.BertModel(config, add_pooling_layer=True).save_pretrained(model_dir)


def build_model_dirs(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """The published-style Hugging Face directory and the ptm checkpoint converted from it."""
    hf_dir, ptm_dir = scratch / "hf-model", scratch / "ptm-model"
    if args.checkpoint:
        run_ptm("convert", args.checkpoint, str(hf_dir), "--to", "hf", env=env)
        publish_tokenizer(hf_dir, hf_dir)
        described = f"ptm checkpoint {args.checkpoint}, converted with ptm convert --to hf"
    else:
        hf_dir.mkdir()
        vocab_size = publish_tokenizer(tokenizer_source(scratch, env), hf_dir)
        random_bert(hf_dir, vocab_size, args.hidden, args.num_layers, args.heads)
        described = (f"random BERT, hidden {args.hidden}, {args.num_layers} layers, {args.heads} heads, "
                     f"{vocab_size}-token WordPiece")
    run_ptm("convert", str(hf_dir), str(ptm_dir), env=env)
    stored = json.loads((ptm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    print(f"model: {described}; tokenizer.json padding {json.dumps(stored.get('padding', {}).get('strategy'))}, "
          f"truncation {(stored.get('truncation') or {}).get('max_length')} (kept by ptm convert)")
    return hf_dir, ptm_dir


# --- whole-process comparison -----------------------------------------------------------------------


def compare_processes(hf_dir: Path, ptm_dir: Path, input_path: Path, count: int, scratch: Path,
                      args: argparse.Namespace, env: dict[str, str]) -> None:
    import numpy as np

    for precision in args.precision:
        ref_out, ptm_out = scratch / f"reference-{precision}.npy", scratch / f"ptm-{precision}.npy"
        variants = {
            "reference": reference_command(hf_dir, input_path, ref_out, args.threads, precision, args.batch_size),
            "ptm": ptm_command(ptm_dir, input_path, ptm_out, args.threads, precision, args.batch_size),
        }
        for command in variants.values():  # one untimed round: warm file caches, check the vectors
            run_timed(command, env)
        ours = np.load(ptm_out).reshape(count, -1)
        theirs = np.load(ref_out).reshape(count, -1)
        diff = float(np.abs(ours - theirs).max())
        medians = time_processes(variants, env, args.repeats)
        ref_rate, ptm_rate = count / medians["reference"], count / medians["ptm"]
        print(f"whole process {precision:5s} transformers {ref_rate:7.1f} sent/s ({medians['reference']:5.2f} s)   "
              f"ptm {ptm_rate:7.1f} sent/s ({medians['ptm']:5.2f} s)   ratio {ptm_rate / ref_rate:5.2f}x   "
              f"max |diff| {diff:.2e}")
        if precision == "fp32" and diff > 1e-4:
            print(f"warning: the fp32 vectors differ by {diff:.2e} (expected about 1e-6)")


# --- start-up breakdown -----------------------------------------------------------------------------

# Steps of ptm's one-sentence run, in order: (name, mark the step ends at).
STARTUP_STEPS = (
    ("Python start-up (interpreter, site)", "process"),
    ("CLI modules (typer, ptm's flag tables)", "cli"),
    ("import torch (and numpy)", "torch"),
    ("ptm's feature, model and tokenizer modules", "ptm_modules"),
    ("flag parsing, checks, the command's other imports", "load_start"),
    ("checkpoint config + tokenizer", "build_start"),
    ("model build", "build_end"),
    ("weights (read, load, eval)", "load_end"),
    ("input, plan, tokenizing the chunk", "batch_start"),
    ("first batch (forward)", "batch_end"),
    ("writing the output", "end"),
    ("interpreter exit", "exit"),
)


def startup_probe(marks_path: str, *ptm_args: str) -> None:
    """Run ptm's command in this process with a timestamp at each step; write them as JSON.

    The timestamps are ``time.perf_counter()`` values: the monotonic clock, shared
    with the parent process on Linux, so the parent can place them after its launch.
    """
    marks: dict[str, float] = {"process": time.perf_counter()}

    import ptmcli.cli.main as cli

    marks["cli"] = time.perf_counter()
    import torch  # noqa: F401 - timed on its own here; the command imports it later

    marks["torch"] = time.perf_counter()
    from ptmcli.features import model as feature_model
    from ptmcli.models.registry import FAMILIES

    marks["ptm_modules"] = time.perf_counter()

    def mark(first: str, last: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            marks.setdefault(first, time.perf_counter())
            try:
                return function(*args, **kwargs)
            finally:
                marks.setdefault(last, time.perf_counter())
        return timed

    feature_model.load_feature_model = mark("load_start", "load_end", feature_model.load_feature_model)
    for family in FAMILIES.values():
        family.model_class.__init__ = mark("build_start", "build_end", family.model_class.__init__)
    feature_model.FeatureModel.stack = mark("batch_start", "batch_end", feature_model.FeatureModel.stack)

    def write_marks() -> None:
        marks["end"] = time.perf_counter()
        Path(marks_path).write_text(json.dumps(marks), encoding="utf-8")

    # Written at exit, since ptm may end the process itself (without the interpreter's teardown).
    atexit.register(write_marks)
    sys.argv = ["ptm", *ptm_args]
    cli.main()


def startup_breakdown(hf_dir: Path, ptm_dir: Path, scratch: Path, first: str, args: argparse.Namespace,
                      env: dict[str, str]) -> None:
    one = scratch / "one.txt"
    one.write_text(first + "\n", encoding="utf-8")
    marks_path = scratch / "startup.json"
    precision = args.precision[0]
    ptm_one = ptm_command(ptm_dir, one, scratch / "one-ptm.npy", args.threads, precision, args.batch_size)
    probe = [sys.executable, str(Path(__file__).resolve()), "--startup-probe", str(marks_path), *ptm_one[3:]]
    variants = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "ptm --version": [sys.executable, "-m", "ptmcli", "--version"],
        "ptm, one sentence": ptm_one,
        "transformers script, one sentence": reference_command(hf_dir, one, scratch / "one-ref.npy", args.threads,
                                                               precision, args.batch_size),
    }
    for command in [*variants.values(), probe]:  # warm caches
        run_timed(command, env)
    times: dict[str, list[float]] = {name: [] for name in variants}
    steps: dict[str, list[float]] = {name: [] for name, _ in STARTUP_STEPS}
    for _ in range(args.repeats):
        for name, command in variants.items():
            times[name].append(run_timed(command, env))
        launch = time.perf_counter()
        run_timed(probe, env)
        marks = json.loads(marks_path.read_text(encoding="utf-8"))
        marks["exit"] = time.perf_counter()
        previous = launch
        for name, key in STARTUP_STEPS:
            steps[name].append(marks[key] - previous)
            previous = marks[key]
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians["transformers script, one sentence"]
    print(f"\nstart-up: whole processes, medians of {args.repeats} ({precision}, {args.threads} thread(s))")
    for name, seconds in medians.items():
        print(f"  {name:36s} {seconds:6.2f} s   {seconds / reference:5.2f} of the transformers script")
    print("ptm, one sentence, step by step (medians):")
    total = 0.0
    for name, _ in STARTUP_STEPS:
        seconds = statistics.median(steps[name])
        total += seconds
        print(f"  {name:50s} {seconds * 1000:7.0f} ms")
    print(f"  {'total':50s} {total * 1000:7.0f} ms")


# --- in-process comparison (start-up excluded) ------------------------------------------------------


def ptm_vectors(model, texts: list[str], batch_size: int, precision: str):
    import numpy as np

    from ptmcli.features.extract import FeatureExtractor
    from ptmcli.features.layers import build_plan
    from ptmcli.features.readers import TextRecord

    plan = build_plan("-1", model.num_layers, "none", model.family.features_all_layers, None, None, {}, str(model.path))
    extractor = FeatureExtractor(model, plan, pool="mean", batch_size=batch_size, precision=precision)
    records = (TextRecord(i, i + 1, t, None, t) for i, t in enumerate(texts))
    return np.stack([row.values[0] for row in extractor.rows(records)])


def hf_tokenizer(ckpt: Path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    tokenizer.no_padding()  # padding=True below pads each batch to its longest
    tokenizer.no_truncation()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer,
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")


def hf_bert(model):
    import transformers

    from ptmcli.models.bert import state_dict_to_hf

    cfg = model.model.config
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id), add_pooling_layer=True)
    state = {k.removeprefix("bert."): v for k, v in state_dict_to_hf(model.model.state_dict()).items() if k.startswith("bert.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not [k for k in missing if "position_ids" not in k and "pooler" not in k] and not unexpected, (missing, unexpected)
    return hf.eval()


def hf_gpt2(model):
    import transformers

    from ptmcli.models.gpt import state_dict_to_hf

    cfg = model.model.config
    end = model.tokenizer.eos_id if model.tokenizer.eos_id is not None else model.tokenizer.sep_id
    hf = transformers.GPT2Model(transformers.GPT2Config(
        bos_token_id=end, eos_token_id=end,
        vocab_size=cfg.vocab_size, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size, n_positions=cfg.max_position_embeddings, layer_norm_epsilon=cfg.layer_norm_eps,
        activation_function="gelu_new" if cfg.gelu == "tanh" else "gelu"))
    state = {k.removeprefix("transformer."): v for k, v in state_dict_to_hf(model.model.state_dict()).items() if k.startswith("transformer.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not [k for k in missing if ".attn.bias" not in k and "masked_bias" not in k] and not unexpected, (missing, unexpected)
    return hf.eval()


def reference_bert(hf, tok, texts: list[str], batch_size: int, max_length: int, precision: str):
    import numpy as np
    import torch

    from ptmcli.runtime.device import autocast

    out = []
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = hf(**enc).last_hidden_state.float()
            mask = enc["attention_mask"][..., None].float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def reference_gpt2(hf, tok, texts: list[str], batch_size: int, max_length: int, start_id: int, precision: str):
    import numpy as np
    import torch

    from ptmcli.runtime.device import autocast

    out = []
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for start in range(0, len(texts), batch_size):
            ids = [[start_id, *row][:max_length] for row in tok(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]]
            width = max(len(row) for row in ids)
            input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
            hidden = hf(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            text_mask = mask.clone()
            text_mask[:, 0] = 0  # the start token is context, as in ptm's GPT framing
            weights = text_mask[..., None].float()
            out.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).numpy())
    return np.concatenate(out)


def random_gpt_checkpoint(tokenizer_dir: Path, target: Path) -> Path:
    import torch

    from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
    from ptmcli.models import gpt
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    torch.manual_seed(0)
    config = gpt.preset_config("gpt-mini", vocab_size=PtmTokenizer.load(tokenizer_dir).vocab_size)
    model = gpt.GPTForCausalLM(config)
    return save_checkpoint(target, config={"arch": "gpt", "model": config.to_dict(), "objective": "clm", "task": None,
                                           "training": {"seq_len": 128}},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=tokenizer_dir)


def compare_in_process(name: str, model, reference: Callable, texts: list[str], batch_size: int, repeats: int,
                       precision: str) -> None:
    import numpy as np

    def ours() -> None:
        ptm_vectors(model, texts, batch_size, precision)

    diff = float(np.abs(ptm_vectors(model, texts, batch_size, precision) - reference()).max())
    timings: dict[str, list[float]] = {"transformers": [], "ptm": []}
    for _ in range(repeats):
        for side, step in (("transformers", reference), ("ptm", ours)):
            start = time.perf_counter()
            step()
            timings[side].append(time.perf_counter() - start)
    hf_rate = len(texts) / statistics.median(timings["transformers"])
    ptm_rate = len(texts) / statistics.median(timings["ptm"])
    print(f"in process {name:5s} {precision:5s} transformers {hf_rate:8.1f} sent/s   ptm {ptm_rate:8.1f} sent/s   "
          f"ratio {ptm_rate / hf_rate:5.2f}x   max |diff| {diff:.2e}")


def in_process(ptm_dir: Path, texts: list[str], scratch: Path, args: argparse.Namespace) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    from ptmcli.features.model import load_feature_model

    torch.set_num_threads(args.threads)
    bert_model = load_feature_model(ptm_dir)
    tok = hf_tokenizer(bert_model.path)
    hf = hf_bert(bert_model)
    try:
        gpt_model = load_feature_model(args.gpt_checkpoint) if args.gpt_checkpoint else None
    except Exception as err:  # noqa: BLE001 - any unusable checkpoint: fall back to random weights
        print(f"(no usable GPT checkpoint at {args.gpt_checkpoint}: {err})")
        gpt_model = None
    if gpt_model is None:
        print("(GPT: a random gpt-mini with the BERT model's tokenizer: speed does not depend on the weights)")
        gpt_model = load_feature_model(random_gpt_checkpoint(bert_model.path, scratch / "gpt"))
    gpt_tok, gpt_hf = hf_tokenizer(gpt_model.path), hf_gpt2(gpt_model)
    start_id = gpt_model.tokenizer.eos_id if gpt_model.tokenizer.eos_id is not None else gpt_model.tokenizer.sep_id
    for precision in args.precision:
        compare_in_process("bert", bert_model,
                           lambda precision=precision: reference_bert(hf, tok, texts, args.batch_size, bert_model.max_length, precision),
                           texts, args.batch_size, args.repeats, precision)
        compare_in_process("gpt", gpt_model,
                           lambda precision=precision: reference_gpt2(gpt_hf, gpt_tok, texts, args.batch_size, gpt_model.max_length, start_id,
                                                  precision),
                           texts, args.batch_size, args.repeats, precision)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--reference-child":
        reference_script(*sys.argv[2:8])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--startup-probe":
        startup_probe(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a ptm checkpoint to time instead of a random BERT (written out with ptm convert --to hf)")
    parser.add_argument("--data", default=str(SST2_DEV))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up breakdown")
    parser.add_argument("--in-process", action="store_true", help="time the two pipelines inside one process instead")
    parser.add_argument("--gpt-checkpoint", help="--in-process: a GPT checkpoint (default: a random gpt-mini)")
    args = parser.parse_args()
    texts = read_sst2(Path(args.data))
    env = child_env(args.threads)
    print(f"{len(texts)} SST-2 dev sentences, batch {args.batch_size}, {args.threads} thread(s), medians of {args.repeats}, "
          f"{os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as scratch_name:
        scratch = Path(scratch_name)
        hf_dir, ptm_dir = build_model_dirs(args, scratch, env)
        if args.in_process:
            in_process(ptm_dir, texts, scratch, args)
            return
        input_path = scratch / "dev_sentences.txt"
        input_path.write_text("".join(f"{text}\n" for text in texts), encoding="utf-8")
        compare_processes(hf_dir, ptm_dir, input_path, len(texts), scratch, args, env)
        if not args.no_startup:
            startup_breakdown(hf_dir, ptm_dir, scratch, texts[0], args, env)


if __name__ == "__main__":
    main()
