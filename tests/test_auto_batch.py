"""`ptm pretrain --batch-size auto`: the search on fake measurements, the flag, and one real CPU run."""

from __future__ import annotations

import copy
import gc
import json
from dataclasses import replace

import pytest
import torch
from conftest import run_cli
from conftest import run_cli_err as ptm

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.config_fields import AUTO, merge
from ptmcli.errors import PtmError
from ptmcli.pretraining.config import PretrainConfig
from ptmcli.training import auto_batch
from ptmcli.training.auto_batch import (
    Choice,
    accumulation,
    candidates,
    largest_predicted,
    largest_that_runs,
    predict_peak,
)

GB = 10**9


def test_candidates_are_powers_of_two_capped_by_the_global_batch():
    assert candidates(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert candidates(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert candidates(1) == [1]
    assert auto_batch.per_process_cap(256, 4) == 64
    assert auto_batch.per_process_cap(10, 4) == 3
    with pytest.raises(PtmError, match="fewer examples than the 4 processes"):
        auto_batch.per_process_cap(2, 4)


def test_accumulation_reaches_the_global_batch_with_the_fewest_micro_batches():
    assert accumulation(64, 256, 1) == (64, 4)
    assert accumulation(256, 256, 1) == (256, 1)
    assert accumulation(64, 100, 1) == (50, 2)  # 2 x 50, not 2 x 64
    assert accumulation(32, 100, 1) == (25, 4)
    assert accumulation(4, 7, 1) == (4, 2)  # 8: the nearest above, said in the banner
    assert accumulation(16, 256, 4) == (16, 4)  # 16 per device x 4 processes x 4
    choice = Choice(*accumulation(4, 7, 1), world=1, reason="4 fits")
    assert choice.global_batch == 8 and "(7 asked" in choice.banner(7)
    two = Choice(*accumulation(16, 256, 4), world=4, reason="16 fits (32 did not: out of memory)")
    assert two.banner(256) == ("ptm: batch-size auto: 16 fits (32 did not: out of memory); 16 per device x 4 processes "
                               "x 4 accumulation = global 256")


def test_cpu_choice_extrapolates_the_measured_peaks_under_the_limit():
    measured = {1: 1 * GB + 10_000_000, 2: 1 * GB + 20_000_000, 8: 1 * GB + 80_000_000}  # 10 MB per example
    assert predict_peak(measured, 64) == pytest.approx(1 * GB + 640_000_000)
    sizes = candidates(256)
    assert largest_predicted(sizes, measured, 2 * GB) == (64, 128)  # 128 would need 2.28 GB
    assert largest_predicted(sizes, measured, 10 * GB) == (256, None)  # capped by the global batch
    assert largest_predicted(sizes, measured, 0.5 * GB) == (0, 1)
    assert largest_predicted([1, 2, 3], measured, 10 * GB) == (3, None)
    # A noisy measurement that shrinks with size counts as no growth, not as negative memory.
    assert predict_peak({1: 2 * GB, 8: GB}, 1000) == 2 * GB
    assert predict_peak({4: GB}, 64) == GB


def test_cuda_search_stops_at_the_first_out_of_memory_and_recovers_each_time():
    tried, recovered = [], []

    def trial(size: int) -> None:
        tried.append(size)
        if size > 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fit, failed = largest_that_runs(candidates(256), trial, torch.cuda.OutOfMemoryError, lambda: recovered.append(1))
    assert (fit, failed) == (32, 64)
    assert tried == [1, 2, 4, 8, 16, 32, 64] and len(recovered) == len(tried)
    assert largest_that_runs([1, 2, 4], lambda s: None, torch.cuda.OutOfMemoryError) == (4, None)

    def never(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert largest_that_runs([1, 2], never, torch.cuda.OutOfMemoryError) == (0, 1)
    with pytest.raises(ValueError):  # anything but running out of memory is a bug, not a size limit
        largest_that_runs([1], lambda s: (_ for _ in ()).throw(ValueError("bad batch")), torch.cuda.OutOfMemoryError)


def test_auto_is_a_word_of_the_integer_option():
    assert merge(PretrainConfig, {"batch_size": "auto"}, {}).batch_size is AUTO
    assert merge(PretrainConfig, {"batch_size": 8}, {}).batch_size == 8
    with pytest.raises(PtmError, match=r"batch_size = 'big': expected an integer or auto"):
        merge(PretrainConfig, {"batch_size": "big"}, {})
    with pytest.raises(PtmError, match="expected an integer$"):
        merge(PretrainConfig, {"grad_accum": "auto"}, {})
    cfg = merge(PretrainConfig, {}, {"batch_size": AUTO})
    assert copy.deepcopy(cfg).batch_size is AUTO and replace(cfg, lr=1.0).batch_size is AUTO
    assert f"--batch-size {cfg.batch_size}" == "--batch-size auto" and repr(AUTO) == "auto"


def test_flag_and_config_file_take_auto_and_refuse_misuse(tmp_path, capsys):
    code, err = ptm(capsys, "pretrain", "--batch-size", "many", "-o", tmp_path / "r")
    assert code == 2 and "'many': expected an integer or auto" in err
    code, err = ptm(capsys, "pretrain", "--global-batch", "64", "-o", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1 and "--global-batch 64 goes with --batch-size auto" in err
    code, err = ptm(capsys, "pretrain", "--batch-size", "auto", "--grad-accum", "4", "-o", tmp_path / "r")
    assert code == 2 and "the accumulation follows from --global-batch" in err
    (tmp_path / "bad.toml").write_text('batch_size = "lots"\n')
    code, err = ptm(capsys, "pretrain", "--config", tmp_path / "bad.toml", "-o", tmp_path / "r")
    assert code == 2 and "batch_size = 'lots': expected an integer or auto" in err
    code, out, _ = run_cli(capsys, "pretrain", "--help")
    assert "N|auto" in out and "--global-batch" in out
    assert not (tmp_path / "r").exists()


def test_garbage_freed_by_the_probe_is_not_counted_as_room(tmp_path, capsys, monkeypatch):
    # 256 MB held only by a reference cycle in the oldest generation, as a finished test's model can be:
    # resident until a full collection, such as the probe's, frees it. Read before that collection, it would
    # leave a 1 kB machine 256 MB of apparent room.
    cycle: list = [bytearray(256 * 2**20)]
    cycle.append(cycle)
    gc.collect()  # still reachable: promoted to the oldest generation
    del cycle
    monkeypatch.setattr(auto_batch, "available_memory", lambda: 1000)
    code, err = ptm(capsys, "pretrain", "--preset", "bert-tiny", "--batch-size", "auto", "--seq-len", "32", "--max-steps", "1",
                    "--no-progress", "-o", tmp_path / "r")
    assert code == 2, err
    assert "not even 1 example per micro-batch fits" in err.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_nothing_fits_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(auto_batch, "available_memory", lambda: 1000)  # a 1 kB machine
    code, err = ptm(capsys, "pretrain", "--preset", "bert-tiny", "--batch-size", "auto", "--seq-len", "32", "--max-steps", "1",
                    "--no-progress", "-o", tmp_path / "r")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("ptm: error: --batch-size auto: not even 1 example per micro-batch fits (1 is predicted to need")
    assert not (tmp_path / "r").exists()


def test_real_cpu_run_records_numbers_and_resumes(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    # Real trial steps, with measured peaks of 50 MB per example over the process's size, and 1 GB free:
    # 8 fits under 70% of it and 16 does not, so the global batch of 16 takes 2 micro-batches.
    trial_sizes = iter(auto_batch.CPU_TRIAL_SIZES)

    def fake_peak(step):
        step()
        return auto_batch._resident_bytes("VmRSS") + 50_000_000 * next(trial_sizes)

    monkeypatch.setattr(auto_batch, "peak_resident", fake_peak)
    monkeypatch.setattr(auto_batch, "available_memory", lambda: GB)
    code, err = ptm(capsys, "pretrain", "--preset", "bert-tiny", "--batch-size", "auto", "--global-batch", "16", "--max-steps", "2",
                    "--seq-len", "64", "--eval-batches", "1", "--no-progress", "-o", run)
    assert code == 0, err
    assert "ptm: batch-size auto: 8 fits (16 would not: predicted peak" in err and "measured at 1, 2, 8" in err
    assert "8 x 2 accumulation = global 16" in err and "batch 8x2" in err
    config = json.loads((run / "run.json").read_text())["config"]
    saved = json.loads((list_step_checkpoints(run)[-1] / "trainer" / "state.json").read_text())["run_config"]
    for recorded in (config, saved):
        assert type(recorded["batch_size"]) is int and type(recorded["grad_accum"]) is int
        assert (recorded["batch_size"], recorded["grad_accum"], recorded["global_batch"]) == (8, 2, None)
    monkeypatch.undo()
    code, err = ptm(capsys, "pretrain", "--resume", run, "--max-steps", "3", "--no-progress")
    assert code == 0, err
    assert "batch-size auto" not in err and "batch 8x2" in err and "ptm: done: step 3" in err
