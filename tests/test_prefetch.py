"""Batches made ahead on a thread: order, errors, the consumed data position, shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ptmcli import checkpoint as ck
from ptmcli.errors import PtmError
from ptmcli.training.prefetch import BatchPrefetcher


class CountingStream:
    """Step k holds the numbers k*count..; the state is the next number. Fails at step ``fail_at`` if given."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.next_number = 0
        self.made = 0
        self.fail_at = fail_at

    def next_micro_batches(self, count: int = 2) -> list[dict[str, torch.Tensor]]:
        if self.made == self.fail_at:
            raise PtmError(f"shard row {self.next_number} is unreadable")
        self.made += 1
        batches = [{"x": torch.tensor([float(self.next_number + i)])} for i in range(count)]
        self.next_number += count
        return batches

    def state_dict(self) -> dict:
        return {"next_number": self.next_number}

    def load_state_dict(self, state: dict) -> None:
        self.next_number = state["next_number"]


def _numbers(batches) -> list[int]:
    return [int(b["x"]) for b in batches]


def test_steps_come_in_order_and_the_saved_position_is_the_last_one_taken():
    stream = CountingStream()
    with BatchPrefetcher(stream.next_micro_batches, stream.state_dict, planned=10, depth=2) as ahead:
        assert ahead.consumed_state == {"next_number": 0}
        assert _numbers(ahead.next()) == [0, 1]
        assert _numbers(ahead.peek()) == [2, 3]  # looking does not take
        assert _numbers(ahead.next()) == [2, 3]
        ahead.make_ahead(8)
        deadline = time.time() + 10
        while stream.made < 4 and time.time() < deadline:
            time.sleep(0.01)
        assert stream.made == 4, "two steps are made ahead"
        assert stream.state_dict() == {"next_number": 8}
        assert ahead.consumed_state == {"next_number": 4}, "the position after the last step taken, not the last made"
        saved = ahead.consumed_state
        following = _numbers(ahead.next())

    resumed = CountingStream()
    resumed.load_state_dict(saved)
    with BatchPrefetcher(resumed.next_micro_batches, resumed.state_dict, planned=1) as ahead:
        assert _numbers(ahead.next()) == following


def test_a_producer_error_is_raised_at_its_step_with_its_message():
    stream = CountingStream(fail_at=2)
    with BatchPrefetcher(stream.next_micro_batches, stream.state_dict, planned=5) as ahead:
        assert _numbers(ahead.next()) == [0, 1]
        assert _numbers(ahead.next()) == [2, 3]
        with pytest.raises(PtmError, match=r"^shard row 4 is unreadable$"):
            ahead.next()
        assert ahead.consumed_state == {"next_number": 4}


def test_nothing_is_made_past_the_planned_steps_and_a_skipped_step_asks_for_one_more():
    stream = CountingStream()
    with BatchPrefetcher(stream.next_micro_batches, stream.state_dict, planned=3, depth=2) as ahead:
        for more in (2, 1, 1, 0):  # the third step was skipped: the step count did not move
            ahead.next()
            ahead.make_ahead(more)
        time.sleep(0.2)
        assert stream.made == 4


def test_closing_stops_a_producer_that_is_waiting_or_working():
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return [{"x": torch.zeros(1)}]

    ahead = BatchPrefetcher(slow, dict, planned=100)
    started.wait(5)
    release.set()
    ahead.close()
    assert not ahead._thread.is_alive()


def test_a_checkpoint_saves_the_data_position_of_the_steps_trained(tmp_path):
    # The loop runs the toy task's stream ahead; what it saves must be where the trained steps end.
    from tests.test_training_loop import ToyTask, _run

    task = ToyTask()
    _run(tmp_path / "run", 6, save_every=3, task=task)
    assert task.drawn == 12, "no micro-batch made beyond the 6 steps of 2"
    _tensors, state = ck.read_trainer(tmp_path / "run" / "checkpoints" / ck.step_dir_name(3))
    assert state["data"]["drawn"] == 6
