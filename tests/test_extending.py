"""docs/extending.md's claim: a new objective is one builder and one table row, and the CLI trains it.

The toy objective below lives only in this file: next-token prediction over
every block read right to left (a backward GPT). Registering its row is the
only change; nothing else in ptm is touched, yet ``ptm pretrain --objective``
accepts it, trains it, logs its metrics and records it in the checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli_err as ptm
from conftest import sample_corpus

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.pretraining import objective_table
from ptmcli.pretraining.causal_lm import build as build_causal
from ptmcli.pretraining.objective_table import Objective

GPT_TINY = ["--arch", "gpt", "--preset", "gpt-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
            "--num-layers", "2", "--seq-len", "32", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "2",
            "--log-every", "2", "--no-progress"]


class ReversedBlocks:
    """Wraps a causal-LM task so every training block is read right to left."""

    def __init__(self, task) -> None:
        self.task, self.batches_seen = task, []

    def next_micro_batches(self, count):
        batches = [{"input_ids": b["labels"].flip(1), "labels": b["input_ids"].flip(1)}
                   for b in self.task.next_micro_batches(count)]
        self.batches_seen += batches
        return batches

    def __getattr__(self, name):
        return getattr(self.task, name)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=8, vocab_size=600, tokenizer_lines=2000)


def test_a_toy_objective_registered_as_one_row_trains_through_the_cli(corpus, tmp_path, capsys, monkeypatch):
    built = []

    def build(context):
        task = ReversedBlocks(build_causal(context))
        built.append(task)
        return task

    monkeypatch.setitem(objective_table.OBJECTIVES, "reverse-clm",
                        Objective(("gpt",), build, "next-token prediction right to left", metrics=("loss", "lm_ppl")))
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *GPT_TINY,
                    "--objective", "reverse-clm", "--max-steps", "6", "--lr", "3e-3")
    assert code == 0, err
    assert len(built) == 1 and len(built[0].batches_seen) == 6
    first = built[0].batches_seen[0]
    # Each row's labels are its inputs shifted by one position to the left: the text read backwards.
    assert torch.equal(first["input_ids"][:, 1:], first["labels"][:, :-1])
    config = read_config(list_step_checkpoints(tmp_path / "run")[-1])
    assert config["objective"] == "reverse-clm" and config["arch"] == "gpt"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("lm_ppl" in r for r in records)
    assert "objective reverse-clm" in err and "lm_ppl" in err.split("ptm: done:")[1]


def test_an_objective_is_refused_for_a_family_its_row_does_not_name(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(objective_table.OBJECTIVES, "reverse-clm",
                        Objective(("gpt",), build_causal, "next-token prediction right to left"))
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run",
                    "--arch", "bert", "--objective", "reverse-clm", "--max-steps", "2")
    assert code == 2 and "--objective 'reverse-clm' is not available for --arch bert" in err
    assert not (tmp_path / "run").exists()
