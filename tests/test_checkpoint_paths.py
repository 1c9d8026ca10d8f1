"""What commands accept as a checkpoint: a checkpoint, a run directory (its best/ first), a transformers directory."""

from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

import pytest
from conftest import run_cli, run_cli_err

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory) -> Path:
    """A tiny transformers BertForMaskedLM directory with a WordPiece tokenizer.json and vocab.txt."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    root = tmp_path_factory.mktemp("hf")
    tok = root / "tok"
    train_tokenizer(islice(iter_texts([str(SAMPLE)]), 1500), "wordpiece", 500).save(tok)
    torch.manual_seed(0)
    size = json.loads((tok / "tokenizer_config.json").read_text())["vocab_size"]
    config = BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    directory = root / "hf-bert"
    BertForMaskedLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(tok / name, directory / name)
    return directory


def _sentiment(path: Path) -> Path:
    rows = ["sentence\tlabel"] + [f"the river was {w} today\t{i % 2}" for i, w in enumerate(["good", "bad", "calm", "wild"] * 6)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


FT = ["--task", "classification", "--batch-size", "8", "--max-len", "32", "--no-progress", "--threads", "1"]


def test_a_transformers_directory_works_where_a_checkpoint_does(hf_bert, tmp_path, capsys):
    train = _sentiment(tmp_path / "train.tsv")
    code, err = run_cli_err(capsys, "finetune", "--checkpoint", hf_bert, "--train", train, "--dev", train, "-o",
                            tmp_path / "run", "--max-steps", "2", *FT)
    assert code == 0, err
    assert f"converted {hf_bert} (BertForMaskedLM) to a ptm checkpoint for this run" in err
    (tmp_path / "in.txt").write_text("the river\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "extract-features", "-c", hf_bert, tmp_path / "in.txt", "-o", "-", "--layers", "-1")
    assert code == 0 and json.loads(out)["features"][0]["token"] == "[CLS]", err
    assert err.count("converted") == 1
    code, err = run_cli_err(capsys, "eval", "-c", hf_bert, "--data", tmp_path / "in.txt", "--threads", "1")
    assert code == 0 and "converted" in err, err

    # A family ptm does not convert is named in one line.
    other = tmp_path / "t5"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    code, err = run_cli_err(capsys, "eval", "-c", other, "--data", tmp_path / "in.txt")
    assert code == 2 and "cannot convert" in err and err.count("\n") == 1


def test_a_run_directory_stands_for_its_best_checkpoint(hf_bert, tmp_path, capsys):
    train = _sentiment(tmp_path / "train.tsv")
    run = tmp_path / "run"
    code, err = run_cli_err(capsys, "finetune", "--checkpoint", hf_bert, "--train", train, "--dev", train, "-o", run,
                            "--max-steps", "4", "--eval-every", "2", "--save-every", "2", "--pool", "pooler", *FT)
    assert code == 0, err
    best_step = json.loads((run / "best" / "config.json").read_text())["best"]["step"]
    code, err = run_cli_err(capsys, "eval", "-c", run, "--data", train, "--threads", "1")
    assert code == 0 and f"using {run / 'best'}" in err, err
    code, err = run_cli_err(capsys, "convert", run, tmp_path / "hf-out")
    assert code == 0 and f"using {run / 'best'}" in err, err
    assert best_step in (2, 4)
    # Without best/, the newest step, said as well.
    shutil.rmtree(run / "best")
    code, err = run_cli_err(capsys, "eval", "-c", run, "--data", train, "--threads", "1")
    assert code == 0 and "the run's newest checkpoint" in err and "step-00000004" in err, err


def test_a_head_that_reads_another_vector_than_transformers_head_is_not_exported(hf_bert, tmp_path, capsys):
    """BertForSequenceClassification reads the pooler: a mean-pooled head would silently predict otherwise."""
    train = _sentiment(tmp_path / "train.tsv")
    for pool in ("mean", "pooler"):
        code, err = run_cli_err(capsys, "finetune", "--checkpoint", hf_bert, "--train", train, "-o", tmp_path / pool,
                                "--max-steps", "1", "--pool", pool, *FT)
        assert code == 0, err
    code, err = run_cli_err(capsys, "convert", tmp_path / "mean", tmp_path / "hf-mean")
    assert code == 2 and "mean pooling" in err and err.count("ptm: error") == 1, err
    assert not (tmp_path / "hf-mean").exists()
    code, err = run_cli_err(capsys, "convert", tmp_path / "pooler", tmp_path / "hf-pooler")
    assert code == 0 and "BertForSequenceClassification" in err, err
