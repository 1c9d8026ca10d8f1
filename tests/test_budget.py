"""Training over a wall-clock budget (``--budget``): the schedule by elapsed share, the stop, the ramp, resume."""

from __future__ import annotations

import json
import types

import pytest
import torch
from test_training_loop import ToyTask, _model

from ptmcli import checkpoint as ck
from ptmcli.errors import PtmError
from ptmcli.training import loop as loop_module
from ptmcli.training.budget import StepClock, budget_multiplier, ramp_accumulation
from ptmcli.training.loop import LoopSettings, train
from ptmcli.training.optim import build_adamw


def test_budget_schedule_shapes():
    # Linear warmup over the first 10%, then a straight fall to zero at the end: the one-cycle triangle.
    assert budget_multiplier(0.05, 0.1, "linear") == pytest.approx(0.5)
    assert budget_multiplier(0.1, 0.1, "linear") == pytest.approx(1.0)
    assert budget_multiplier(0.55, 0.1, "linear") == pytest.approx(0.5)
    assert budget_multiplier(1.0, 0.1, "linear") == pytest.approx(0.0)
    assert budget_multiplier(2.0, 0.1, "linear") == pytest.approx(0.0)  # a step that runs over ends at zero
    assert budget_multiplier(0.55, 0.1, "cosine") == pytest.approx(0.5)
    assert budget_multiplier(0.3, 0.1, "constant") == 1.0
    assert 0 < budget_multiplier(0.0, 0.1, "linear") < 0.01  # the first step still moves the weights


def test_ramp_and_clock():
    assert [ramp_accumulation(f, 0.5, 4) for f in (0.0, 0.1, 0.25, 0.4, 0.5, 0.9)] == [1, 2, 3, 3, 4, 4]
    assert ramp_accumulation(0.0, 0.0, 4) == 4
    clock = StepClock(remembered=3)
    assert clock.next_step_s() == 0.0
    for seconds in (1.0, 5.0, 2.0, 2.0, 2.0):
        clock.add(seconds)
    assert clock.next_step_s() == 2.0  # the slow step has left the window


class FakeClock:
    """Stands in for the loop's ``time`` module: each micro-batch's loss costs ``per_micro`` seconds."""

    def __init__(self, per_micro: float) -> None:
        self.now = 1000.0
        self.per_micro = per_micro

    def perf_counter(self) -> float:
        return self.now


class TimedTask(ToyTask):
    def __init__(self, clock: FakeClock, **kw) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.accumulations: list[int] = []

    def normalizers(self, batches):
        self.accumulations.append(len(batches))
        return super().normalizers(batches)

    def loss(self, model, batch, norms):
        self.clock.now += self.clock.per_micro
        return super().loss(model, batch, norms)


def _budget_run(tmp_path, monkeypatch, budget_s, per_micro=1.0, resume_from=None, **kw):
    clock = FakeClock(per_micro)
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    model = _model()
    opt = build_adamw(model, 1e-2, 0.01)
    task = TimedTask(clock)
    resume = None
    if resume_from is not None:
        ck.load_weights(resume_from, model, {})
        resume = ck.read_trainer(resume_from)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    saved = []

    def save(step, tensors, state):
        saved.append(step)
        ck.save_checkpoint(run_dir / "checkpoints" / ck.step_dir_name(step), config={"arch": "toy", "model": {}},
                           weights=ck.state_dict_for_saving(model, {}), tokenizer_dir=None,
                           metrics_file=run_dir / "metrics.jsonl", optimizer_tensors=tensors, trainer_state=state)

    settings = LoopSettings(max_steps=10**9, lr=1e-2, grad_accum=kw.pop("grad_accum", 2), log_every=1, progress=False,
                            budget_s=budget_s, warmup_fraction=0.2, **kw)
    state = train(model, opt, task, settings, device=torch.device("cpu"), run_dir=run_dir, save=save, resume=resume)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return state, task, saved, records


def test_the_run_stops_inside_its_budget_with_a_whole_schedule(tmp_path, monkeypatch):
    # Each step is two micro-batches of 1 s: a 21 s budget takes 10 steps, never an 11th that would end at 22 s.
    state, task, saved, records = _budget_run(tmp_path, monkeypatch, budget_s=21.0)
    assert state.step == 10 and state.last_metrics["stop_reason"] == "budget"
    assert state.elapsed_s <= 21.0
    train_records = [r for r in records if "loss" in r]
    # The rate set before each step follows the elapsed share of the budget: step k starts at 2(k-1) s.
    expected = [budget_multiplier(2.0 * k / 21.0, 0.2, "linear") * 1e-2 for k in range(10)]
    assert [r["lr"] for r in train_records] == pytest.approx(expected)
    assert train_records[-1]["lr"] < 0.2e-2  # the last step starts at 18 of 21 s, near the end of the decay
    assert any("eval_mse" in r for r in records) and saved == [10]  # final evaluation and checkpoint
    assert train_records[-1]["budget_left_s"] == pytest.approx(1.0)


