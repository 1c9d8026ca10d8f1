"""Are the features useful? Linear probes on frozen ``ptm extract-features`` output, per layer and mixed.

For each checkpoint (by default: BERT-mini pretrained on Wikipedia, the same
shape randomly initialised, and the GPT-mini run when it has a checkpoint):

- SST-2 (sentence sentiment): ``--pool mean --layers all`` vectors of a
  ``--sst2-train`` sentence subset of train; accuracy on the whole dev set.
- CoNLL-2003 NER: ``--input-format tokens --words first --layers all`` (the
  first sub-token of each word, as BERT's NER setup) for a ``--conll-train``
  sentence subset of train; token accuracy and entity F1 (exact spans, IOB2)
  on the whole validation set.

The probe is multinomial logistic regression in torch: features standardised
on train, full-batch L-BFGS, an L2 penalty chosen from a small grid on 10% of
the training subset. It is trained on each layer alone, on the mean of the
layers, and on a scalar mix (ELMo's ``sum softmax(w)_j * layer_j``, its
weights learned with the probe; its gamma is absorbed by the probe). The extraction runs through the ``ptm`` command
line, as a user would run it. A markdown table goes to stdout and JSON to
``benchmarks/results/probe_features.json``.

    python benchmarks/probe_features.py [--sst2-train 8000] [--conll-train 4000] [--threads 1]
        [--checkpoint NAME=DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RANDOM_BERT = REPO / "runs" / "bert-mini-random"
L2_GRID = (1e-4, 1e-3, 1e-2)


# -- data -------------------------------------------------------------------------------------


def read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"].strip() for r in rows], np.array([int(r["label"]) for r in rows])


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sentences, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if words:
                sentences.append((words, tags))
            words, tags = [], []
        elif not line.startswith("-DOCSTART-"):
            parts = line.split()
            words.append(parts[0])
            tags.append(parts[-1])
    return sentences


def entity_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) of each entity; an I- tag after a different type or O starts a new one."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix != "I" or label != kind):
            spans.add((start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, label
    return spans


def entity_f1(gold: list[list[str]], predicted: list[list[str]]) -> float:
    true = found = correct = 0
    for offset, (g, p) in enumerate(zip(gold, predicted)):
        gs = {(offset, *s) for s in entity_spans(g)}
        ps = {(offset, *s) for s in entity_spans(p)}
        true, found, correct = true + len(gs), found + len(ps), correct + len(gs & ps)
    precision = correct / found if found else 0.0
    recall = correct / true if true else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


# -- features through the command line ------------------------------------------------------


def ptm_extract(checkpoint: Path, source: Path, out: Path, threads: int, *flags: str) -> None:
    command = [sys.executable, "-m", "ptmcli", "extract-features", "-c", str(checkpoint), str(source), "-o", str(out),
               "--layers", "all", "--threads", str(threads), "--no-progress", "--overwrite", *flags]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"  extracted {source.name} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


def read_word_shards(directory: Path) -> np.ndarray:
    """``[words, layers, dim]`` from an arrow feature directory, rows in order."""
    import pyarrow as pa

    manifest = json.loads((directory / "manifest.json").read_text())
    layers, dim = manifest["features"]["num_layers"], manifest["features"]["dim"]
    parts = []
    for shard in manifest["shards"]:
        with pa.ipc.open_stream(directory / shard["file"]) as reader:
            column = reader.read_all().column("features").combine_chunks()
        flat = column.flatten().flatten().to_numpy(zero_copy_only=False)
        parts.append(flat.reshape(-1, layers, dim))
    return np.concatenate(parts)


# -- the probe -------------------------------------------------------------------------------


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, mix: bool = False, iterations: int = 200):
    """Logistic regression by full-batch L-BFGS; with ``mix``, over a scalar mix of x's layer axis learned with it.

    The mix's gamma is left out: a linear probe absorbs any scale. The mixed probe
    starts from the probe on the layers' mean (the mix's equal-weight start), so
    the joint, non-convex fit only ever improves on it.
    """
    weight = torch.zeros(x.shape[-1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    mix_w = torch.zeros(x.shape[1] if mix else 1, requires_grad=True)

    def inputs(features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("l,nld->nd", mix_w.softmax(0), features) if mix else features

    def run(params: list[torch.Tensor]) -> None:
        optimizer = torch.optim.LBFGS(params, lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(inputs(x) @ weight + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)

    run([weight, bias])
    if mix:
        run([weight, bias, mix_w])

    def predict(features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (inputs(features) @ weight + bias).argmax(-1)

    return predict, (mix_w.softmax(0).tolist() if mix else None)


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int, mix: bool, seed: int = 0):
    """Test predictions of the probe whose L2 did best on a held-out 10% of train."""
    # Per feature (and per layer, for the mix): random and trained layers differ wildly in scale.
    x, t = _standardise(torch.from_numpy(train_x).float(), torch.from_numpy(test_x).float())
    y = torch.from_numpy(train_y).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held, kept = order[: len(x) // 10], order[len(x) // 10 :]
    best = max(L2_GRID, key=lambda l2: (fit_probe(x[kept], y[kept], classes, l2, mix, iterations=100)[0](x[held]) == y[held])
               .float().mean().item())
    predict, learned = fit_probe(x, y, classes, best, mix)
    return predict(t).numpy(), learned


def evaluate_views(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, classes: int, score) -> dict:
    """Scores of a probe on each layer, on the mean of the layers, and on a learned scalar mix."""
    results = {}
    for layer in range(train.shape[1]):
        results[f"layer {layer}"] = score(probe(train[:, layer], train_y, test[:, layer], classes, False)[0])
    results["mean"] = score(probe(train.mean(1), train_y, test.mean(1), classes, False)[0])
    predicted, weights = probe(train, train_y, test, classes, True)
    results["scalar mix"] = score(predicted)
    results["scalar mix weights"] = [round(w, 3) for w in weights]
    return results


# -- the run ---------------------------------------------------------------------------------


def random_bert(pretrained: Path, target: Path) -> Path:
    """A randomly initialised model of the pretrained checkpoint's shape, with its tokenizer."""
    from ptmcli.checkpoint import (
        read_config,
        resolve_checkpoint,
        save_checkpoint,
        state_dict_for_saving,
    )
    from ptmcli.models.registry import get_family

    if target.exists():
        return target
    ckpt = resolve_checkpoint(pretrained)
    config = read_config(ckpt)
    family = get_family(config["arch"])
    torch.manual_seed(0)
    model = family.model_class(family.config_class.from_dict(config["model"]))
    kept = {k: v for k, v in config.items() if k not in ("format", "version", "ptm_version")}
    kept["training"] = {**(config.get("training") or {}), "note": "randomly initialised; not trained"}
    save_checkpoint(target, config=kept, weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=ckpt)
    return target


