"""Several workers updating shared weight tensors without locks (Recht et al., 2011, "Hogwild!").

This is how word2vec, fastText and GloVe use several cores: updates are
sparse, so two workers rarely touch the same row at once, and an occasional
lost update costs nothing measurable.

On the CPU the workers are forked processes: the weights live in anonymous
shared memory, which the children inherit and write in place. Python threads
would share them for free, but they serialise on the GIL between kernels, and
the many small kernels of a step left two threads barely faster than one.
Where fork is not available, and on a GPU, workers are threads. Each kernel
gets one intra-op thread; the workers are the parallelism. With one worker,
jobs run in order in the calling process and the result depends only on the
seed.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

import torch

from ptmcli.errors import PtmError

Job = TypeVar("Job")
Outcome = TypeVar("Outcome")

_POLL_SECONDS = 0.5


def resolve_workers(workers: int) -> int:
    """``workers``, or with 0 one per CPU this process may use."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def can_fork(device: torch.device) -> bool:
    """Whether workers on ``device`` can be forked processes."""
    return device.type == "cpu" and "fork" in multiprocessing.get_all_start_methods()


def shared_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a CPU tensor in anonymous shared memory, so that forked workers update the same values."""
    size = max(1, tensor.numel() * tensor.element_size())
    memory = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    shared = torch.frombuffer(memory, dtype=tensor.dtype, count=tensor.numel()).view(tensor.shape)
    shared.copy_(tensor)
    return shared  # the tensor keeps the mapping alive


def run_forked(workers: int, body: Callable[[int], None], poll: Callable[[], None]) -> None:
    """Run ``body(rank)`` for ranks 0..workers-1 in forked processes; ``poll()`` runs in this one meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_child, args=(body, rank), daemon=True) for rank in range(workers)]
    try:
        for process in processes:
            process.start()
        while any(process.is_alive() for process in processes):
            processes[0].join(_POLL_SECONDS)
            poll()
            failed = [process for process in processes if process.exitcode not in (None, 0)]
            if failed:
                raise PtmError(f"a training worker stopped with exit code {failed[0].exitcode} (its error is above)")
        poll()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _child(body: Callable[[int], None], rank: int) -> None:
    torch.set_num_threads(1)
    try:
        body(rank)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # skip the parent's exit handlers, which are not this process's to run


def run_jobs(jobs: Iterable[Job], work: Callable[[Job], Outcome], workers: int,
             finished: Callable[[Job, Outcome], None]) -> None:
    """Call ``work`` on each job (``workers`` threads at a time), then ``finished`` in the calling thread."""
    if workers <= 1:
        for job in jobs:
            finished(job, work(job))
        return
    # Jobs are made lazily (they hold chunks of the corpus): keep only a few waiting.
    waiting: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ptm-static") as pool:
        try:
            for job in jobs:
                while len(waiting) >= 2 * workers:
                    _collect(waiting, finished)
                waiting[pool.submit(work, job)] = job
            while waiting:
                _collect(waiting, finished)
        except BaseException:
            for future in waiting:
                future.cancel()
            raise


def _collect(waiting: dict, finished: Callable) -> None:
    done, _ = wait(list(waiting), return_when=FIRST_COMPLETED)
    for future in done:
        job = waiting.pop(future)
        finished(job, future.result())


@contextmanager
def single_threaded_kernels(device: torch.device):
    """One intra-op thread per kernel while the workers provide the parallelism."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
