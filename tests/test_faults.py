"""`ptm pretrain` under faults: SIGKILL at any moment, SIGTERM/SIGINT, a full disk, non-finite losses.

Killed runs are real `ptm pretrain` processes. A small wrapper can pause one at a
chosen point of a checkpoint save (before the final rename, after the weights
file, in the middle of deleting an old checkpoint) so a kill lands exactly there;
other kills come after seeded random delays.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import sample_corpus
from safetensors.torch import load_file

from ptmcli import checkpoint as ck
from ptmcli.cli.main import main
from ptmcli.errors import PtmError
from ptmcli.textio.atomic import leftovers

MAX_STEPS = 30
TINY = ["--preset", "bert-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--num-layers", "2",
        "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "2", "--log-every", "2", "--no-progress",
        "--threads", "1", "--peak-tflops", "1", "--seed", "5", "--precision", "fp32"]
RANDOM_KILLS = 1  # each costs a process start (torch import: seconds); the benchmark runs dozens
# A SIGTERM/SIGINT stop saves, says how to resume, and exits as a finished run does (status 0).
EXIT_AFTER_STOP_SIGNAL = {"SIGTERM": 143, "SIGINT": 130}

# Runs `ptm` after optionally replacing one function: on its Nth qualifying call it touches
# a marker file and sleeps, so the test can SIGKILL the process at exactly that point.
# Modes: "before" (pause instead of calling), "after" (call, then pause), "unlink-one"
# (for shutil.rmtree of a whole checkpoint: delete its weights file only, then pause).
PAUSE_WRAPPER = r"""
import importlib, os, sys, time
spec, marker, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if spec:
    module_name, attr, nth, mode = spec.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    calls = [0]

    def pause():
        open(marker, "w").close()
        time.sleep(600)

    def hooked(*a, **kw):
        if mode == "unlink-one":
            if not os.path.exists(os.path.join(a[0], "trainer", "state.json")):
                return original(*a, **kw)
        calls[0] += 1
        if calls[0] != int(nth):
            return original(*a, **kw)
        if mode == "unlink-one":
            os.unlink(os.path.join(a[0], "model.safetensors"))
            pause()
        if mode == "before":
            pause()
        result = original(*a, **kw)
        pause()
        return result

    setattr(module, attr, hooked)
