"""The shared training loop on a toy task: accumulation, resume, divergence."""

from __future__ import annotations

import base64
import json

import pytest
import torch
from torch import nn

from ptmcli import checkpoint as ck
from ptmcli.errors import PtmError
from ptmcli.training.loop import LoopSettings, capture_rng, train
from ptmcli.training.optim import build_adamw
from ptmcli.training.schedule import lr_multiplier


class ToyTask:
    """Regression on a stream of random batches; the stream's state is a generator state."""

    def __init__(self, seed=0, poison_from=None):
        self.gen = torch.Generator().manual_seed(seed)
        self.poison_from = poison_from
        self.drawn = 0

    def next_micro_batches(self, count):
        out = []
        for _ in range(count):
            x = torch.randn(8, 6, generator=self.gen)
            self.drawn += 1
            if self.poison_from is not None and self.drawn >= self.poison_from:
                x = x * float("nan")
            out.append({"x": x, "y": x.sum(1, keepdim=True)})
        return out

    def normalizers(self, batches):
        return {"n": float(sum(b["x"].shape[0] for b in batches))}

    def loss(self, model, batch, norms):
        err = ((model(batch["x"]) - batch["y"]) ** 2).sum()
        return err / norms["n"], {"sq_err": float(err.detach()), "n": batch["x"].shape[0]}

    def summarize(self, sums):
        return {"mse": sums["sq_err"] / sums["n"]}

    def tokens(self, batch):
        return batch["x"].shape[0]

    def evaluate(self, model, precision, device):
        x = torch.ones(4, 6)
        return {"mse": float(((model(x) - 6) ** 2).mean())}

    def state_dict(self):
        return {"gen": base64.b64encode(self.gen.get_state().numpy().tobytes()).decode(), "drawn": self.drawn}

    def load_state_dict(self, state):
        self.gen.set_state(torch.frombuffer(bytearray(base64.b64decode(state["gen"])), dtype=torch.uint8).clone())
        self.drawn = state["drawn"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.GELU(), nn.Linear(16, 1))


def _run(run_dir, max_steps, resume_from=None, save_every=0, task=None, drop=(), **kw):
    """Train the toy model; ``drop`` names parts of the resume checkpoint to replace with what a fresh run has."""
    model = _model()
    opt = build_adamw(model, 1e-2, 0.01)
    task = task or ToyTask()
    resume = None
    if resume_from is not None:
        if "weights" not in drop:
            ck.load_weights(resume_from, model, {})
        tensors, state = ck.read_trainer(resume_from)
        if "optimizer" in drop:
            tensors = {}
        if "loop" in drop:  # step, tokens seen, elapsed time
            state["loop"] = {}
        if "data" in drop:
            state["data"] = ToyTask().state_dict()
        if "rng" in drop:
            state["rng"] = capture_rng(torch.device("cpu"))
        resume = (tensors, state)

    def save(step, tensors, state):
        target = run_dir / "checkpoints" / ck.step_dir_name(step)
        ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights=ck.state_dict_for_saving(model, {}), tokenizer_dir=None,
                           metrics_file=run_dir / "metrics.jsonl", optimizer_tensors=tensors, trainer_state=state)

    settings = LoopSettings(max_steps=max_steps, lr=1e-2, warmup_steps=3, grad_accum=2, log_every=2, eval_every=4, save_every=save_every, progress=False, **kw)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = train(model, opt, task, settings, device=torch.device("cpu"), run_dir=run_dir, save=save, resume=resume)
    return model, state


def test_resume_is_bit_for_bit(tmp_path):
    full, _ = _run(tmp_path / "full", 12)
    _run(tmp_path / "half", 12, save_every=5, max_time_s=None)
    # Resume from step 5 of the second run, as if it had been killed there.
    resumed, state = _run(tmp_path / "resumed", 12, resume_from=tmp_path / "half" / "checkpoints" / ck.step_dir_name(5))
    assert state.step == 12
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 12


@pytest.mark.parametrize("dropped", ["weights", "optimizer", "loop", "data", "rng"])
def test_a_resume_that_drops_part_of_the_saved_state_does_not_match(tmp_path, dropped):
    # Guards the test above: every part of a checkpoint changes the outcome, so a resume that
    # ignored one of them could not reach the uninterrupted run's weights bit for bit.
    full, _ = _run(tmp_path / "full", 12)
    _run(tmp_path / "half", 12, save_every=6)  # the same run, saved half way (the schedule spans 12 steps)
    half = tmp_path / "half" / "checkpoints" / ck.step_dir_name(6)
    resumed, state = _run(tmp_path / "resumed", 12, resume_from=half)
    assert state.step == 12
    assert all(torch.equal(a, b) for a, b in zip(full.parameters(), resumed.parameters()))
    broken, _ = _run(tmp_path / "broken", 12, resume_from=half, drop=(dropped,))
    assert not all(torch.equal(a, b) for a, b in zip(full.parameters(), broken.parameters()))


def test_non_finite_losses_skip_then_stop_with_checkpoint(tmp_path):
    with pytest.raises(PtmError, match="non-finite"):
        _run(tmp_path / "bad", 20, task=ToyTask(poison_from=7), max_bad_steps=3)
    saved = ck.list_step_checkpoints(tmp_path / "bad")
    assert saved, "a checkpoint should be written before stopping"
    _tensors, state = ck.read_trainer(saved[-1])
    assert state["loop"]["skipped_steps"] == 3


def test_schedule_shapes():
    assert lr_multiplier(0, warmup_steps=10, max_steps=100) == pytest.approx(0.1)
    assert lr_multiplier(9, warmup_steps=10, max_steps=100) == pytest.approx(1.0)
    assert lr_multiplier(55, warmup_steps=10, max_steps=100) == pytest.approx(0.5)
    assert lr_multiplier(100, warmup_steps=10, max_steps=100, schedule="cosine") == pytest.approx(0.0)
    assert lr_multiplier(55, warmup_steps=10, max_steps=100, schedule="cosine") == pytest.approx(0.5)
    assert lr_multiplier(70, warmup_steps=10, max_steps=100, schedule="constant") == 1.0


def test_statistics_summed_on_the_device_read_as_python_float_sums():
    from ptmcli.training.running_sums import RunningSums

    gen = torch.Generator().manual_seed(1)
    window, expected = RunningSums(), {}
    for _step in range(5):
        step, step_expected = RunningSums(), {}
        for _micro in range(3):
            values = {"loss_sum": torch.rand((), generator=gen) * 1e3, "count": torch.randint(1, 99, ()), "n": 8}
            step.add_all(values)
            for key, value in values.items():
                step_expected[key] = step_expected.get(key, 0.0) + float(value)
        window.add_sums(step)
        for key, value in step_expected.items():
            expected[key] = expected.get(key, 0.0) + value
    assert window.read() == expected  # the same doubles, not merely close
    assert all(isinstance(v, float) for v in window.read().values())
