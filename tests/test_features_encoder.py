"""`ptm finetune --mode features --encoder bilstm|cnn`: a task encoder over a frozen model's scalar mix.

ELMo and CoVe were used this way (the mixed layers feed the task's own BiLSTM): the pretrained model stays
exactly as it came, the mix, the encoder and a linear head train, and the saved checkpoint scores text as
training did.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

# The tiny random bert / gpt / elmo checkpoints and the sentiment and tagging data of the stored-features tests.
from test_finetune_features import cache, ckpts, data  # noqa: F401

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.errors import PtmError
from ptmcli.finetuning.word_encoders import encoder_spec
from ptmcli.models.registry import get_family

RUN = ["--batch-size", "8", "--max-len", "48", "--no-progress", "--log-every", "100", "--threads", "1", "--seed", "0"]


def _best(run) -> dict:
    return json.loads((run / "results.json").read_text())["best"]


def fails_in_one_line(capsys, *args) -> str:
    code, _out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ptm: error: "), err
    return lines[0]


def test_a_bilstm_over_elmo_features_learns_and_leaves_the_model_as_it_came(ckpts, data, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    code, _out, err = run_cli(capsys, "finetune", "--checkpoint", ckpts["elmo"], "--mode", "features", "--encoder", "bilstm",
                              "--encoder-hidden", "16", "--task", "classification", "--train", data / "train.tsv",
                              "--dev", data / "dev.tsv", "-o", run, "--epochs", "10", "--lr", "1e-2", *RUN)
    assert code == 0, err
    assert "mode features, bilstm encoder (1 x 2 x 16, max pooling) over the scalar mix" in err
    assert "out of the vocabulary" not in err  # the unknown-word line is for word tokenizers
    assert _best(run)["accuracy"] >= 0.9, _best(run)  # the MLP head on the same features: 0.67 after 15 epochs

    source, tuned = load_file(str(ckpts["elmo"] / "model.safetensors")), load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.equal(tensor, tuned[key]) for key, tensor in source.items())
    assert not torch.equal(tuned["scalar_mix.weights"], torch.zeros_like(tuned["scalar_mix.weights"]))
    assert any(key.startswith("word_encoder.net.lstm.") for key in tuned)
    assert tuned["classifier.weight"].shape == (2, 2 * 16)  # a linear layer on the encoder, not the MLP
    task = json.loads((run / "best" / "config.json").read_text())["task"]
    assert task["mode"] == "features" and task["encoder"]["type"] == "bilstm" and task["pool"] == "max"

    code, out, err = run_cli(capsys, "eval", "-c", run / "best", "--data", data / "dev.tsv", "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(_best(run)["accuracy"])
    (tmp_path / "in.txt").write_text("the river was great\nthe music is awful\n")
    code, out, err = run_cli(capsys, "predict", "-c", run / "best", tmp_path / "in.txt")
    assert code == 0, err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["1", "0"]


def test_a_bilstm_tagger_over_bert_features(ckpts, data, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    code, _out, err = run_cli(capsys, "finetune", "--checkpoint", ckpts["bert"], "--mode", "features", "--encoder", "bilstm",
                              "--encoder-hidden", "32", "--task", "token-classification", "--train", data / "train.conll",
                              "--dev", data / "dev.conll", "-o", run, "--epochs", "8", "--lr", "1e-2", *RUN)
    assert code == 0, err
    assert "mode features, bilstm encoder (1 x 2 x 32, per token) over the scalar mix" in err
    assert _best(run)["f1"] >= 0.8, _best(run)
    code, out, err = run_cli(capsys, "eval", "-c", run / "best", "--data", data / "dev.conll", "--json")
    assert code == 0, err
    assert json.loads(out)["f1"] == pytest.approx(_best(run)["f1"])


def test_a_cnn_over_gpt_features_reads_pairs_as_infersent_does(ckpts, data, tmp_path, capsys):  # noqa: F811
    pairs = tmp_path / "pairs.tsv"
    lines = (data / "train.tsv").read_text().splitlines()[1:41]
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "".join(f"{a.split(chr(9))[0]}\t{b.split(chr(9))[0]}\t"
                                                                 f"{int(a[-1] == b[-1])}\n" for a, b in zip(lines, lines[1:])))
    run = tmp_path / "run"
    code, _out, err = run_cli(capsys, "finetune", "--checkpoint", ckpts["gpt"], "--mode", "features", "--encoder", "cnn",
                              "--encoder-hidden", "8", "--task", "pair-classification", "--train", pairs, "-o", run,
                              "--max-steps", "3", *RUN)
    assert code == 0, err
    assert "cnn encoder (8 maps x widths 3,4,5, max over time), pairs as [u; v; |u-v|; u*v] over the scalar mix" in err
    assert load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))["classifier.weight"].shape == (2, 4 * 3 * 8)


@pytest.mark.parametrize("args, message", [
    (["--encoder", "bilstm"], "--encoder applies to static word vectors, or to a BERT checkpoint in --mode features"),
    (["--mode", "features", "--encoder-hidden", "8"], "--encoder-hidden sizes the encoder that --encoder bilstm|cnn asks for"),
    (["--mode", "features", "--encoder", "bilstm", "--no-freeze-embeddings"], "in --mode features the whole model stays frozen"),
    (["--mode", "features", "--encoder", "bilstm", "--pool", "cls"], "--pool cls: --encoder bilstm over the scalar mix read"),
    (["--mode", "features", "--encoder", "bilstm", "--discriminative-lr", "2.6"], "--discriminative-lr acts on the pretrained layers"),
])
def test_flags_that_do_not_apply_fail_in_one_line(ckpts, data, tmp_path, capsys, args, message):  # noqa: F811
    line = fails_in_one_line(capsys, "finetune", "--checkpoint", ckpts["bert"], "--task", "classification",
                             "--train", data / "train.tsv", "-o", tmp_path / "run", *args)
    assert message in line
    assert not (tmp_path / "run").exists()


def test_a_layout_that_ends_with_its_summary_token_is_refused():
    cfg = SimpleNamespace(mode="features", encoder="bilstm", encoder_hidden=None, encoder_layers=None,
                          freeze_embeddings=None, task="classification", train_features=None, aux_lm_weight=0.0,
                          pool=None, gradual_unfreeze=False, discriminative_lr=1.0)
    assert encoder_spec(cfg, get_family("bert"), pairs=False)["type"] == "bilstm"
    with pytest.raises(PtmError, match="ends with its summary token"):
        encoder_spec(cfg, get_family("xlnet"), pairs=False)
    with pytest.raises(PtmError, match="--train-features holds pooled or per-word vectors"):
        encoder_spec(SimpleNamespace(**{**vars(cfg), "train_features": "feats"}), get_family("bert"), pairs=False)