from ptmcli.cli.main import main
main(args)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A 1,500-word-piece tokenizer and shards for the first articles of the bundled sample."""
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=12, vocab_size=1500, tokenizer_lines=3000)


@pytest.fixture(scope="module")
def fresh_args(corpus) -> list[str]:
    shards, tok = corpus
    return ["pretrain", "--data", str(shards), "--tokenizer", str(tok), *TINY, "--max-steps", str(MAX_STEPS),
            "--save-every", "2", "--keep-last", "2"]


@pytest.fixture(scope="module")
def reference_run(fresh_args, tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    code, err = ptm(*fresh_args, "-o", run)
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, torch.Tensor]:
    return load_file(str(ck.resolve_checkpoint(reference_run) / ck.WEIGHTS))


def ptm(*args) -> tuple[int, str]:
    """`ptm` in this process; returns (exit status, stderr)."""
    import io
    from contextlib import redirect_stderr

    err, threads = io.StringIO(), torch.get_num_threads()
    try:
        with redirect_stderr(err):
            main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    finally:
        torch.set_num_threads(threads)  # --threads 1 must not slow the rest of the test session
    return code, err.getvalue()


def start(args: list[str], log: Path, pause: str = "", marker: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-c", PAUSE_WRAPPER, pause, str(marker or ""), *map(str, args)]
    with open(log, "w") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def wait_until(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"ptm exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.01)


def kill(proc: subprocess.Popen, log: Path) -> None:
    assert proc.poll() is None, f"ptm finished before the kill:\n{log.read_text()}"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def training_started(log: Path):
    return lambda: "ptm: pretraining" in log.read_text() or "ptm: resuming" in log.read_text()


def visible_checkpoints(run: Path) -> list[Path]:
    """Every checkpoint any reader may pick up, each checked to load whole."""
    root = run / "checkpoints"
    listed = ck.list_step_checkpoints(run)
    visible = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    assert visible == listed, f"{root} holds directories that are not complete checkpoints: {visible} vs {listed}"
    for path in listed:
        config = ck.read_config(path)
        weights = load_file(str(path / ck.WEIGHTS))
        tensors, state = ck.read_trainer(path)
        assert config["arch"] == "bert" and weights and tensors
        assert state["loop"]["step"] == int(path.name.removeprefix("step-"))
    if listed:
        assert ck.resolve_checkpoint(run) == listed[-1]
    return listed


def assert_same_weights(run: Path, reference: dict[str, torch.Tensor]) -> None:
    final = ck.resolve_checkpoint(run)
    assert final.name == ck.step_dir_name(MAX_STEPS)
    weights = load_file(str(final / ck.WEIGHTS))
    assert weights.keys() == reference.keys()
    for key in reference:
        assert torch.equal(weights[key], reference[key]), key


def test_sigkill_at_any_moment_loses_nothing(fresh_args, reference, tmp_path):
    run, marker, log = tmp_path / "run", tmp_path / "paused", tmp_path / "ptm.log"
    steps = lambda: [p.name for p in visible_checkpoints(run)]  # noqa: E731
    staged = lambda: [p.name.split(".tmp-")[0] for p in leftovers(run / "checkpoints", prefix="step-")]  # noqa: E731
    resume = ["pretrain", "--resume", run]

    # 1. Killed after step 4's files are written and before the rename that publishes them.
    proc = start([*fresh_args, "-o", run], log, "ptmcli.textio.atomic:_fsync_tree:2:before", marker)
    wait_until(proc, log, marker.exists, "the second save")
    kill(proc, log)
    assert steps() == ["step-00000002"] and staged() == [".step-00000004"]

    # 2. Killed with step 6 half written (weights, no optimizer state); the leftover of 1. is cleaned up.
    marker.unlink()
    proc = start(resume, log, "safetensors.torch:save_file:3:after", marker)
    wait_until(proc, log, marker.exists, "step 6's weights")
    kill(proc, log)
    assert steps() == ["step-00000002", "step-00000004"] and staged() == [".step-00000006"]

    # 3. Killed while deleting step 2 (pruned by --keep-last 2): its weights are gone, its config is not.
    marker.unlink()
    proc = start(resume, log, "shutil:rmtree:1:unlink-one", marker)
    wait_until(proc, log, marker.exists, "pruning step 2")
    kill(proc, log)
    assert steps() == ["step-00000004", "step-00000006"]
    assert [p.name.split(".del-")[0] for p in leftovers(run / "checkpoints", prefix="step-")] == [".step-00000002"]

    # 4. Killed at seeded random moments of training (benchmarks/kill_resume.py does this many times).
    rng = random.Random(17)
    for _ in range(RANDOM_KILLS):
        before = steps()[-1]
        proc = start(resume, log)
        wait_until(proc, log, training_started(log), "training to start")
        time.sleep(rng.uniform(0.05, 0.6))
        kill(proc, log)
        assert steps() and steps()[-1] >= before

    code, err = ptm(*resume)
    assert code == 0, err
    visible_checkpoints(run)
    assert leftovers(run / "checkpoints", prefix="step-") == [], "a finished run should leave no staging directories"
    assert_same_weights(run, reference)


def test_sigterm_saves_and_resumes(fresh_args, reference, tmp_path):
    run, log = tmp_path / "run", tmp_path / "ptm.log"
    proc = start([*fresh_args, "-o", run], log)
    wait_until(proc, log, lambda: "step 4 |" in log.read_text(), "step 4")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == EXIT_AFTER_STOP_SIGNAL["SIGTERM"], log.read_text()
    stopped_at = _check_stopped(run, log.read_text(), "SIGTERM")
    assert 4 <= stopped_at < MAX_STEPS
    code, err = ptm("pretrain", "--resume", run)
    assert code == 0, err
    assert_same_weights(run, reference)


def test_sigint_saves_and_resumes(fresh_args, reference, tmp_path, monkeypatch):
    # Ctrl-C delivered to this process in the middle of step 7 (so it lands while the handler is installed).
    from ptmcli.pretraining.bert_task import BertPretrainTask

    real_loss, calls = BertPretrainTask.loss, [0]

    def loss(self, *args):
        calls[0] += 1
        if calls[0] == 7:
            signal.raise_signal(signal.SIGINT)
        return real_loss(self, *args)

    run = tmp_path / "run"
    monkeypatch.setattr(BertPretrainTask, "loss", loss)
    code, err = ptm(*fresh_args, "-o", run)
    monkeypatch.undo()
    assert code == EXIT_AFTER_STOP_SIGNAL["SIGINT"], err
    assert _check_stopped(run, err, "SIGINT") == 7
    code, err = ptm("pretrain", "--resume", run)
    assert code == 0, err
    assert_same_weights(run, reference)


def _check_stopped(run: Path, err: str, name: str) -> int:
    """The step a stop signal ended the run at, checked to be saved and announced."""
    assert f"received {name}; saving a checkpoint" in err, err
    stopped = [line for line in err.splitlines() if line.startswith("ptm: stopped at step")]
    assert stopped and stopped[0].endswith(f"({name}); resume with --resume {run}"), err
    stopped_at = int(stopped[0].split()[4])
    assert [p.name for p in visible_checkpoints(run)][-1] == ck.step_dir_name(stopped_at)
    assert leftovers(run / "checkpoints", prefix="step-") == []
    return stopped_at


def test_full_disk_keeps_previous_checkpoint(fresh_args, reference, tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    real_save = safetensors.torch.save_file
    calls = []

    def fills_the_disk(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:  # step 4's weights, after step 2 saved whole
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(safetensors.torch, "save_file", fills_the_disk)
    code, err = ptm(*fresh_args, "-o", run)
    monkeypatch.undo()
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("ptm: error:")]
    previous = run / "checkpoints" / "step-00000002"
    assert errors == [f"ptm: error: could not write checkpoint {run / 'checkpoints' / 'step-00000004'}: disk full "
                      f"(No space left on device); the previous checkpoint {previous} is intact"], err
    assert [p.name for p in visible_checkpoints(run)] == ["step-00000002"]
    assert sorted(os.listdir(run / "checkpoints")) == ["step-00000002"], "the failed save left files behind"

    code, err = ptm("pretrain", "--resume", run)
    assert code == 0, err
    assert_same_weights(run, reference)


def test_write_failures_become_one_line_and_keep_the_target(tmp_path, monkeypatch):
    from ptmcli.textio import atomic

    target = tmp_path / "ckpt"
    weights = {"w": torch.arange(6.0)}
    ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights=weights, tokenizer_dir=None, trainer_state={"step": 1})
    real_write_json = ck.write_json

    def quota_on_state(path, obj):
        if Path(path).name == ck.STATE:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(path))
        real_write_json(path, obj)

    from ptmcli.checkpoint import directory

    monkeypatch.setattr(directory, "write_json", quota_on_state)
    with pytest.raises(PtmError, match=rf"could not write checkpoint {target}: disk full \(.*\); the existing {target} is unchanged"):
        ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights={"w": torch.zeros(6)}, tokenizer_dir=None, trainer_state={"step": 2})
    monkeypatch.undo()

    def failing_fsync(root):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic, "_fsync_tree", failing_fsync)
    with pytest.raises(PtmError, match="Input/output error; the existing"):
        ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights={"w": torch.zeros(6)}, tokenizer_dir=None)
    monkeypatch.undo()

    real_rename = os.rename

    def publishing_fails(src, dst):  # the old checkpoint has been moved aside; the new one cannot take its place
        if ".tmp-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", publishing_fails)
    with pytest.raises(PtmError, match="Input/output error; the existing"):
        ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights={"w": torch.zeros(6)}, tokenizer_dir=None)
    monkeypatch.undo()
    assert torch.equal(load_file(str(target / ck.WEIGHTS))["w"], weights["w"])
    assert json.loads((target / ck.TRAINER / ck.STATE).read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt"], "staging directory left behind"


def _small_filesystem_available(mountpoint: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mountpoint}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace here ({probe.stderr.strip() or probe.returncode})"
    return None


def test_real_full_filesystem(reference_run, fresh_args, tmp_path):
    # The same failure on a real filesystem: a tmpfs with room for one checkpoint and a half.
    small, kept = tmp_path / "small", tmp_path / "kept"
    small.mkdir()
    kept.mkdir()
    why = _small_filesystem_available(small)
    if why:
        pytest.skip(f"no small filesystem to fill: {why}")
    one = sum(f.stat().st_size for f in ck.resolve_checkpoint(reference_run).rglob("*") if f.is_file())
    size_kib = (one + one // 2) // 1024
    script = ('size=$1 dir=$2 kept=$3; shift 3; mount -t tmpfs -o size="$size"k tmpfs "$dir" || exit 99; '
              'OMP_NUM_THREADS=1 "$@" -o "$dir/run" 2> "$kept/err"; echo $? > "$kept/code"; cp -a "$dir/run" "$kept/"')
    subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(size_kib), str(small), str(kept),
                    sys.executable, "-m", "ptmcli", *fresh_args], check=True, timeout=300)
    err = (kept / "err").read_text()
    assert (kept / "code").read_text().strip() == "2", err
    errors = [line for line in err.splitlines() if line.startswith("ptm: error:")]
    assert len(errors) == 1 and "disk full (No space left on device)" in errors[0], err
    latest = visible_checkpoints(kept / "run")[-1]
    assert f"the previous checkpoint {small / 'run' / 'checkpoints' / latest.name} is intact" in errors[0], err
    assert sorted(os.listdir(kept / "run" / "checkpoints")) == [latest.name], "the failed save left files behind"


# Non-finite losses, through the real pretraining task: the loss of chosen micro-batches is made NaN.
def _poison(monkeypatch, bad_calls) -> None:
    from ptmcli.pretraining.bert_task import BertPretrainTask

    real_loss = BertPretrainTask.loss
    calls = [0]

    def loss(self, model, batch, norms):
        calls[0] += 1
        value, stats = real_loss(self, model, batch, norms)
        return (value * float("nan") if bad_calls(calls[0]) else value), stats

    monkeypatch.setattr(BertPretrainTask, "loss", loss)


def test_non_finite_steps_are_skipped_and_counted(corpus, tmp_path, monkeypatch):
    shards, tok = corpus
    _poison(monkeypatch, lambda call: call in (3, 6, 7))
    run = tmp_path / "run"
    code, err = ptm("pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--max-steps", "10", "-o", run)
    assert code == 0, err
    assert err.count("non-finite loss, update skipped (1 in a row)") == 2 and "(2 in a row)" in err
    final = ck.resolve_checkpoint(run)
    _tensors, state = ck.read_trainer(final)
    assert state["loop"]["step"] == 10 and state["loop"]["skipped_steps"] == 3
    assert all(torch.isfinite(t).all() for t in load_file(str(final / ck.WEIGHTS)).values())


def test_non_finite_in_a_row_stops_with_checkpoint(corpus, tmp_path, monkeypatch):
    shards, tok = corpus
    _poison(monkeypatch, lambda call: call >= 5)
    run = tmp_path / "run"
    code, err = ptm("pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--max-steps", "10", "-o", run)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("ptm: error:")]
    assert errors == [f"ptm: error: training diverged: 5 non-finite losses in a row at step 5; checkpoint saved in {run / 'checkpoints'} "
                      "(try a lower --lr or --precision fp32)"], err
    saved = visible_checkpoints(run)
    assert [p.name for p in saved] == ["step-00000004"]
    _tensors, state = ck.read_trainer(saved[-1])
    assert state["loop"]["skipped_steps"] == 5
    assert all(torch.isfinite(t).all() for t in load_file(str(saved[-1] / ck.WEIGHTS)).values())
