"""Kill `ptm pretrain` with SIGKILL at random moments, resume it, and check that nothing is lost.

A small BERT is pretrained once without interruption. Then the same run is
started, killed with SIGKILL after a seeded random delay, resumed with
``--resume``, killed again, and so on; when a run reaches its last step it is
compared with the uninterrupted one and a fresh run starts, until ``--cycles``
kills have been made. After every kill, every checkpoint a reader could pick
(``checkpoints/step-*``) is loaded: config, weights and trainer state.

Every run is a fresh ``python -m ptmcli pretrain`` process. Delays are drawn
uniformly between 0 and the uninterrupted run's training time, counted from the
moment a process starts training; a kill that comes after the process has
finished ends the run early instead.

    python benchmarks/kill_resume.py                      # 50 kills, --threads 1
    python benchmarks/kill_resume.py --cycles 10 --corpus ../shared/data/enwiki-sample/enwiki_sample.txt
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

MODEL = ["--preset", "bert-tiny", "--hidden-size", "64", "--num-heads", "2", "--intermediate-size", "128", "--num-layers", "2",
         "--seq-len", "64", "--batch-size", "8", "--eval-rows", "4", "--eval-batches", "2", "--log-every", "5", "--no-progress",
         "--precision", "fp32", "--peak-tflops", "1"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=50, help="SIGKILLs to survive")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill delays (and of the training run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--save-every", type=int, default=2)
    p.add_argument("--keep-last", type=int, default=2)
    p.add_argument("--corpus", default=None, help="text file to train on [default: the sample bundled with ptm]")
    p.add_argument("--docs", type=int, default=40, help="articles of --corpus to use")
    p.add_argument("--workdir", default=None, help="keep the runs here instead of a temporary directory")
    return p.parse_args()


def prepare_data(corpus: Path, docs: int, root: Path) -> tuple[Path, Path]:
    from ptmcli.data.encode import encode_to_shards
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    lines, seen = [], 0
    with open(corpus, encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            seen += line.startswith("</doc>")
            if seen == docs:
                break
    text = root / "corpus.txt"
    text.write_text("".join(lines), encoding="utf-8")
    tok, shards = root / "tok", root / "shards"
    train_tokenizer(islice(iter_texts([str(text)]), 5000), "wordpiece", 2000).save(tok, overwrite=True)
    encode_to_shards([str(text)], str(tok), str(shards), workers=1, progress=False, overwrite=True)
    return shards, tok


class Process:
    """One `ptm pretrain` process, its stderr in a file."""

    def __init__(self, args: list[str], log: Path, threads: int) -> None:
        self.log = log
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        with open(log, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "ptmcli", *args], stdout=subprocess.DEVNULL, stderr=stderr, env=env)

    def training(self) -> bool:
        text = self.log.read_text(errors="replace")
        return "ptm: pretraining" in text or "ptm: resuming" in text

    def wait_for_training(self) -> float | None:
        """Seconds until the process says it is (re)starting training, or None if it exited first."""
        started = time.monotonic()
        while self.proc.poll() is None:
            if self.training():
                return time.monotonic() - started
            time.sleep(0.005)
        return None

    def kill_after(self, delay: float) -> bool:
        """SIGKILL after ``delay`` seconds; False if the process had already exited."""
        try:
            self.proc.wait(delay)
            return False
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            return True


def check_checkpoints(run: Path) -> tuple[int, list[str]]:
    """(checkpoints loaded, problems): every directory under checkpoints/ that is not hidden must load whole."""
    from safetensors.torch import load_file

    from ptmcli import checkpoint as ck

    root = run / "checkpoints"
    if not root.is_dir():
        return 0, []
    problems, loaded = [], 0
    listed = {p.name for p in ck.list_step_checkpoints(run)}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue  # staging and half-deleted directories are hidden from every reader
        if entry.name not in listed:
            problems.append(f"{entry}: visible but not a complete checkpoint")
            continue
        try:
            ck.read_config(entry)
            load_file(str(entry / ck.WEIGHTS))
            _tensors, state = ck.read_trainer(entry)
            assert state["loop"]["step"] == int(entry.name.removeprefix("step-")), "trainer state of another step"
            loaded += 1
        except Exception as err:  # noqa: BLE001 - any failure to load is what this counts
            problems.append(f"{entry}: {type(err).__name__}: {err}")
    return loaded, problems


def same_weights(run: Path, reference: dict, max_steps: int) -> bool:
    import torch
    from safetensors.torch import load_file

    from ptmcli import checkpoint as ck

    final = ck.resolve_checkpoint(run)
    if final.name != ck.step_dir_name(max_steps):
        return False
    weights = load_file(str(final / ck.WEIGHTS))
    return weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in reference)


class Tally:
    def __init__(self) -> None:
        self.kills = self.bad_kills = self.during_save = self.during_prune = self.during_startup = 0
        self.restarts = self.loads = self.finished = self.equal = self.failures = self.stale_after_finish = 0
        self.problems: list[str] = []


def main() -> None:
    args = parse_args()
    from safetensors.torch import load_file

    from ptmcli import checkpoint as ck
    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.textio.atomic import leftovers

    root = Path(args.workdir or tempfile.mkdtemp(prefix="ptm-kill-resume-"))
    root.mkdir(parents=True, exist_ok=True)
    shards, tok = prepare_data(Path(args.corpus) if args.corpus else SAMPLE, args.docs, root)
    fresh = ["pretrain", "--data", str(shards), "--tokenizer", str(tok), *MODEL, "--threads", str(args.threads), "--seed", str(args.seed),
             "--max-steps", str(args.max_steps), "--save-every", str(args.save_every), "--keep-last", str(args.keep_last)]

    reference_run = root / "uninterrupted"
    shutil.rmtree(reference_run, ignore_errors=True)
    began = time.monotonic()
    first = Process([*fresh, "-o", str(reference_run)], root / "uninterrupted.log", args.threads)
    startup = first.wait_for_training()
    if startup is None or first.proc.wait() != 0:
        sys.exit(f"the uninterrupted run failed:\n{(root / 'uninterrupted.log').read_text()}")
    training_s = time.monotonic() - began - startup
    reference = load_file(str(ck.resolve_checkpoint(reference_run) / ck.WEIGHTS))
    print(f"uninterrupted run: {args.max_steps} steps, start-up {startup:.1f}s, training {training_s:.1f}s; "
          f"kill delays: 90% in [0, {training_s:.1f}s] after training starts, 10% in [0, {startup:.1f}s] after launch", flush=True)

    rng = random.Random(args.seed)
    tally = Tally()
    began = time.monotonic()

    def launch(run: Path) -> tuple[Process, list[str]]:
        resumable = bool(ck.list_step_checkpoints(run))
        tally.restarts += not resumable and run.exists()
        command = ["pretrain", "--resume", str(run)] if resumable else [*fresh, "-o", str(run), "--overwrite"]
        return Process(command, root / "last.log", args.threads), command

    def finished(run: Path, proc: Process, command: list[str]) -> None:
        code = proc.proc.wait()
        if code != 0:
            tally.failures += 1
            tally.problems.append(f"{' '.join(command)} exited {code}: {proc.log.read_text()[-2000:]}")
            return
        tally.finished += 1
        same = same_weights(run, reference, args.max_steps)
        tally.equal += same
        if not same:
            tally.problems.append(f"{run}: final weights differ from the uninterrupted run")
        # Hidden, so harmless; only a later save of the run removes them, and a run resumed
        # after its final save (a kill while pruning) has none.
        tally.stale_after_finish += bool(leftovers(run / "checkpoints", prefix="step-"))
        print(f"  {tally.kills} kills so far; {run.name} finished, final weights {'equal' if same else 'DIFFERENT'}", flush=True)

    run_index, run = 0, None
    while tally.kills < args.cycles:
        if run is None:
            run_index += 1
            run = root / f"run-{run_index:03d}"
            shutil.rmtree(run, ignore_errors=True)
        before = set(leftovers(run / "checkpoints", prefix="step-"))
        proc, command = launch(run)
        in_startup = rng.random() < 0.1
        if in_startup:
            killed = proc.kill_after(rng.uniform(0.0, startup))
        else:
            killed = proc.wait_for_training() is not None and proc.kill_after(rng.uniform(0.0, training_s))
        if not killed:
            finished(run, proc, command)
            run = None
            continue
        tally.kills += 1
        tally.during_startup += not proc.training()
        new = [p.name for p in leftovers(run / "checkpoints", prefix="step-") if p not in before]
        tally.during_save += any(".tmp-" in name or ".old-" in name for name in new)
        tally.during_prune += any(".del-" in name for name in new)
        count, found = check_checkpoints(run)
        tally.loads += count
        tally.bad_kills += bool(found)
        tally.problems += [f"after kill {tally.kills}: {p}" for p in found]
    if run is not None:  # finish the run the last kill interrupted
        proc, command = launch(run)
        finished(run, proc, command)

    unreadable = sum(p.startswith("after kill") for p in tally.problems)
    print(f"kill/resume cycles survived: {tally.kills - tally.bad_kills - tally.failures}/{tally.kills} SIGKILLs "
          f"({tally.during_save} during a checkpoint save, {tally.during_prune} while deleting an old checkpoint, "
          f"{tally.during_startup} during start-up; {tally.restarts} restarts of runs killed before their first checkpoint)")
    print(f"runs resumed to the end: {tally.finished}; final weights equal to the uninterrupted run, bit for bit: {tally.equal}/{tally.finished}; "
          f"{tally.stale_after_finish} ended with a hidden leftover (killed while pruning after the final save)")
    print(f"unreadable checkpoints seen: {unreadable} ({tally.loads} checkpoint loads, one round after every kill)")
    print(f"failed resumes: {tally.failures}; {time.monotonic() - began:.0f}s")
    for problem in tally.problems:
        print(f"  problem: {problem}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if tally.problems else 0)


if __name__ == "__main__":
    main()
