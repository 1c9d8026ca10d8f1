"""CoVe: a biLSTM translation encoder over frozen GloVe vectors, trained on Multi30k pairs from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptmcli.checkpoint import read_weights
from tests.conftest import SHARED_DATA, run_cli_err

MULTI30K = SHARED_DATA / "multi30k"
PAIRS = 400
COMMON = ["--no-progress", "--threads", "2"]


def _lines(name: str, count: int) -> list[str]:
    with open(MULTI30K / name, encoding="utf-8") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """GloVe vectors on the English side, a German tokenizer, and English->German pair shards."""
    if not (MULTI30K / "train.en").is_file():
        pytest.skip(f"real data not available: {MULTI30K} is absent (expected ../shared/data beside the checkout)")
    root = tmp_path_factory.mktemp("cove")
    en, de = _lines("train.en", PAIRS), _lines("train.de", PAIRS)
    (root / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (root / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    (root / "train.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in zip(en, de)), encoding="utf-8")
    val = zip(_lines("val.en", 40), _lines("val.de", 40))
    (root / "val.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in val), encoding="utf-8")
    monkey = pytest.MonkeyPatch()
    for args in (
        ["tokenize", "train", root / "en.txt", "--model", "word", "--min-count", "1", "-o", root / "tok-en"],
        ["tokenize", "encode", root / "en.txt", "--tokenizer", root / "tok-en", "-o", root / "en-shards",
         "--document-boundary", "line", "--workers", "1"],
        ["pretrain", "--arch", "glove", "--data", root / "en-shards", "--dim", "16", "--epochs", "3",
         "--min-count", "2", "-o", root / "glove"],
        ["tokenize", "train", root / "de.txt", "--model", "wordpiece", "--vocab-size", "600", "--special-tokens", "bert",
         "-o", root / "tok-de"],
    ):
        _run(monkey, args)
    glove = next((root / "glove" / "checkpoints").iterdir())
    for name in ("train", "val"):
        _run(monkey, ["tokenize", "encode", root / f"{name}.tsv", "--pairs", "--tokenizer", glove,
                      "--target-tokenizer", root / "tok-de", "-o", root / f"{name}-pairs"])
    return {"root": root, "glove": glove, "pairs": root / "train-pairs", "val": root / "val-pairs", "lm": root / "en-shards"}


def _run(monkey, args) -> None:
    from ptmcli.cli.main import main

    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        assert not stop.code, f"ptm {' '.join(map(str, args))} failed"


def _pretrain(data, out, *extra):
    return ["pretrain", "--arch", "cove", "--objective", "translation", "--preset", "cove-tiny", "--init-vectors", data["glove"],
            "--data", data["pairs"], "--eval-data", data["val"], "--batch-size", "16", "--seq-len", "40", "--lr", "3e-3",
            "--log-every", "5", "--eval-batches", "2", "-o", out, *COMMON, *extra]


@pytest.fixture(scope="module")
def trained(data):
    out = data["root"] / "run"
    _run(pytest.MonkeyPatch(), _pretrain(data, out, "--max-steps", "40", "--save-every", "20"))
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cove_trains_on_translation_pairs_and_its_loss_falls(trained):
    records = _metrics(trained)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 0.5
    final = [r for r in records if "eval_evaldata_ppl" in r][-1]
    assert final["eval_evaldata_ppl"] > 1 and 0 <= final["eval_evaldata_bleu"] <= 100
    config = json.loads((trained / "checkpoints" / "step-00000040" / "config.json").read_text())
    assert config["arch"] == "cove" and config["objective"] == "translation"
    assert config["model"]["input_size"] == 16 and config["model"]["target_vocab_size"] == 600


def test_features_are_glove_then_cove(data, trained, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("A man is riding a bike .\nTwo dogs play in the snow .\n", encoding="utf-8")
    out = tmp_path / "features.jsonl"
    code, err = run_cli_err(capsys, "extract-features", texts, "-c", trained, "-o", out, "--layers", "-1", *COMMON)
    assert code == 0, err
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    tokenizer = PtmTokenizer.load(data["glove"])
    glove = read_weights(data["glove"])["vectors"]
    row = json.loads(out.read_text().splitlines()[0])
    ids = tokenizer.encode_batch(["A man is riding a bike ."])[0]
    assert len(row["features"]) == len(ids)
    for token_id, feature in zip(ids, row["features"]):
        values = torch.tensor(feature["layers"][0]["values"])
        assert values.shape == (16 + 2 * 32,)
        torch.testing.assert_close(values[:16], glove[token_id], atol=1e-4, rtol=1e-4)
    assert torch.tensor(row["features"][1]["layers"][0]["values"][16:]).abs().sum() > 0


def test_finetune_features_runs_on_cove(trained, tmp_path, capsys):
    lines = _lines("train.en", 120)
    rows = ["sentence\tlabel"] + [f"{s}\t{int('man' in s.lower().split())}" for s in lines]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, err = run_cli_err(capsys, "finetune", "--checkpoint", trained, "--task", "classification", "--train", tmp_path / "train.tsv",
                            "--dev", tmp_path / "train.tsv", "-o", tmp_path / "ft", "--mode", "features", "--max-steps", "10",
                            "--batch-size", "16", *COMMON)
    assert code == 0, err
    assert (tmp_path / "ft" / "best" / "config.json").is_file()


def test_resume_continues_the_run_exactly(data, trained, capsys):
    out = data["root"] / "resumed"
    code, err = run_cli_err(capsys, "pretrain", "--resume", trained / "checkpoints" / "step-00000020", "-o", out, *COMMON)
    assert code == 0, err
    straight = {r["step"]: r["loss"] for r in _metrics(trained) if "loss" in r}
    resumed = {r["step"]: r["loss"] for r in _metrics(out) if "loss" in r}
    assert resumed[40] == pytest.approx(straight[40], rel=1e-4)


@pytest.mark.parametrize("change,message", [
    (lambda a: [x for i, x in enumerate(a) if x != "--init-vectors" and (i == 0 or a[i - 1] != "--init-vectors")], "--init-vectors CKPT"),
    (lambda a: [("LM" if x == "PAIRS" else x) for x in a], "kind is 'lm'"),
    (lambda a: ["pretrain", "--arch", "bert", "--objective", "translation", *a[5:]], "not available for --arch bert"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(data, tmp_path, capsys, change, message):
    out = tmp_path / "run"
    args = [("PAIRS" if x == data["pairs"] else x) for x in _pretrain(data, out, "--max-steps", "2")]
    args = [(data["lm"] if x == "LM" else data["pairs"] if x == "PAIRS" else x) for x in change(args)]
    code, err = run_cli_err(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_target_tokenizer_needs_pairs(data, tmp_path, capsys):
    code, err = run_cli_err(capsys, "tokenize", "encode", data["root"] / "en.txt", "--tokenizer", data["glove"],
                            "--target-tokenizer", data["root"] / "tok-de", "-o", tmp_path / "x")
    assert code == 2 and "--target-tokenizer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
