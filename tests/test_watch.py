"""Watching runs: `ptm plot`, `ptm info` and `--tensorboard`, on tiny real pretraining runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints
from tests.test_pretrain import TINY, corpus  # noqa: F401  (corpus is a fixture)

STEPS = ["--max-steps", "4", "--eval-every", "2", "--seed", "5", "--threads", "2"]


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):  # noqa: F811
    """Two tiny pretraining runs: `full` (4 steps) and `cut` (the same, saved every 2 steps, cut back to
    step 2 and resumed), both with --tensorboard."""
    from ptmcli.cli.main import main

    shards, tok = corpus
    root = tmp_path_factory.mktemp("watch")
    common = ["pretrain", "--data", shards, "--tokenizer", tok, *TINY, *STEPS, "--tensorboard"]
    for args in ([*common, "-o", root / "full"],
                 [*common, "-o", root / "cut", "--save-every", "2", "--keep-last", "0"],
                 ["pretrain", "--resume", root / "cut"]):
        if args[1] == "--resume":
            for ckpt in list_step_checkpoints(root / "cut")[1:]:
                shutil.rmtree(ckpt)  # as if killed after step 2
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            assert not stop.code
    return root


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_plot_writes_a_png_and_an_svg_with_a_curve_per_run(runs, tmp_path, capsys):
    from ptmcli.commands.plot import build_figure, read_run

    code, _, err = run_cli(capsys, "plot", runs / "full", runs / "cut", "-o", tmp_path / "curves.png")
    assert code == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(capsys, "plot", runs / "full", runs / "cut", "--x", "tokens", "--label", "a", "--label", "b",
                           "-o", tmp_path / "curves.svg")
    assert code == 0, err
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]  # no staging files left

    for x in ("step", "tokens", "time"):
        figure = build_figure([read_run(runs / "full"), read_run(runs / "cut")], x)
        axes = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
        assert list(axes)[0] == "loss"
        # Training loss only: one line per run. mlm_loss is also evaluated: a line and markers per run.
        assert len(axes["loss"].get_lines()) == 2
        assert len(axes["mlm_loss"].get_lines()) == 4
        assert [line.get_linestyle() for line in axes["mlm_loss"].get_lines()] == ["-", "None", "-", "None"]
        assert len(axes["lr"].get_lines()) == 2
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels[:2] == ["full", "cut"]
    steps = [list(line.get_xdata()) for line in build_figure([read_run(runs / "full")], "step").axes[0].get_lines()]
    assert steps == [[r["step"] for r in _records(runs / "full") if "loss" in r]]


@pytest.mark.parametrize(("args", "fault"), [
    (["{empty}", "-o", "{tmp}/c.png"], "no metrics.jsonl"),
    (["{run}", "--x", "epochs", "-o", "{tmp}/c.png"], "--x 'epochs'"),
    (["{run}", "-o", "{tmp}/c.xyz"], ".xyz"),
    (["{run}", "{run}", "--label", "a", "-o", "{tmp}/c.png"], "--label"),
])
def test_plot_refuses_bad_input_in_one_line_and_writes_nothing(runs, tmp_path, capsys, args, fault):
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", "tmp": tmp_path / "out", "run": runs / "full"}
    code, out, err = run_cli(capsys, "plot", *[a.format(**names) for a in args])
    assert code == 2 and fault in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_info_reports_parameters_steps_and_json(runs, capsys):
    from ptmcli.checkpoint.loading import load_checkpoint

    latest = list_step_checkpoints(runs / "full")[-1]
    model = load_checkpoint(latest, torch.device("cpu"), note_initialised=False).model
    expected = sum(p.numel() for p in model.parameters())  # tied weights counted once, as stored
    code, out, err = run_cli(capsys, "info", runs / "full", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["parameters"] == expected
    assert info["family"] == "bert" and info["objective"] == "mlm+nsp" and info["steps"] == 4
    assert info["tokenizer"]["kind"] == "wordpiece" and info["tokenizer"]["vocab_size"] == 1500
    last = [r for r in _records(runs / "full") if "loss" in r][-1]
    assert info["tokens_seen"] == last["tokens_seen"] and info["last_metrics"] == last
    assert info["last_eval"]["step"] == 4 and "eval_mlm_acc" in info["last_eval"]
    assert info["checkpoint"] == str(latest)

    code, out, err = run_cli(capsys, "info", latest)
    assert code == 0, err
    assert f"{expected:,}" in out and "mlm+nsp" in out and "wordpiece" in out

    code, out, err = run_cli(capsys, "info", runs / "nowhere")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nowhere" in err


def test_info_json_is_strict_when_a_metric_is_nan(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "nan-run"
    shutil.copytree(runs / "full", run)
    for metrics in run.rglob("metrics.jsonl"):  # the run's history and each checkpoint's copy
        records = _records(metrics.parent)
        last = max(i for i, r in enumerate(records) if "loss" in r)
        records[last].update(loss=float("nan"), mlm_acc=float("inf"))  # what a diverged run logs
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    code, out, err = run_cli(capsys, "info", run, "--json")
    assert code == 0, err

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    info = json.loads(out, parse_constant=refuse)
    assert info["last_metrics"]["loss"] is None and info["last_metrics"]["mlm_acc"] is None


def test_info_says_where_a_checkpoint_was_converted_from(runs, tmp_path, capsys):
    latest = list_step_checkpoints(runs / "full")[-1]
    shutil.copytree(latest, tmp_path / "ckpt", ignore=shutil.ignore_patterns("trainer"))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["converted_from"] = {"format": "transformers", "class": "BertForPreTraining", "path": "/models/bert", "hf_config": {"a": 1}}
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(capsys, "info", tmp_path / "ckpt", "--json")
    assert code == 0, err
    assert json.loads(out)["converted_from"]["class"] == "BertForPreTraining"
    code, out, err = run_cli(capsys, "info", tmp_path / "ckpt")
    assert "BertForPreTraining" in out and "/models/bert" in out


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_the_metrics_and_a_resume_keeps_one_story(runs):
    for name in ("full", "cut"):
        run = runs / name
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
        scalars = _scalars(run)
        records = _records(run)
        for key in ("loss", "mlm_acc", "lr", "tokens_seen"):
            expected = [(r["step"], r[key]) for r in records if key in r]
            assert [s for s, _ in scalars[f"train/{key}"]] == [s for s, _ in expected], (name, key)
            assert [v for _, v in scalars[f"train/{key}"]] == pytest.approx([v for _, v in expected], rel=1e-6)
        evals = [(r["step"], r["eval_mlm_loss"]) for r in records if "eval_mlm_loss" in r]
        assert [s for s, _ in scalars["eval/mlm_loss"]] == [s for s, _ in evals] == [2, 4]
    # The resumed run wrote a second event file and still reached the uninterrupted run's weights.
    assert len(list((runs / "cut" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    full = load_file(str(list_step_checkpoints(runs / "full")[-1] / "model.safetensors"))
    cut = load_file(str(list_step_checkpoints(runs / "cut")[-1] / "model.safetensors"))
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_missing_packages_are_named_in_one_line(runs, tmp_path, capsys, monkeypatch):
    from ptmcli.training.tensorboard_log import check_available

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg", "torch.utils.tensorboard"):
        monkeypatch.setitem(__import__("sys").modules, name, None)  # None in sys.modules: the import fails
    code, _, err = run_cli(capsys, "plot", runs / "full", "-o", tmp_path / "c.png")
    assert code == 2 and "pip install matplotlib" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())
    with pytest.raises(Exception, match="pip install tensorboard"):
        check_available()