def test_the_batch_ramps_up_through_accumulation(tmp_path, monkeypatch):
    _, task, _, records = _budget_run(tmp_path, monkeypatch, budget_s=40.0, grad_accum=4, batch_ramp=0.5)
    ramp = task.accumulations
    assert ramp[0] == 1 and ramp[-1] == 4 and ramp == sorted(ramp) and 2 in ramp and 3 in ramp
    assert [r["grad_accum"] for r in records if "loss" in r] == ramp


def test_resume_continues_the_budget(tmp_path, monkeypatch):
    _, _, _, _ = _budget_run(tmp_path, monkeypatch, budget_s=11.0, save_every=0)
    first = ck.resolve_checkpoint(tmp_path / "run")
    # The first run spent its 11 s budget in 5 steps; resumed with 21 s, it trains 5 more, not 10.
    state, _, _, records = _budget_run(tmp_path, monkeypatch, budget_s=21.0, resume_from=first)
    assert state.step == 10
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 11))


def test_a_budget_shorter_than_one_step_is_refused(tmp_path, monkeypatch):
    with pytest.raises(PtmError, match="shorter than one training step"):
        _budget_run(tmp_path, monkeypatch, budget_s=1.5)


def test_cli_budget_shorter_than_a_step_exits_2_and_leaves_no_run(tmp_path):
    # Known only once a step has run, so the start-up lines come first; the run directory goes again.
    import subprocess
    import sys

    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ptmcli", "pretrain", "--preset", "bert-tiny", "--budget", "0.001s",
                           "--batch-size", "4", "--seq-len", "32", "--no-progress", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("ptm: error: --budget of 0.001 s is shorter than one training step")
    assert "Traceback" not in done.stderr and not out.exists()


def test_budget_fills_the_family_recipe_where_flags_are_not_given():
    from ptmcli.commands.pretrain import _with_budget_recipe
    from ptmcli.pretraining.config import PretrainConfig

    cfg = PretrainConfig(arch="bert", budget="30m")
    filled, note = _with_budget_recipe(cfg, explicit={"budget"})
    assert (filled.norm, filled.bias, filled.hidden_dropout, filled.attention_dropout, filled.lr) == ("pre", False, 0.0, 0.0, 5e-4)
    assert filled.mask_prob == 0.3
    assert "--norm pre --no-bias --hidden-dropout 0 --attention-dropout 0 --lr 0.0005 --mask-prob 0.3" in note
    # The mask rate only for an objective that masks: UniLM does, and so gets it.
    unilm, _ = _with_budget_recipe(PretrainConfig(arch="bert", objective="unilm", budget="30m"), explicit={"budget"})
    assert unilm.mask_prob == 0.3
    # A flag given on the command line wins, even when it equals the usual default.
    given = PretrainConfig(arch="bert", budget="30m", lr=1e-4, norm="post")
    kept, note = _with_budget_recipe(given, explicit={"budget", "lr", "norm"})
    assert (kept.norm, kept.lr, kept.bias) == ("post", 1e-4, False) and "--lr" not in note and "--norm" not in note
    # Families without a measured recipe are left alone.
    gpt, note = _with_budget_recipe(PretrainConfig(arch="electra", budget="30m"), explicit={"budget"})
    assert note is None and gpt.lr == PretrainConfig().lr


def test_cli_budget_records_the_recipe_it_used(tmp_path):
    import subprocess
    import sys

    common = [sys.executable, "-m", "ptmcli", "pretrain", "--preset", "bert-tiny", "--budget", "4s", "--batch-size", "4",
              "--seq-len", "32", "--no-progress", "--eval-every", "0"]
    done = subprocess.run([*common, "-o", str(tmp_path / "recipe")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the small-budget recipe for bert: --norm pre --no-bias" in done.stderr
    config = json.loads((ck.resolve_checkpoint(tmp_path / "recipe") / "config.json").read_text())
    assert config["model"]["norm"] == "pre" and config["model"]["bias"] is False and config["model"]["hidden_dropout"] == 0.0
    assert json.loads((tmp_path / "recipe" / "run.json").read_text())["config"]["lr"] == 5e-4
    done = subprocess.run([*common, "--no-budget-recipe", "-o", str(tmp_path / "plain")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "small-budget recipe" not in done.stderr, done.stderr
    config = json.loads((ck.resolve_checkpoint(tmp_path / "plain") / "config.json").read_text())
    assert config["model"]["norm"] == "post" and config["model"]["bias"] is True
    from ptmcli.pretraining.sample import SAMPLE_DEFAULTS

    # The bundled sample's own rate, not the recipe's.
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["config"]["lr"] == SAMPLE_DEFAULTS["lr"] != 5e-4
