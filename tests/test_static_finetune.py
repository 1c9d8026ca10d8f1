"""`ptm finetune` on static word vectors: a small BiLSTM or CNN between the vectors and the head."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, shared_file
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.finetuning.word_encoders import WordEncoder, _word_positions

GOOD = ["good", "great", "fine", "nice", "happy"]
BAD = ["bad", "awful", "poor", "sad", "wrong"]
FILLER = "the of and a in to was is city river music".split()
FT = ["--batch-size", "16", "--no-progress", "--log-every", "5", "--threads", "2", "--encoder-hidden", "32",
      "--lr", "1e-2"]  # a rate that learns these tiny tasks in few steps


def _sentences(n: int, seed: int, unknown: float = 0.0) -> list[list[str]]:
    """Word lists with one sentiment word among fillers; ``unknown``: share with a word no vector has."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 7))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD + BAD))
        if rng.random() < unknown:
            words.insert(rng.randrange(len(words) + 1), "zebra")
        rows.append(words)
    return rows


def _label(words: list[str]) -> int:
    return int(any(w in GOOD for w in words))


def _tsv(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A converted word2vec text file (the sentiment words apart along one axis) and small task files."""
    root = tmp_path_factory.mktemp("static-ft")
    rng = np.random.default_rng(0)
    lines = [f"{len(GOOD + BAD + FILLER)} 16"]
    for word in GOOD + BAD + FILLER:
        vector = rng.normal(scale=0.3, size=16)
        vector[0] += 2.0 if word in GOOD else -2.0 if word in BAD else 0.0
        lines.append(word + " " + " ".join(f"{x:.5f}" for x in vector))
    (root / "vectors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from ptmcli.cli.main import main

    try:
        main(["convert", str(root / "vectors.txt"), str(root / "ckpt")])
    except SystemExit as stop:
        assert not stop.code
    for name, n, seed in (("train", 240, 0), ("dev", 80, 1)):
        sentences = _sentences(n, seed, unknown=0.25 if name == "dev" else 0.0)
        _tsv(root / f"{name}.tsv", "sentence\tlabel", [f"{' '.join(s)}\t{_label(s)}" for s in sentences])
        pairs = list(zip(sentences, _sentences(n, seed + 10)))
        _tsv(root / f"{name}-pairs.tsv", "sentence1\tsentence2\tlabel",
             [f"{' '.join(a)}\t{' '.join(b)}\t{int(_label(a) == _label(b))}" for a, b in pairs])
        tags = {**{w: "B-POS" for w in GOOD}, **{w: "B-NEG" for w in BAD}}
        (root / f"{name}.conll").write_text("".join("\n".join(f"{w} {tags.get(w, 'O')}" for w in s) + "\n\n" for s in sentences))
    return root


def ok(capsys, *args) -> str:
    code, _out, err = run_cli(capsys, *args)
    assert code == 0, err
    return err


def fails_in_one_line(capsys, *args) -> str:
    code, _out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ptm: error: "), err
    return lines[0]


def _best(run) -> dict:
    return json.loads((run / "results.json").read_text())["best"]


def test_a_bilstm_over_frozen_vectors_learns_word_identity_evaluates_and_predicts(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    err = ok(capsys, "finetune", "--checkpoint", data / "ckpt", "--task", "classification", "--train", data / "train.tsv",
             "--dev", data / "dev.tsv", "-o", run, "--epochs", "4", *FT)
    assert "bilstm encoder (1 x 2 x 32, max pooling), frozen vectors" in err
    oov = [line for line in err.splitlines() if "out of the vocabulary" in line]
    assert len(oov) == 1 and "dev words" in oov[0], err  # one "zebra" in a quarter of the dev sentences, [UNK]
    assert _best(run)["accuracy"] >= 0.9, _best(run)

    source, tuned = load_file(str(data / "ckpt" / "model.safetensors")), load_file(str(run / "best" / "model.safetensors"))
    assert torch.equal(source["vectors"], tuned["vectors"])
    assert any(key.startswith("word_encoder.net.lstm.") for key in tuned)
    task = json.loads((run / "best" / "config.json").read_text())["task"]
    assert task["encoder"]["type"] == "bilstm" and task["encoder"]["frozen_embeddings"] and task["pool"] == "max"

    code, out, err = run_cli(capsys, "eval", "-c", run, "--data", data / "dev.tsv", "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(_best(run)["accuracy"])
    (tmp_path / "in.txt").write_text("the river was great\nthe music is awful\n")
    code, out, err = run_cli(capsys, "predict", "-c", run, tmp_path / "in.txt")
    assert code == 0, err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["1", "0"]

    # The vectors of a finetuned checkpoint still load as word vectors (the task parts are skipped).
    code, out, err = run_cli(capsys, "extract-features", "-c", run / "best", tmp_path / "in.txt", "-o", tmp_path / "feats")
    assert code == 0, err


def test_unfrozen_vectors_train(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    err = ok(capsys, "finetune", "--checkpoint", data / "ckpt", "--task", "classification", "--train", data / "train.tsv",
             "-o", run, "--max-steps", "4", "--no-freeze-embeddings", *FT)
    assert "vectors trained" in err
    source = load_file(str(data / "ckpt" / "model.safetensors"))["vectors"]
    tuned = load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))["vectors"]
    assert source.shape == tuned.shape and not torch.equal(source, tuned)


def test_a_cnn_reads_pairs_as_infersent_does(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    err = ok(capsys, "finetune", "--checkpoint", data / "ckpt", "--task", "pair-classification", "--encoder", "cnn",
             "--train", data / "train-pairs.tsv", "--dev", data / "dev-pairs.tsv", "-o", run, "--epochs", "6", *FT)
    assert "cnn encoder (32 maps x widths 3,4,5, max over time), pairs as [u; v; |u-v|; u*v]" in err
    # Whether two sentences agree is in neither alone: only the combination can tell.
    assert _best(run)["accuracy"] >= 0.85, _best(run)
    weights = load_file(str(run / "best" / "model.safetensors"))
    assert weights["classifier.weight"].shape == (2, 4 * 3 * 32)
    code, out, err = run_cli(capsys, "eval", "-c", run, "--data", data / "dev-pairs.tsv", "--json")
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(_best(run)["accuracy"]), err


def test_a_bilstm_tagger(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    ok(capsys, "finetune", "--checkpoint", data / "ckpt", "--task", "token-classification", "--train", data / "train.conll",
       "--dev", data / "dev.conll", "-o", run, "--epochs", "5", *FT)
    assert _best(run)["f1"] >= 0.9, _best(run)
    (tmp_path / "in.txt").write_text("the city was nice\n")
    code, out, err = run_cli(capsys, "predict", "-c", run, tmp_path / "in.txt")
    assert code == 0, err
    assert json.loads(out)["tags"] == ["O", "O", "O", "B-POS"]


def test_resume_reaches_the_same_weights(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    common = ["--checkpoint", data / "ckpt", "--task", "classification", "--train", data / "train.tsv", "--max-steps", "6",
              "--no-freeze-embeddings", *FT]
    ok(capsys, "finetune", *common, "-o", tmp_path / "full")
    ok(capsys, "finetune", *common, "-o", tmp_path / "cut", "--save-every", "2", "--keep-last", "0")
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    ok(capsys, "finetune", "--resume", tmp_path / "cut")
    full = load_file(str(list_step_checkpoints(tmp_path / "full")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


@pytest.mark.parametrize("args, message", [
    (["--task", "token-classification", "--train", "{conll}", "--encoder", "cnn"], "--encoder cnn reads whole sentences"),
    (["--task", "classification", "--train", "{train}", "--mode", "features"], "--mode features trains a scalar mix"),
    (["--task", "classification", "--train", "{train}", "--aux-lm-weight", "0.5"], "--aux-lm-weight"),
    (["--task", "classification", "--train", "{train}", "--pool", "cls"], "--pool cls"),
    (["--task", "classification", "--train", "{train}", "--encoder", "cnn", "--encoder-layers", "2"], "--encoder-layers applies"),
    (["--task", "classification", "--train", "{train}", "--gradual-unfreeze"], "add --no-freeze-embeddings"),
])
def test_flags_that_do_not_apply_fail_in_one_line(data, tmp_path, capsys, args, message):
    args = [a.replace("{train}", str(data / "train.tsv")).replace("{conll}", str(data / "train.conll")) for a in args]
    assert message in fails_in_one_line(capsys, "finetune", "--checkpoint", data / "ckpt", "-o", tmp_path / "run", *args)
    assert not (tmp_path / "run").exists()


def test_each_text_is_encoded_as_it_would_be_alone():
    torch.manual_seed(0)
    spec = {"type": "bilstm", "hidden_size": 4, "num_layers": 2, "pairs": True, "dropout": 0.0, "frozen_embeddings": True}
    encoder = WordEncoder(3, spec, "mean").eval()
    # start a a a delimiter b b end, then padding; and each text alone as start text end
    vectors = torch.randn(1, 10, 3)
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]])
    assert _word_positions(torch.arange(10)[None], mask.sum(1, keepdim=True), types, 1).tolist() == [
        [False, True, True, True, False, True, True, False, False, False]]
    pair = encoder(vectors, mask, types, per_token=False)
    single = WordEncoder(3, dict(spec, pairs=False), "mean").eval()
    single.load_state_dict(encoder.state_dict())
    u = single(vectors[:, [0, 1, 2, 3, 4]], torch.ones(1, 5, dtype=torch.long), None, per_token=False)
    v = single(vectors[:, [4, 5, 6, 7]], torch.ones(1, 4, dtype=torch.long), None, per_token=False)
    torch.testing.assert_close(pair, torch.cat([u, v, (u - v).abs(), u * v], -1))


def test_sst2_sentences_over_word2vec_vectors(tmp_path, capsys, monkeypatch):
    """Real data: a few hundred SST-2 sentences over word2vec vectors trained on SST-2's own text."""
    train, dev = shared_file("sst2/train.tsv"), shared_file("sst2/dev.tsv")
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    lines = train.read_text(encoding="utf-8").splitlines()
    (tmp_path / "text.txt").write_text("\n".join(line.split("\t")[0] for line in lines[1:5001]) + "\n", encoding="utf-8")
    (tmp_path / "train.tsv").write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join(dev.read_text(encoding="utf-8").splitlines()[:201]) + "\n", encoding="utf-8")
    ok(capsys, "tokenize", "train", tmp_path / "text.txt", "--model", "word", "--min-count", "2", "-o", tmp_path / "tok")
    ok(capsys, "tokenize", "encode", tmp_path / "text.txt", "--tokenizer", tmp_path / "tok", "-o", tmp_path / "shards")
    ok(capsys, "pretrain", "--arch", "word2vec", "--data", tmp_path / "shards", "-o", tmp_path / "w2v", "--dim", "32",
       "--min-count", "2", "--epochs", "2", "--workers", "1")
    run = tmp_path / "run"
    err = ok(capsys, "finetune", "--checkpoint", tmp_path / "w2v", "--task", "classification", "--train", tmp_path / "train.tsv",
             "--dev", tmp_path / "dev.tsv", "-o", run, "--epochs", "2", *FT)
    assert "out of the vocabulary" in err
    best = _best(run)
    assert 0.0 < best["accuracy"] <= 1.0 and best["predicted_classes"] >= 1
    code, out, err = run_cli(capsys, "eval", "-c", run, "--data", tmp_path / "dev.tsv", "--json")
    assert code == 0 and json.loads(out)["examples"] == 200, err