def has_checkpoint(path: Path) -> bool:
    return (path / "config.json").exists() or any((path / "checkpoints").glob("step-*/config.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=None, metavar="NAME=DIR",
                        help="a checkpoint to probe (repeatable; default: bert-mini pretrained, random, gpt-mini if present)")
    parser.add_argument("--sst2-train", type=int, default=8000)
    parser.add_argument("--conll-train", type=int, default=4000)
    parser.add_argument("--conll-dev", type=int, default=None, help="validation sentences to score (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=None, help="directory for the extracted features (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    else:
        from ptmcli.checkpoint import resolve_checkpoint

        # Resolved once: a run still training may save a newer checkpoint while the probe runs.
        pretrained = resolve_checkpoint(REPO / "runs" / "bert-mini-enwiki")
        checkpoints = {"bert-mini pretrained": str(pretrained), "bert-mini random": str(random_bert(pretrained, RANDOM_BERT))}
        gpt_run = REPO / "runs" / "gpt-mini-enwiki"
        if has_checkpoint(gpt_run):
            checkpoints["gpt-mini pretrained"] = str(resolve_checkpoint(gpt_run))

    sst_texts, sst_labels = read_sst2(DATA / "sst2" / "train.tsv")
    chosen = sorted(random.Random(0).sample(range(len(sst_texts)), args.sst2_train))
    sst_train, sst_train_y = [sst_texts[i] for i in chosen], sst_labels[chosen]
    sst_dev, sst_dev_y = read_sst2(DATA / "sst2" / "dev.tsv")
    conll_train = read_conll(DATA / "conll2003" / "train.txt")[: args.conll_train]
    conll_dev = read_conll(DATA / "conll2003" / "valid.txt")[: args.conll_dev]
    tag_names = sorted({t for _, tags in conll_train + conll_dev for t in tags})
    tag_id = {t: i for i, t in enumerate(tag_names)}
    conll_train_y = np.array([tag_id[t] for _, tags in conll_train for t in tags])
    conll_dev_y = np.array([tag_id[t] for _, tags in conll_dev for t in tags])

    def sst_score(predicted):
        return {"accuracy": float((predicted == sst_dev_y).mean())}

    def conll_score(predicted):
        gold, guess, start = [], [], 0
        for _, tags in conll_dev:
            gold.append(tags)
            guess.append([tag_names[i] for i in predicted[start : start + len(tags)]])
            start += len(tags)
        return {"token_accuracy": float((predicted == conll_dev_y).mean()), "entity_f1": entity_f1(gold, guess)}

    report = {"sst2_train": len(sst_train), "sst2_dev": len(sst_dev), "conll_train_sentences": len(conll_train),
              "conll_train_words": len(conll_train_y), "conll_dev_words": len(conll_dev_y), "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        files = {
            "sst_train.txt": "\n".join(sst_train), "sst_dev.txt": "\n".join(sst_dev),
            "conll_train.txt": "\n".join(" ".join(w) for w, _ in conll_train),
            "conll_dev.txt": "\n".join(" ".join(w) for w, _ in conll_dev),
        }
        for name, text in files.items():
            (work / name).write_text(text + "\n", encoding="utf-8")
        for name, checkpoint in checkpoints.items():
            print(f"{name}: {checkpoint}", file=sys.stderr)
            slug = name.replace(" ", "-")
            for split in ("train", "dev"):
                ptm_extract(Path(checkpoint), work / f"sst_{split}.txt", work / f"{slug}-sst_{split}.npy", args.threads,
                            "--pool", "mean")
                ptm_extract(Path(checkpoint), work / f"conll_{split}.txt", work / f"{slug}-conll_{split}", args.threads,
                            "--input-format", "tokens", "--words", "first")
            sst = evaluate_views(np.load(work / f"{slug}-sst_train.npy"), sst_train_y, np.load(work / f"{slug}-sst_dev.npy"),
                                 2, sst_score)
            conll = evaluate_views(read_word_shards(work / f"{slug}-conll_train"), conll_train_y,
                                   read_word_shards(work / f"{slug}-conll_dev"), len(tag_names), conll_score)
            report["models"][name] = {"checkpoint": checkpoint, "sst2": sst, "conll": conll}

    out = REPO / "benchmarks" / "results" / "probe_features.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)


def print_table(report: dict) -> None:
    print(f"SST-2: {report['sst2_train']} train sentences, {report['sst2_dev']} dev. "
          f"CoNLL-2003: {report['conll_train_sentences']} train sentences ({report['conll_train_words']} words), "
          f"{report['conll_dev_words']} validation words.\n")
    print("| model | features | SST-2 dev acc | CoNLL token acc | CoNLL entity F1 |")
    print("| --- | --- | --- | --- | --- |")
    for name, result in report["models"].items():
        sst, conll = result["sst2"], result["conll"]
        for view in [k for k in sst if k != "scalar mix weights"]:
            print(f"| {name} | {view} | {sst[view]['accuracy']:.3f} | {conll[view]['token_accuracy']:.3f} | "
                  f"{conll[view]['entity_f1']:.3f} |")
        print(f"| {name} | learned mix weights | {sst['scalar mix weights']} | {conll['scalar mix weights']} | |")


if __name__ == "__main__":
    main()
