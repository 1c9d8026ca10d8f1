"""`ptm finetune` end to end on tiny pretrained checkpoints and small learnable tasks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sentiment_rows
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.finetuning.methods import discriminative_groups, layer_group, unfreeze_for_epoch
from ptmcli.finetuning.task_model import TaskModel
from ptmcli.models import bert
from ptmcli.training.schedule import lr_multiplier
from tests.test_gpt import GPT_TINY
from tests.test_pretrain import TINY, corpus, ptm  # noqa: F401  (corpus is a fixture)

FT = ["--batch-size", "8", "--max-len", "32", "--no-progress", "--log-every", "5", "--threads", "2"]
FILLER = "the of and a in to was is city river music".split()


def _sentences(n: int, seed: int) -> list[tuple[str, int]]:
    return sentiment_rows(n, seed, FILLER)


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):  # noqa: F811
    """A tiny pretrained bert and gpt (a few steps: the point is the plumbing, not the quality)."""
    shards, tok = corpus
    root = tmp_path_factory.mktemp("pre")
    import pytest as _pytest

    capsys = _pytest.MonkeyPatch()  # ptm() only needs an object with readouterr
    del capsys
    from ptmcli.cli.main import main

    for name, flags in (("bert", TINY), ("gpt", GPT_TINY), ("bert-mlm", [*TINY, "--objective", "mlm"])):
        try:
            main([str(a) for a in ["pretrain", "--data", shards, "--tokenizer", tok, "-o", root / name, *flags, "--max-steps", "2"]])
        except SystemExit as stop:
            assert not stop.code
    return root


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("sst")
    for name, n, seed in (("train", 240, 0), ("dev", 80, 1)):
        lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in _sentences(n, seed)]
        (root / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("arch,pool", [("bert", None), ("gpt", None), ("gpt", "mean")])
def test_finetune_learns_a_lexical_task_and_keeps_the_best(pretrained, sentiment, tmp_path, capsys, monkeypatch, arch, pool):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / arch, "--task", "classification", "--train", sentiment / "train.tsv",
                    "--dev", sentiment / "dev.tsv", "-o", run, "--epochs", "6", "--lr", "3e-3", *FT, *(["--pool", pool] if pool else []))
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["metric"] == "accuracy" and results["best"]["accuracy"] >= 0.85, results
    config = read_config(run / "best")
    assert config["task"]["type"] == "classification" and config["task"]["labels"] == ["0", "1"]
    assert config["task"].get("pool") == pool
    if pool == "mean":
        from ptmcli.finetuning.task_model import load_task_model

        model, _, _ = load_task_model(run / "best")
        ids, mask = torch.tensor([[5, 9, 13, 7, 0, 0]]), torch.tensor([[1, 1, 1, 1, 0, 0]])
        with torch.no_grad():
            tokens, pooled = model._top({"input_ids": ids, "attention_mask": mask})
        torch.testing.assert_close(pooled, tokens[:, :4].mean(1))
    weights = load_file(str(run / "best" / "model.safetensors"))
    assert "classifier.weight" in weights and any(k.startswith(f"{arch}.") for k in weights), "pretraining names are kept"
    assert list_step_checkpoints(run), "a resumable checkpoint is written at the end"

    # ptm eval on the best checkpoint reproduces the dev score and writes one prediction per input.
    predictions = tmp_path / "predictions.jsonl"
    capsys.readouterr()
    code, err = ptm(capsys, "eval", "-c", run / "best", "--data", sentiment / "dev.tsv", "--predictions", predictions, "--json")
    assert code == 0, err
    assert "macro f1" in err
    predicted = [json.loads(line)["prediction"] for line in predictions.read_text().splitlines()]
    gold = [line.rsplit("\t", 1)[1] for line in (sentiment / "dev.tsv").read_text().splitlines()[1:]]
    assert len(predicted) == len(gold) == 80
    assert sum(p == g for p, g in zip(predicted, gold)) / 80 == pytest.approx(results["best"]["accuracy"])
    code, err = ptm(capsys, "eval", "-c", run / "best", "--sample", "hello")
    assert code == 2 and "needs a language model" in err


def _features_run(capsys, checkpoint, sentiment, run, steps: int):
    """The last checkpoint of a short ``--mode features`` run on the sentiment task."""
    code, err = ptm(capsys, "finetune", "--checkpoint", checkpoint, "--task", "classification", "--train", sentiment / "train.tsv",
                    "-o", run, "--mode", "features", "--max-steps", str(steps), *FT)
    assert code == 0, err
    return list_step_checkpoints(run)[-1]


def test_features_mode_leaves_the_pretrained_weights_untouched(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    ckpt = _features_run(capsys, pretrained / "bert", sentiment, tmp_path / "run", 6)
    before = load_file(str(list_step_checkpoints(pretrained / "bert")[-1] / "model.safetensors"))
    after = load_file(str(ckpt / "model.safetensors"))
    for key, tensor in before.items():
        assert torch.equal(tensor, after[key]), key
    assert "scalar_mix.weights" in after and not torch.equal(after["scalar_mix.weights"], torch.zeros_like(after["scalar_mix.weights"]))


def test_a_gpt_features_checkpoint_mixes_the_layers_extract_features_gives(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    from ptmcli.features.model import load_feature_model
    from ptmcli.finetuning.task_model import load_task_model

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    ckpt = _features_run(capsys, pretrained / "gpt", sentiment, tmp_path / "run", 4)
    assert read_config(ckpt)["task"]["normed_top_layer"] is True
    task_model, _, _ = load_task_model(ckpt)
    features = load_feature_model(ckpt)
    ids = torch.tensor([[5, 9, 13, 7, 21]])
    with torch.no_grad():
        _, trained_on = task_model.encoder_layers({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        extracted = features.stack(ids, None, None)
    for a, b in zip(trained_on, extracted, strict=True):
        torch.testing.assert_close(a, b)


def test_resume_reaches_the_same_weights(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    common = ["--checkpoint", pretrained / "bert", "--task", "classification", "--train", sentiment / "train.tsv", "--max-steps", "8",
              "--aux-lm-weight", "0.5", "--gradual-unfreeze", "--discriminative-lr", "2.6", "--schedule", "stlr", *FT]
    assert ptm(capsys, "finetune", *common, "-o", tmp_path / "full")[0] == 0
    assert ptm(capsys, "finetune", *common, "-o", tmp_path / "cut", "--save-every", "3", "--keep-last", "0")[0] == 0
    import shutil

    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "finetune", "--resume", tmp_path / "cut")
    assert code == 0, err
    full = load_file(str(list_step_checkpoints(tmp_path / "full")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_resume_puts_back_a_best_checkpoint_a_kill_left_retired(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    # Replacing best/ takes two renames: the old one aside to .best.old-*/best, the new one in from
    # .best.tmp-*. A kill between them leaves no best/; the resumed run puts the old one back.
    import os
    import shutil

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "classification", "--train", sentiment / "train.tsv",
                    "--dev", sentiment / "dev.tsv", "-o", run, "--max-steps", "2", "--eval-every", "2", "--save-every", "2", *FT)
    assert code == 0, err
    best = run / "best"
    kept = {path.relative_to(best): path.read_bytes() for path in best.rglob("*") if path.is_file()}
    retired = run / ".best.old-k1ll3d00"
    retired.mkdir()
    shutil.copytree(best, run / ".best.tmp-k1ll3d00")  # the new copy that never got its name
    os.rename(best, retired / "best")

    code, err = ptm(capsys, "finetune", "--resume", run)
    assert code == 0, err
    assert {path.relative_to(best): path.read_bytes() for path in best.rglob("*") if path.is_file()} == kept
    assert not retired.exists()
    results = json.loads((run / "results.json").read_text())
    assert results["best"] == read_config(best)["best"] and results["best_step"] == 2


@pytest.mark.parametrize("task, lines", [
    ("regression", ["sentence1\tsentence2\tscore"] + ["a good city\tthe good river\t4.5", "a bad city\tthe good river\t1.0"] * 6),
    ("token-classification", ["EU B-ORG", "rejects O", "German B-MISC", "call O", "", "Peter B-PER", "Blackburn I-PER", ""] * 6),
    ("multiple-choice", [json.dumps({"premise": "the city", "choice1": "good river", "choice2": "bad music", "question": "cause", "label": i % 2}) for i in range(12)]),
])
def test_every_task_type_trains_and_evaluates(pretrained, tmp_path, capsys, monkeypatch, task, lines):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    suffix = {"regression": "tsv", "token-classification": "txt", "multiple-choice": "jsonl"}[task]
    data = tmp_path / f"data.{suffix}"
    data.write_text("\n".join(lines) + "\n")
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", task, "--train", data, "--dev", data,
                    "-o", tmp_path / "run", "--max-steps", "4", *FT)
    assert code == 0, err
    best = json.loads((tmp_path / "run" / "results.json").read_text())["best"]
    expected = {"regression": "pearson", "token-classification": "f1", "multiple-choice": "accuracy"}[task]
    assert expected in best


@pytest.mark.parametrize("args, message", [
    (["--task", "classification"], "--train is required"),
    (["--task", "classification", "--train", "{train}", "--max-len", "4096"], "--max-len 4096 exceeds"),
    (["--task", "classification", "--train", "{train}", "--discriminative-lr", "0.5"], "--discriminative-lr"),
    (["--task", "classification", "--train", "{train}", "--mode", "features", "--gradual-unfreeze"], "--gradual-unfreeze conflicts"),
    (["--task", "classification", "--train", "{train}", "--patience", "2"], "--patience needs --dev"),
    (["--task", "classification", "--train", "{train}", "--encoder", "cnn"], "--encoder applies to static word vectors"),
    (["--task", "classification", "--train", "{train}", "--no-freeze-embeddings"], "--freeze-embeddings applies to static"),
])
def test_bad_flags_fail_with_one_line(pretrained, sentiment, tmp_path, capsys, args, message):
    args = [a.replace("{train}", str(sentiment / "train.tsv")) for a in args]
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "-o", tmp_path / "run", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_layer_groups_rates_and_unfreezing():
    lm = bert.BertForPreTraining(bert.preset_config("bert-tiny", vocab_size=50, num_layers=3))
    model = TaskModel("bert", lm, "classification", 2)
    assert layer_group("lm.bert.embeddings.word_embeddings.weight", 3, model.bottom_prefixes) == 0
    assert layer_group("lm.bert.layers.2.ffn.up.weight", 3, model.bottom_prefixes) == 3
    assert layer_group("classifier.weight", 3, model.bottom_prefixes) == 4
    rates = {g["layer_group"]: g["lr"] for g in discriminative_groups(model, 1.0, 0.01, 2.0, 3)}
    assert rates == {0: 1 / 16, 1: 1 / 8, 2: 1 / 4, 3: 1 / 2, 4: 1.0}
    assert unfreeze_for_epoch(model, 0, 3) == 4
    assert not model.lm.bert.layers[2].ffn.up.weight.requires_grad and model.classifier.weight.requires_grad
    unfreeze_for_epoch(model, 2, 3)
    assert model.lm.bert.layers[1].ffn.up.weight.requires_grad and not model.lm.bert.layers[0].ffn.up.weight.requires_grad


def test_slanted_triangular_schedule():
    values = [lr_multiplier(s, warmup_steps=10, max_steps=100, schedule="stlr") for s in range(100)]
    assert values[0] == pytest.approx(1 / 32) and max(values) == values[10] == 1.0
    assert all(a < b for a, b in zip(values[:10], values[1:11])) and all(a > b for a, b in zip(values[10:], values[11:]))


def test_ulmfit_methods_together_still_learn(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    # Gradual unfreezing trains only the head in epoch 1; by the last epochs every group trains. Ten epochs: the
    # fixture's tokenizer breaks frequency ties differently in each process, and at six the best dev accuracy
    # ranged 0.83-0.99 across runs.
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "gpt", "--task", "classification", "--train", sentiment / "train.tsv",
                    "--dev", sentiment / "dev.tsv", "-o", run, "--epochs", "10", "--lr", "3e-3", "--gradual-unfreeze",
                    "--discriminative-lr", "2.6", "--schedule", "stlr", *FT)
    assert code == 0, err
    assert json.loads((run / "results.json").read_text())["best"]["accuracy"] >= 0.85


def test_saves_survive_the_source_checkpoint_disappearing(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    # A run directory given as --checkpoint may prune the step it resolved to while finetuning runs.
    import shutil

    from ptmcli.finetuning.task import FinetuneTask

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "source"
    shutil.copytree(pretrained / "bert", source)
    real_next, calls = FinetuneTask.next_micro_batches, [0]

    def next_then_prune(self, count):
        calls[0] += 1
        if calls[0] == 2:
            shutil.rmtree(source)
        return real_next(self, count)

    monkeypatch.setattr(FinetuneTask, "next_micro_batches", next_then_prune)
    code, err = ptm(capsys, "finetune", "--checkpoint", source, "--task", "classification", "--train", sentiment / "train.tsv",
                    "--dev", sentiment / "dev.tsv", "--max-steps", "4", "--eval-every", "2", "--save-every", "2", *FT, "-o", tmp_path / "run")
    assert code == 0, err
    assert not source.exists()
    for saved in [tmp_path / "run" / "best", *list_step_checkpoints(tmp_path / "run")]:
        assert (saved / "vocab.txt").exists() or (saved / "tokenizer.json").exists(), saved


def test_max_pooling_reads_only_the_real_tokens():
    lm = bert.BertForPreTraining(bert.preset_config("bert-tiny", vocab_size=50, num_layers=1))
    model = TaskModel("bert", lm, "classification", 2, pool="max")
    tokens = torch.tensor([[[1.0, -3.0], [2.0, -5.0], [9.0, 9.0]]])  # the third position is padding
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(model.pool_tokens(tokens, mask), torch.tensor([[2.0, -3.0]]))
    layered = tokens.unsqueeze(2).expand(1, 3, 4, 2)  # [B, T, K, D], as the scalar mix's input
    torch.testing.assert_close(model.pool_tokens(layered, mask), torch.tensor([[2.0, -3.0]]).unsqueeze(1).expand(1, 4, 2))


def _with_config(source, target, **entries):
    """A copy of checkpoint ``source`` whose config.json has ``entries`` set."""
    import shutil

    from ptmcli.checkpoint import resolve_checkpoint

    shutil.copytree(resolve_checkpoint(source), target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **entries}, indent=2))
    return target


def _short_run(capsys, checkpoint, sentiment, run, *flags):
    code, err = ptm(capsys, "finetune", "--checkpoint", checkpoint, "--task", "classification", "--train", sentiment / "train.tsv",
                    "-o", run, "--max-steps", "2", *FT, *flags)
    assert code == 0, err
    return err, read_config(list_step_checkpoints(run)[-1])["task"]


@pytest.mark.parametrize("pool", ["max", "cls", "mean"])
def test_a_sentence_transformers_checkpoint_pools_as_it_was_trained(pretrained, sentiment, tmp_path, capsys, monkeypatch, pool):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    embedding = {"pool": pool, "normalize": True, "max_seq_length": None}
    checkpoint = _with_config(pretrained / "bert", tmp_path / "st", sentence_embedding=embedding)
    err, task = _short_run(capsys, checkpoint, sentiment, tmp_path / "run")
    assert task["pool"] == pool
    assert f"ptm: pooling {pool}, as the sentence-transformers model was trained (--pool to change)" in err
    # --pool still decides, and silently.
    err, task = _short_run(capsys, checkpoint, sentiment, tmp_path / "run-last", "--pool", "last", "--overwrite")
    assert task["pool"] == "last" and "ptm: pooling" not in err


def test_a_bert_without_a_trained_pooler_reads_the_mean(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    err, task = _short_run(capsys, pretrained / "bert-mlm", sentiment, tmp_path / "mlm")
    assert task["pool"] == "mean" and "ptm: pooling mean, since mlm pretraining left BERT's pooler untrained" in err
    err, task = _short_run(capsys, pretrained / "bert", sentiment, tmp_path / "nsp")  # mlm+nsp trained the pooler
    assert "pool" not in task and "ptm: pooling" not in err
    err, task = _short_run(capsys, pretrained / "bert-mlm", sentiment, tmp_path / "pooler", "--pool", "pooler")
    assert task["pool"] == "pooler" and "ptm: pooling" not in err
    from ptmcli.finetuning.task_model import load_task_model

    model, _, _ = load_task_model(list_step_checkpoints(tmp_path / "pooler")[-1])
    ids, mask = torch.tensor([[5, 9, 13, 7, 0, 0]]), torch.tensor([[1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        tokens, pooled = model._top({"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(pooled, model.lm.bert.pool(tokens))
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "gpt", "--task", "classification", "--train", sentiment / "train.tsv",
                    "-o", tmp_path / "gpt", "--pool", "pooler", *FT)
    assert code == 2 and "--pool pooler reads BERT's pooler" in err and err.count("\n") == 1, err


def test_resume_keeps_the_pooling_the_run_started_with(pretrained, sentiment, tmp_path, capsys, monkeypatch):
    # A run started when an MLM-only BERT still read its pooler by default goes on reading it.
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert-mlm", "--task", "classification", "--train", sentiment / "train.tsv",
                    "-o", run, "--max-steps", "4", "--save-every", "2", "--keep-last", "0", *FT)
    assert code == 0, err
    first, last = list_step_checkpoints(run)
    import shutil

    shutil.rmtree(last)
    config = json.loads((first / "config.json").read_text())
    del config["task"]["pool"]
    (first / "config.json").write_text(json.dumps(config))
    code, err = ptm(capsys, "finetune", "--resume", run)
    assert code == 0, err
    assert "pool" not in read_config(list_step_checkpoints(run)[-1])["task"] and "ptm: pooling" not in err


def test_a_run_that_predicts_one_class_says_so(pretrained, sentiment, tmp_path, capsys):
    """A rate far too high leaves the head on the majority class: the summary and results.json say so."""
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "classification",
                    "--train", sentiment / "train.tsv", "--dev", sentiment / "dev.tsv", "-o", run, "--epochs", "1",
                    "--lr", "3", *FT)
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["best"]["predicted_classes"] == 1
    assert "all one class" in err and "all one class" in results["warnings"][0]
    # A run that learns has no warning.
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "classification",
                    "--train", sentiment / "train.tsv", "--dev", sentiment / "dev.tsv", "-o", tmp_path / "good",
                    "--epochs", "3", "--lr", "1e-3", *FT)
    assert code == 0, err
    good = json.loads((tmp_path / "good" / "results.json").read_text())
    assert good["best"]["predicted_classes"] == 2 and "warnings" not in good


def test_the_default_rate_follows_the_model_width(pretrained, sentiment, tmp_path, capsys):
    from ptmcli.finetuning.config import default_lr

    assert default_lr("finetune", 256) == 3e-4 and default_lr("finetune", 768) == 1e-4 and default_lr("features", 256) == 1e-3
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "classification",
                    "--train", sentiment / "train.tsv", "-o", tmp_path / "run", "--max-steps", "1", *FT)
    assert code == 0 and ", lr 0.0003," in err, err
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "classification",
                    "--train", sentiment / "train.tsv", "-o", tmp_path / "given", "--max-steps", "1", "--lr", "2e-5", *FT)
    assert code == 0 and ", lr 2e-05," in err, err
