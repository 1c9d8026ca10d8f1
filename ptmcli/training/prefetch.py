"""Batches prepared ahead on a background thread, so the device does not wait for the data.

One producer thread calls the task for the next step's micro-batches and
records, right after each call, the task's data state: where its stream
stands once those batches are made. The training thread takes the steps in
order (``peek`` looks at the next without taking it); ``consumed_state`` is
the state recorded with the last step it took, so a checkpoint describes the
data actually trained on, not what was prepared beyond it. The producer stays at most ``depth`` steps ahead, never
makes a step the training thread says it will not need, and starts on the
next ones when the training thread says it is busy without the GIL. An exception
in the producer is raised in the training thread when it asks for the step
that failed, as itself (same type, same message). On CUDA the batches are
copied into pinned memory on the producer thread, so the training thread's
``non_blocking`` copies overlap with compute.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

_POLL_S = 0.1  # how often a waiting training thread looks whether the producer died


class BatchPrefetcher:
    """Steps from ``produce()``, made ahead on a thread; ``snapshot()`` is taken after each, on the same thread.

    ``planned`` is how many steps the caller expects to take: the first
    ``depth`` of them are made at once. After that the producer makes a step
    when it is asked for, or ahead when ``make_ahead`` allows it. ``pin_for``:
    the CUDA device the batches will be copied to (they are pinned for it).
    """

    def __init__(self, produce: Callable[[], list], snapshot: Callable[[], Any], *, planned: int, depth: int = 2,
                 pin_for: torch.device | None = None) -> None:
        self._produce = produce
        self._snapshot = snapshot
        self._pin_for = None
        if pin_for is not None and pin_for.type == "cuda":
            self._pin_for = torch.device("cuda", pin_for.index if pin_for.index is not None else torch.cuda.current_device())
        self._depth = max(1, depth)
        self._ready: deque = deque()
        self._made = 0
        self._taken = 0
        self._allowed = min(self._depth, max(0, planned))
        self._stopping = False
        self._done = threading.Condition()
        # Before anything is taken, the stream stands where the task says now.
        self.consumed_state = snapshot()
        self._thread = threading.Thread(target=self._run, name="ptm-batches", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        on_device = False
        while True:
            with self._done:
                while not self._stopping and self._made >= self._allowed:
                    self._done.wait()
                if self._stopping:
                    return
            try:
                if self._pin_for is not None and not on_device:
                    # A thread starts on GPU 0: pinning from there would open a context on another rank's GPU.
                    torch.cuda.set_device(self._pin_for)
                    on_device = True
                batches = self._produce()
                if self._pin_for is not None:
                    # In place: a list may carry attributes (a rank's share carries its normalisers).
                    for index, batch in enumerate(batches):
                        batches[index] = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                item = (batches, self._snapshot(), None)
            except BaseException as error:  # noqa: BLE001 - handed to the training thread whole
                item = (None, None, error)
            with self._done:
                self._ready.append(item)
                self._made += 1
                self._done.notify_all()
            if item[2] is not None:
                return

    def peek(self):
        """The next step's micro-batches, left in place (or the producer's exception)."""
        with self._done:
            # Whatever was allowed ahead, the step asked for may always be made.
            self._allowed = max(self._allowed, self._taken + 1)
            self._done.notify_all()
            while not self._ready:
                if not self._thread.is_alive():
                    raise RuntimeError("the batch thread stopped without a batch or an error")
                self._done.wait(_POLL_S)
            batches, _state, error = self._ready[0]
        if error is not None:
            raise error
        return batches

    def next(self):
        """Take the next step's micro-batches: from now on the saved data state is the one made with them."""
        batches = self.peek()
        with self._done:
            _batches, self.consumed_state, _error = self._ready.popleft()
            self._taken += 1
        return batches

    def make_ahead(self, more: int) -> None:
        """Let the producer make up to ``depth`` of the ``more`` steps that may follow those taken.

        Best called as the training thread starts a long call that releases the
        GIL (the backward pass): the producer's Python then runs beside it
        instead of delaying the next launches.
        """
        with self._done:
            self._allowed = max(self._allowed, self._taken + min(self._depth, max(0, more)))
            self._done.notify_all()

    def close(self) -> None:
        """Stop the producer (it finishes the step it is making) and drop what it prepared."""
        with self._done:
            self._stopping = True
            self._ready.clear()
            self._done.notify_all()
        self._thread.join(timeout=60)

    def __enter__(self) -> BatchPrefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
