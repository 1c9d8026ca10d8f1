"""Scale-out under torchrun: 2 CPU processes with gloo against 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sample_corpus
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.training.distributed import (
    Distributed,
    GlobalBatchShare,
    builds_rows,
    share_of,
    slice_batch,
)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")

# No dropout: with it, each rank draws its own masks, so runs agree in distribution only.
TINY = ["--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--num-layers", "2",
        "--seq-len", "32", "--eval-rows", "2", "--eval-batches", "1", "--log-every", "2", "--no-progress", "--threads", "1",
        "--hidden-dropout", "0", "--attention-dropout", "0", "--lr", "3e-3", "--warmup-steps", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=8, vocab_size=1000, tokenizer_lines=2000)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run_ptm(*args, procs: int = 1) -> subprocess.CompletedProcess:
    """``ptm ARGS`` in a fresh process, or under torchrun with ``procs`` CPU processes."""
    args = [str(a) for a in args]
    if procs == 1:
        command = [sys.executable, "-m", "ptmcli", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", "-m", "ptmcli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)


def _final(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


OBJECTIVE = {"bert": "mlm+nsp", "gpt": "clm", "electra": "rtd"}


class _References(dict):
    """Reference runs, one process with batch 8, each made the first time a test asks for its arch."""

    def __init__(self, corpus, root: Path):
        super().__init__()
        self.corpus, self.root = corpus, root

    def __missing__(self, arch: str) -> Path:
        shards, tok = self.corpus
        out = self.root / arch
        done = run_ptm("pretrain", "--arch", arch, "--objective", OBJECTIVE[arch], "--data", shards, "--tokenizer", tok, "-o", out,
                       "--preset", f"{arch}-tiny", *TINY, "--batch-size", "8", "--max-steps", "6", "--save-every", "3", "--keep-last", "0")
        assert done.returncode == 0, done.stderr
        self[arch] = out
        return out


@pytest.fixture(scope="module")
def one_process_runs(corpus, tmp_path_factory):
    return _References(corpus, tmp_path_factory.mktemp("single"))


# GPT and ELECTRA also accumulate: 2 micro-batches of 2 per process (gradients exchanged on the second only).
# ELECTRA's generator samples at keyed uniforms, so a row draws the same replacements on any rank.
@pytest.mark.parametrize("arch,objective,batch,accum", [("bert", "mlm+nsp", 4, 1), ("gpt", "clm", 2, 2), ("electra", "rtd", 2, 2)])
def test_two_processes_with_batch_b_equal_one_with_batch_2b(corpus, one_process_runs, tmp_path, arch, objective, batch, accum):
    shards, tok = corpus
    out = tmp_path / "ddp"
    done = run_ptm("pretrain", "--arch", arch, "--objective", objective, "--data", shards, "--tokenizer", tok, "-o", out, "--preset", f"{arch}-tiny", *TINY,
                   "--batch-size", batch, "--grad-accum", accum, "--max-steps", "6", "--save-every", "3", procs=2)
    assert done.returncode == 0, done.stderr
    assert f"global batch 8 = {batch} per device x 2 processes x {accum} accumulation" in done.stderr
    assert done.stderr.count("ptm: done") == 1, "only rank 0 reports"
    reference = one_process_runs[arch]
    assert _max_diff(_final(out), _final(reference)) < 1e-5
    assert _losses(out) == pytest.approx(_losses(reference), rel=1e-5)
    # The run learned something, so equality is not between two untouched models.
    assert _max_diff(_final(out), load_file(str(list_step_checkpoints(reference)[0] / "model.safetensors"))) > 1e-4


def test_resume_across_a_change_of_world_size(corpus, one_process_runs, tmp_path):
    shards, tok = corpus
    first = tmp_path / "two"
    done = run_ptm("pretrain", "--arch", "bert", "--objective", "mlm+nsp", "--data", shards, "--tokenizer", tok, "-o", first, "--preset", "bert-tiny", *TINY,
                   "--batch-size", "4", "--max-steps", "6", "--save-every", "3", "--keep-last", "0", procs=2)
    assert done.returncode == 0, done.stderr
    step3 = list_step_checkpoints(first)[0]
    assert step3.name.endswith("3")
    resumed = tmp_path / "one"
    done = run_ptm("pretrain", "--resume", step3, "-o", resumed, "--threads", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "keeps the global batch of 8" in done.stderr
    assert _max_diff(_final(resumed), _final(one_process_runs["bert"])) < 1e-5


def test_fsdp_matches_one_process_and_writes_the_usual_checkpoint(corpus, one_process_runs, tmp_path):
    shards, tok = corpus
    out = tmp_path / "fsdp"
    done = run_ptm("pretrain", "--arch", "gpt", "--objective", "clm", "--data", shards, "--tokenizer", tok, "-o", out, "--preset", "gpt-tiny", *TINY,
                   "--batch-size", "4", "--max-steps", "6", "--save-every", "3", "--fsdp", procs=2)
    assert done.returncode == 0, done.stderr
    assert _max_diff(_final(out), _final(one_process_runs["gpt"])) < 1e-5
    # The gathered checkpoint is an ordinary one: a single-process command reads it.
    text = tmp_path / "text.txt"
    text.write_text("the first line of text\nand a second one\n", encoding="utf-8")
    done = run_ptm("eval", "--checkpoint", out, "--data", text, "--json", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens_scored"] > 0


def test_electra_under_fsdp_matches_one_process(corpus, one_process_runs, tmp_path):
    # Two networks over shared embeddings, the generator's decoder tied to the word table: the blocks of both are units.
    shards, tok = corpus
    out = tmp_path / "fsdp"
    done = run_ptm("pretrain", "--arch", "electra", "--objective", "rtd", "--data", shards, "--tokenizer", tok, "-o", out,
                   "--preset", "electra-tiny", *TINY, "--batch-size", "4", "--max-steps", "6", "--save-every", "3", "--fsdp", procs=2)
    assert done.returncode == 0, done.stderr
    reference = one_process_runs["electra"]
    assert _max_diff(_final(out), _final(reference)) < 1e-5
    assert _losses(out) == pytest.approx(_losses(reference), rel=1e-5)
    # The gathered checkpoint holds both networks: the generator scores text.
    text = tmp_path / "text.txt"
    text.write_text("the first line of text\nand a second one\n", encoding="utf-8")
    done = run_ptm("eval", "--checkpoint", out, "--data", text, "--part", "generator", "--json", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens_scored"] > 0


def test_xlnet_segment_memory_under_two_processes_matches_one(corpus, tmp_path):
    # With --mem-len each row carries its memory to the next segment; a rank keeps the memory of the rows it holds,
    # so two processes of 4 rows equal one of 8, through the segments the memory links.
    shards, tok = corpus
    flags = ["pretrain", "--arch", "xlnet", "--objective", "plm", "--data", shards, "--tokenizer", tok, "--preset", "xlnet-tiny",
             *TINY, "--mem-len", "16", "--max-steps", "6"]
    one = run_ptm(*flags, "--batch-size", "8", "-o", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = run_ptm(*flags, "--batch-size", "4", "-o", tmp_path / "two", procs=2)
    assert two.returncode == 0, two.stderr
    assert "global batch 8 = 4 per device x 2 processes" in two.stderr
    assert _max_diff(_final(tmp_path / "two"), _final(tmp_path / "one")) < 1e-5
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)


def test_fsdp_without_torchrun_is_refused(corpus, tmp_path):
    shards, tok = corpus
    done = run_ptm("pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "x", "--preset", "bert-tiny", *TINY, "--max-steps", "2", "--fsdp")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("ptm: error: --fsdp shards the model across processes")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_shares_cover_the_global_batch_once():
    for total in (8, 9, 5):
        shares = [share_of(total, Distributed(rank=r, world_size=3)) for r in range(3)]
        rows = [i for s in shares for i in range(total)[s]]
        assert rows == list(range(total))
        assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1
    batch = {"input_ids": torch.arange(12).view(6, 2), "labels": [0, 1, 2, 3, 4, 5], "scalar": torch.tensor(1.0)}
    part = slice_batch(batch, share_of(6, Distributed(rank=1, world_size=2)), 6)
    assert part["input_ids"].tolist() == [[6, 7], [8, 9], [10, 11]]
    assert part["labels"] == [3, 4, 5]
    assert part["scalar"] is batch["scalar"]


def _pretraining_task(kind: str, shards: Path, tok: Path, batch_size: int):
    """The task `ptm pretrain` builds for ``kind``, with ``batch_size`` examples per micro-batch."""
    from types import SimpleNamespace

    import numpy as np

    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    arch, objective, whole_word = {"nsp": ("bert", "mlm+nsp", False), "nsp-whole-word": ("bert", "mlm+nsp", True),
                                   "mlm-whole-word": ("bert", "mlm", True), "bilm": ("elmo", "bilm", False),
                                   "clm": ("gpt", "clm", False), "rtd": ("electra", "rtd", False)}[kind]
    cfg = SimpleNamespace(objective=objective, seq_len=32, seed=3, short_seq_prob=0.1, whole_word_mask=whole_word, batch_size=batch_size,
                          mask_prob=0.15, eval_batches=1, compile=False, disc_weight=50.0)
    dataset = ShardDataset.open(shards)
    assert dataset.has_word_starts
    rows = np.arange(len(dataset))
    return OBJECTIVES[objective].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:], [("heldout", dataset, rows[:2])],
                                                        get_family(arch)))


@pytest.mark.parametrize("kind", ["nsp", "nsp-whole-word", "mlm-whole-word", "bilm", "clm", "rtd"])
def test_each_rank_builds_exactly_its_slice_of_the_global_batch(corpus, kind):
    shards, tok = corpus
    whole = _pretraining_task(kind, shards, tok, 10)
    ranks = [Distributed(rank=r, world_size=3) for r in range(3)]
    parts = [GlobalBatchShare(_pretraining_task(kind, shards, tok, 10), rank) for rank in ranks]
    assert all(part.in_part for part in parts)
    for _step in range(8):
        full = whole.next_micro_batches(2)
        shares = [part.next_micro_batches(2) for part in parts]
        for index, batch in enumerate(full):
            for rank, share in zip(ranks, shares):
                expected = slice_batch(batch, share_of(10, rank), 10)
                assert expected.keys() == share[index].keys()
                for key, value in expected.items():
                    assert torch.equal(share[index][key], value), (kind, key)
        # What the normalisers count on each rank adds up to the whole batch's count.
        counts = [part.shared_counts(share) for part, share in zip(parts, shares)]
        assert {k: sum(c[k] for c in counts) for k in counts[0]} == whole.normalizer_counts(full)
        # Every rank's stream stands where the whole one does, so a checkpoint resumes at any world size.
        assert all(part.state_dict() == whole.state_dict() for part in parts)
    # Evaluation sets are whole on every rank.
    for part in parts:
        for mine, its in zip(part.eval_sets["heldout"], whole.eval_sets["heldout"]):
            assert all(torch.equal(mine[key], its[key]) for key in its)


def test_each_rank_collates_its_rows_of_a_finetuning_batch():
    from types import SimpleNamespace

    import numpy as np

    from ptmcli.finetuning.task import FinetuneTask
    from ptmcli.tasks.collate import collate

    rows = [{"input_ids": np.arange(3 + i % 5), "token_type_ids": np.zeros(3 + i % 5, dtype=np.int64), "labels": np.array(i % 2),
             "line": i} for i in range(23)]
    model = SimpleNamespace(task_type="classification", mode="full")

    def task():
        return FinetuneTask(model, rows, lambda picked: collate(picked, pad_id=0), batch_size=6, seed=4)

    whole = task()
    ranks = [Distributed(rank=r, world_size=2) for r in range(2)]
    parts = [GlobalBatchShare(task(), rank) for rank in ranks]
    for _step in range(9):  # past two epochs
        full = whole.next_micro_batches(2)
        shares = [part.next_micro_batches(2) for part in parts]
        for index, batch in enumerate(full):
            lines = torch.cat([share[index]["line"] for share in shares])
            assert torch.equal(lines, batch["line"]) and torch.equal(torch.cat([s[index]["labels"] for s in shares]), batch["labels"])
            assert all(share[index]["epochs"] == batch["epochs"] for share in shares)
        counts = [part.shared_counts(share) for part, share in zip(parts, shares)]
        assert sum(c["task"] for c in counts) == whole.normalizer_counts(full)["task"]
        assert all(part.state_dict() == whole.state_dict() for part in parts)


def test_a_task_wrapper_without_rows_keeps_the_whole_batch_and_its_slice():
    class Wrapper:  # passes everything through but changes batches, as tests/test_extending.py's does
        def __init__(self, task):
            self.task = task

        def next_micro_batches(self, count):
            return [{"x": b["x"] * 2} for b in self.task.next_micro_batches(count)]

        def normalizers(self, batches):
            return {"n": float(sum(b["x"].shape[0] for b in batches))}

        def __getattr__(self, name):
            return getattr(self.task, name)

    class Rows:
        batch_size = 4

        def next_micro_batches(self, count, rows=None):
            return [{"x": torch.arange(4.0)[rows or slice(None)]} for _ in range(count)]

    assert builds_rows(Rows()) and not builds_rows(Wrapper(Rows()))
    share = GlobalBatchShare(Wrapper(Rows()), Distributed(rank=1, world_size=2))
    batches = share.next_micro_batches(2)
    assert [b["x"].tolist() for b in batches] == [[4.0, 6.0], [4.0, 6.0]]
    assert share.normalizers(batches) == {"n": 8.0, "ranks": 2.0}


def test_finetune_two_processes_equal_one_with_gradual_unfreezing(one_process_runs, tmp_path):
    words = "good bad fine awful great poor nice dull".split()
    rows = [f"{words[i % 8]} {words[(i * 3) % 8]} film\t{int(i % 8 in (0, 2, 4, 6))}" for i in range(48)]
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    common = ["finetune", "--checkpoint", one_process_runs["bert"], "--task", "classification", "--train", train, "--dev", train,
              "--epochs", "2", "--lr", "1e-3", "--threads", "1", "--no-progress", "--log-every", "2", "--max-len", "16", "--gradual-unfreeze"]
    single, double = tmp_path / "one", tmp_path / "two"
    done = run_ptm(*common, "--batch-size", "8", "-o", single)
    assert done.returncode == 0, done.stderr
    done = run_ptm(*common, "--batch-size", "4", "-o", double, procs=2)
    assert done.returncode == 0, done.stderr
    assert "global batch 8 = 4 per device x 2 processes" in done.stderr
    assert _max_diff(_final(double), _final(single)) < 1e-5
    assert json.loads((double / "results.json").read_text())["best_step"] == json.loads((single / "results.json").read_text())["best_step"]
