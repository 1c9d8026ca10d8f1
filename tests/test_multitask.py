"""Multi-task finetuning (`ptm finetune --tasks`): the sampling rule, the checkpoint, `--head`, a run that learns."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import run_cli, shared_file

from ptmcli.checkpoint import list_step_checkpoints, read_config, save_checkpoint
from ptmcli.errors import PtmError
from ptmcli.finetuning.multitask import (
    MultiTaskModel,
    MultiTaskTrainTask,
    TaskSampler,
    build_checkpoint_config,
    head_config,
)
from ptmcli.finetuning.task_model import TaskModel, load_task_model
from ptmcli.tasks.task_spec import TaskSpec, read_tasks, sampling_probabilities
from tests.test_pretrain import TINY, corpus, ptm  # noqa: F401  (corpus is a fixture)

FT = ["--batch-size", "8", "--max-len", "32", "--no-progress", "--log-every", "10", "--threads", "1"]
GOOD = ["good", "great", "fine", "nice", "happy"]
BAD = ["bad", "awful", "poor", "sad", "wrong"]
CITIES = ["paris", "london", "berlin", "rome", "madrid"]
FILLER = "the of and a in to was is river music".split()


def _sentiment_rows(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if label else BAD))
        rows.append(f"{' '.join(words)}\t{label}")
    return rows


def _tagging_rows(n: int, seed: int) -> list[str]:
    """CoNLL sentences where the city names are B-LOC and every other word O."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(CITIES))
        lines += [f"{w} {'B-LOC' if w in CITIES else 'O'}" for w in words] + [""]
    return lines


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):  # noqa: F811
    """A tiny pretrained BERT (two steps: the point is the plumbing, not the quality)."""
    shards, tok = corpus
    root = tmp_path_factory.mktemp("pre")
    from ptmcli.cli.main import main

    try:
        main([str(a) for a in ["pretrain", "--data", shards, "--tokenizer", tok, "-o", root / "bert", *TINY, "--max-steps", "2"]])
    except SystemExit as stop:
        assert not stop.code
    return list_step_checkpoints(root / "bert")[-1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """Two learnable tasks, a sentence classification and a tagging task, and their tasks.toml."""
    root = tmp_path_factory.mktemp("toy")
    for name, n, seed in (("train", 200, 0), ("dev", 60, 1)):
        (root / f"sent-{name}.tsv").write_text("\n".join(_sentiment_rows(n, seed)) + "\n")
        (root / f"tag-{name}.conll").write_text("\n".join(_tagging_rows(n // 2, seed + 10)) + "\n")
    (root / "tasks.toml").write_text(
        'sampling = "temperature"\ntemperature = 2.0\n\n'
        '[[task]]\nname = "sent"\ntype = "classification"\ntrain = "sent-train.tsv"\ndev = "sent-dev.tsv"\n\n'
        '[[task]]\nname = "tag"\ntype = "tagging"\ntrain = "tag-train.conll"\ndev = "tag-dev.conll"\n')
    return root


@pytest.fixture(scope="module")
def mt_run(pretrained, toy, tmp_path_factory):
    """A two-task run (module scope: several tests read it)."""
    run = tmp_path_factory.mktemp("mt") / "run"
    cache = tmp_path_factory.mktemp("cache")
    from ptmcli.cli.main import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTM_CACHE", str(cache))
        try:
            main([str(a) for a in ["finetune", "--checkpoint", pretrained, "--tasks", toy / "tasks.toml", "-o", run,
                                   "--max-steps", "120", "--eval-every", "40", "--lr", "3e-3", *FT]])
        except SystemExit as stop:
            assert not stop.code
    return run


# -- the sampling rule ---------------------------------------------------------------------------------

def test_sampling_probabilities_follow_the_formula():
    sizes = [100, 900, 4000]
    assert sampling_probabilities(sizes, 1.0) == pytest.approx([n / sum(sizes) for n in sizes])
    for temperature in (2.0, 5.0):
        weights = [n ** (1 / temperature) for n in sizes]
        assert sampling_probabilities(sizes, temperature) == pytest.approx([w / sum(weights) for w in weights])
    flat = sampling_probabilities(sizes, 1e6)
    assert max(flat) - min(flat) < 1e-4, "a very high temperature is uniform"


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_batches_per_task_match_the_rule(temperature):
    """Counts of 6,000 draws against n * p_i: each within 4.5 standard deviations, and a chi-square check."""
    sizes = [50, 400, 2000]
    probs = sampling_probabilities(sizes, temperature)
    rows = [[{"input_ids": torch.tensor([i])} for i in range(n)] for n in sizes]
    task = MultiTaskTrainTask(["a", "b", "c"], rows, probs, lambda which, picked: {"rows": picked}, batch_size=2, seed=3)
    draws = 6000
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(draws // 100):
        for batch in task.next_micro_batches(100):
            counts[batch["task"]] += 1
    chi_square = 0.0
    for name, p in zip("abc", probs):
        expected, sd = draws * p, math.sqrt(draws * p * (1 - p))
        assert abs(counts[name] - expected) < 4.5 * sd, (name, counts, probs)
        chi_square += (counts[name] - expected) ** 2 / expected
    assert chi_square < 13.8, (counts, probs)  # 99.9% quantile of chi-square with 2 degrees of freedom


def test_sampler_resumes_where_it_stood():
    sampler = TaskSampler([0.2, 0.3, 0.5], seed=0)
    [sampler.draw() for _ in range(17)]
    state = json.loads(json.dumps(sampler.state_dict()))
    ahead = [sampler.draw() for _ in range(50)]
    other = TaskSampler([0.2, 0.3, 0.5], seed=9)
    other.load_state_dict(state)
    assert [other.draw() for _ in range(50)] == ahead


# -- the checkpoint --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["finetune", "features"])
def test_checkpoint_round_trip_keeps_every_head(pretrained, tmp_path, mode):
    """Three heads of three types on one encoder: each reloaded head computes what it computed before
    (in features mode each head has its own scalar mix, which extract-features --head reads)."""
    from ptmcli.checkpoint.loading import load_checkpoint

    source = load_checkpoint(pretrained)
    torch.manual_seed(0)
    kinds = {"cls": ("classification", ["a", "b", "c"]), "score": ("regression", []), "ner": ("token-classification", ["B-LOC", "O"])}
    heads, configs = {}, {}
    for name, (kind, labels) in kinds.items():
        heads[name] = TaskModel(source.arch, source.model, kind, max(1, len(labels)), mode,
                                pool="mean" if kind != "token-classification" else None, normed_top=True)
        spec = TaskSpec(name, kind, "train.tsv")
        configs[name] = head_config(spec, labels, mode, source.arch, 32, "accuracy", heads[name].pool)
    model = MultiTaskModel(source.model, heads).eval()
    with torch.no_grad():
        for head in heads.values():  # not the initial values: the reload must carry trained weights
            for key, param in head.named_parameters():
                if not key.startswith("lm."):
                    param.normal_()
    save_checkpoint(tmp_path / "mt", config=build_checkpoint_config(source, configs, mode=mode),
                    weights=model.checkpoint_state(), tokenizer_dir=pretrained)
    ids = torch.randint(5, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    stored = read_config(tmp_path / "mt")
    assert stored["task"]["type"] == "multi-task" and list(stored["task"]["heads"]) == list(kinds)
    for name in kinds:
        reloaded, config, _ = load_task_model(tmp_path / "mt", head=name)
        assert config["task"]["type"] == kinds[name][0]
        with torch.no_grad():
            before, after = model.heads[name](batch)["logits"], reloaded(batch)["logits"]
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
        if mode == "features":
            from ptmcli.features.model import load_feature_model

            mix = load_feature_model(tmp_path / "mt", head=name).scalar_mix
            torch.testing.assert_close(mix["weights"], model.heads[name].scalar_mix.weights.detach(), atol=0, rtol=0)
    with pytest.raises(PtmError, match=r"choose a head with --head \(cls, score, ner\)"):
        load_task_model(tmp_path / "mt")
    # The pretrained model alone still loads from it (the heads are skipped as extra heads).
    assert load_checkpoint(tmp_path / "mt").arch == source.arch


# -- the command line ------------------------------------------------------------------------------------

def test_two_task_run_learns_both_tasks_and_keeps_the_best_mean(mt_run):
    results = json.loads((mt_run / "results.json").read_text())
    best = results["best"]
    assert results["metric"] == "mean_main_metric"
    assert best["sent/accuracy"] >= 0.85, best
    assert best["tag/f1"] >= 0.8, best
    assert best["mean_main_metric"] == pytest.approx((best["sent/accuracy"] + best["tag/f1"]) / 2)
    records = [json.loads(line) for line in (mt_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_mean_main_metric" in r]
    assert len(evals) == 3 and all("eval_sent/accuracy" in r and "eval_tag/f1" in r for r in evals)
    assert max(r["eval_mean_main_metric"] for r in evals) == pytest.approx(best["mean_main_metric"])
    # Temperature 2 over 200 and 100 examples: p = sqrt(200) / (sqrt(200) + sqrt(100)) = 0.586 for sent.
    p_sent = 200 ** 0.5 / (200 ** 0.5 + 100 ** 0.5)
    shares = [r["sent/batch_share"] for r in records if "sent/batch_share" in r]
    assert len(shares) == 12 and abs(sum(shares) / len(shares) - p_sent) < 0.15, shares
    config = read_config(mt_run / "best")
    assert config["task"]["probabilities"] == pytest.approx({"sent": p_sent, "tag": 1 - p_sent})
    assert config["task"]["type"] == "multi-task" and set(config["task"]["heads"]) == {"sent", "tag"}
    assert config["task"]["heads"]["tag"]["type"] == "token-classification"


def test_head_is_chosen_by_eval_predict_and_extract_features(mt_run, toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    best = json.loads((mt_run / "results.json").read_text())["best"]
    code, err = ptm(capsys, "eval", "-c", mt_run / "best", "--data", toy / "sent-dev.tsv")
    assert code == 2 and err.strip().splitlines() == [
        f"ptm: error: --checkpoint {mt_run / 'best'} is a multi-task checkpoint: choose a head with --head (sent, tag)"]
    code, err = ptm(capsys, "eval", "-c", mt_run / "best", "--head", "nope", "--data", toy / "sent-dev.tsv")
    assert code == 2 and "no such head" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "eval", "-c", mt_run / "best", "--head", "sent", "--data", toy / "sent-dev.tsv", "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(best["sent/accuracy"])
    code, out, err = run_cli(capsys, "eval", "-c", mt_run / "best", "--head", "tag", "--data", toy / "tag-dev.conll", "--json")
    assert code == 0, err
    assert json.loads(out)["f1"] == pytest.approx(best["tag/f1"])

    (tmp_path / "in.txt").write_text("the river was great\nthe music was awful\n")
    code, out, err = run_cli(capsys, "predict", "-c", mt_run / "best", "--head", "sent", tmp_path / "in.txt")
    assert code == 0, err
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["1", "0"]
    code, err = ptm(capsys, "predict", "-c", mt_run / "best", tmp_path / "in.txt")
    assert code == 2 and "--head (sent, tag)" in err

    code, err = ptm(capsys, "extract-features", "-c", mt_run / "best", tmp_path / "in.txt", "-o", tmp_path / "f.jsonl", "--no-progress")
    assert code == 2 and "--head (sent, tag)" in err and not (tmp_path / "f.jsonl").exists()
    code, err = ptm(capsys, "extract-features", "-c", mt_run / "best", "--head", "sent", tmp_path / "in.txt", "-o", tmp_path / "f.jsonl",
                    "--pool", "mean", "--no-progress")
    assert code == 0, err
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 2


def test_single_task_finetuning_continues_from_the_multitask_model(mt_run, toy, tmp_path, capsys, monkeypatch):
    """MT-DNN's second stage: --head starts from that head (so the first evaluation already scores like it);
    plain --checkpoint takes the shared encoder and a fresh head."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    best = json.loads((mt_run / "results.json").read_text())["best"]
    common = ["--task", "classification", "--train", toy / "sent-train.tsv", "--dev", toy / "sent-dev.tsv", "--max-steps", "1", *FT]
    code, err = ptm(capsys, "finetune", "--checkpoint", mt_run / "best", "--head", "sent", "-o", tmp_path / "from-head", "--lr", "1e-9", *common)
    assert code == 0, err
    assert json.loads((tmp_path / "from-head" / "results.json").read_text())["best"]["accuracy"] == pytest.approx(best["sent/accuracy"])
    code, err = ptm(capsys, "finetune", "--checkpoint", mt_run / "best", "-o", tmp_path / "encoder", *common)
    assert code == 0, err
    assert read_config(tmp_path / "encoder" / "best")["task"]["type"] == "classification"
    code, err = ptm(capsys, "finetune", "--checkpoint", mt_run / "best", "--head", "tag", "-o", tmp_path / "wrong", *common)
    assert code == 2 and "a token-classification head; this run is --task classification" in err
    assert not (tmp_path / "wrong").exists()


def test_a_resumed_run_trains_as_one_that_never_stopped(pretrained, toy, tmp_path, capsys, monkeypatch):
    """Six steps straight, and the same run cut back to its step-3 checkpoint and resumed: the same weights
    (the sampler and each task's order are saved with the step checkpoint)."""
    import shutil

    from safetensors.torch import load_file

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    text = (toy / "tasks.toml").read_text().replace('dev = "sent-dev.tsv"\n', "").replace('dev = "tag-dev.conll"\n', "")
    (tmp_path / "tasks.toml").write_text(text.replace('"sent-', f'"{toy}/sent-').replace('"tag-', f'"{toy}/tag-'))
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained, "--tasks", tmp_path / "tasks.toml", "--lr", "1e-3", *FT,
                    "-o", tmp_path / "straight", "--max-steps", "6", "--save-every", "3", "--keep-last", "2")
    assert code == 0, err
    steps = list_step_checkpoints(tmp_path / "straight")
    assert [s.name for s in steps] == ["step-00000003", "step-00000006"]
    shutil.copytree(tmp_path / "straight", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / steps[-1].name)
    code, err = ptm(capsys, "finetune", "--resume", tmp_path / "cut", "--no-progress", "--threads", "1")
    assert code == 0, err
    straight = load_file(str(steps[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert straight.keys() == resumed.keys() and any(k.startswith("task_heads.tag.") for k in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


# -- bad tasks.toml files ------------------------------------------------------------------------------------

def _toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.tsv").write_text("sentence\tlabel\nfine\t1\n")
    path = tmp_path / "tasks.toml"
    path.write_text(text)
    return path


TASK = '[[task]]\nname = "a"\ntype = "classification"\ntrain = "a.tsv"\n'


@pytest.mark.parametrize("text,message", [
    ("sampling = \n", "not valid TOML"),
    ('[[task]]\nname = "a"\ntype = "summarise"\ntrain = "a.tsv"\n', "type = 'summarise'"),
    ('[[task]]\nname = "a"\ntype = "qa"\ntrain = "a.tsv"\n', "not supported in multi-task runs"),
    ('[[task]]\nname = "a"\ntype = "classification"\ntrain = "gone.tsv"\n', "train = 'gone.tsv': no such file"),
    (TASK + TASK, "task name 'a' is given twice"),
    (TASK.replace("train =", "colour = 1\ntrain ="), "unknown key 'colour'"),
    ('sampling = "proportional"\ntemperature = 2.0\n' + TASK, "temperature applies"),
    ("temperature = 0\n" + TASK, "temperature = 0"),
    ("steps = 10\nepochs = 1\n" + TASK, "steps or epochs"),
    ('sampling = "proportional"\n', "no [[task]] tables"),
    (TASK.replace('"a"', '"a b"', 1), "letters, digits"),
    (TASK + 'metric = "mse"\n', "metric = 'mse'"),
])
def test_bad_tasks_files_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = _toml(tmp_path, text)
    with pytest.raises(PtmError) as caught:
        read_tasks(path)
    assert message in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_good_tasks_file_reads_relative_paths_from_its_directory(tmp_path):
    spec = read_tasks(_toml(tmp_path, "temperature = 2\nsteps = 5\n" + TASK + 'text_columns = "sentence"\n'))
    assert spec.sampling == "temperature" and spec.temperature == 2.0 and spec.steps == 5
    assert spec.tasks[0].train == str(tmp_path / "a.tsv") and spec.tasks[0].text_columns == ("sentence",)


def test_single_task_flags_conflict_with_tasks(pretrained, toy, tmp_path, capsys):
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained, "--tasks", toy / "tasks.toml", "--task", "classification",
                    "-o", tmp_path / "out", *FT)
    assert code == 2 and "--task is set per task" in err and not (tmp_path / "out").exists()


# -- real data -----------------------------------------------------------------------------------------------

def test_sst2_and_rte_rows_train_together(pretrained, tmp_path, capsys, monkeypatch):
    sst2, rte = shared_file("sst2/train.tsv"), shared_file("rte/train.tsv")
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    for name, source, rows in (("sst2", sst2, 300), ("rte", rte, 200)):
        lines = source.read_text(encoding="utf-8").splitlines()
        (tmp_path / f"{name}-train.tsv").write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
        (tmp_path / f"{name}-dev.tsv").write_text("\n".join([lines[0], *lines[rows + 1 : rows + 61]]) + "\n", encoding="utf-8")
    (tmp_path / "tasks.toml").write_text(
        "steps = 4\n\n[[task]]\nname = \"sst2\"\ntype = \"classification\"\ntrain = \"sst2-train.tsv\"\ndev = \"sst2-dev.tsv\"\n\n"
        "[[task]]\nname = \"rte\"\ntype = \"pair-classification\"\ntrain = \"rte-train.tsv\"\ndev = \"rte-dev.tsv\"\n")
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained, "--tasks", tmp_path / "tasks.toml", "-o", tmp_path / "run", *FT)
    assert code == 0, err
    best = json.loads((tmp_path / "run" / "results.json").read_text())["best"]
    assert 0 <= best["sst2/accuracy"] <= 1 and 0 <= best["rte/accuracy"] <= 1
    assert read_config(tmp_path / "run" / "best")["task"]["heads"]["rte"]["labels"] == ["entailment", "not_entailment"]


def test_a_task_encoder_is_refused_with_tasks(pretrained, toy, tmp_path, capsys):
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained, "--tasks", toy / "tasks.toml", "--mode", "features",
                    "--encoder", "bilstm", "-o", tmp_path / "out", *FT)
    assert code == 2 and "--encoder with --tasks: each head" in err and not (tmp_path / "out").exists()
