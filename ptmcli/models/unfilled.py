"""Building a model whose weights are about to be read from a file: without random initialisation."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def without_random_init():
    """Inside, ``torch.nn.init``'s functions leave tensors as they are.

    A model built to be filled from a checkpoint would spend most of its build
    time (seconds for a base-sized model) on a random initialisation thrown away
    at once; parameters the file does not fill keep whatever memory they got.
    (The meta device avoids the allocation too, but its first random fill
    imports torch's compiler stack, which costs more.) Process-wide while it
    lasts: meant for the single-threaded start-up of a command.
    """
    names = [name for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")
             and callable(getattr(nn.init, name))]
    saved = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)
