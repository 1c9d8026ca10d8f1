"""Reading safetensors weights: the one place ptm opens a weights file (converters of foreign files aside).

Every command that starts from a checkpoint goes through here, so a damaged
file, a missing tensor or a wrong shape gets the same one-line message
whichever command meets it.
"""

from __future__ import annotations

from pathlib import Path

from ptmcli.checkpoint.directory import WEIGHTS
from ptmcli.errors import PtmError


def read_tensors(file: str | Path) -> dict:
    """All tensors of a safetensors file, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise PtmError(f"{file}: unreadable safetensors file ({err})") from None


def read_weights(path: str | Path) -> dict:
    """The tensors of a checkpoint directory's ``model.safetensors``."""
    file = Path(path) / WEIGHTS
    if not file.exists():
        raise PtmError(f"{path}: checkpoint has no {WEIGHTS}")
    return read_tensors(file)


def check_shapes(file: str | Path, state: dict, expected: dict) -> None:
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise PtmError(
                f"{file}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}"
            )


def load_weights(path: str | Path, model, tied: dict[str, str]) -> None:
    """Load ``model.safetensors`` into ``model`` strictly, re-tying shared weights."""
    load_partial_weights(path, model, tied, {})


def load_partial_weights(
    path: str | Path,
    model,
    tied: dict[str, str],
    optional_parts: dict[str, str],
    ignored_parts: dict[str, str] | None = None,
    state: dict | None = None,
) -> tuple[list[str], list[str]]:
    """Load ``model.safetensors`` into ``model``, allowing whole optional parts to be absent.

    ``optional_parts`` maps a part name to its key prefix (``{"nsp": "nsp."}``): a
    part the file lacks entirely keeps the model's initialisation; a part present
    only in pieces is an error. Tensors under ``ignored_parts`` prefixes are
    skipped (a task head when loading a pretraining model). Anything else missing,
    unexpected or of the wrong shape is an error. ``state``: the file's tensors
    when the caller has read them already. Returns ``(initialised parts, ignored
    parts)`` so the caller can say so.
    """
    file = Path(path) / WEIGHTS
    if state is None:
        state = read_weights(path)

    def part(key: str, parts: dict[str, str]) -> str | None:
        return next((name for name, prefix in parts.items() if key.startswith(prefix)), None)

    ignored = sorted({p for p in (part(k, ignored_parts or {}) for k in state) if p is not None})
    state = {k: v for k, v in state.items() if part(k, ignored_parts or {}) is None}
    expected = {k: v for k, v in model.state_dict().items() if k not in tied}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    required = [k for k in missing if part(k, optional_parts) is None]
    if required:
        raise PtmError(f"{file}: missing {len(required)} tensor(s), e.g. {required[0]!r}")
    if extra:
        raise PtmError(f"{file}: {len(extra)} unexpected tensor(s), e.g. {extra[0]!r}")
    initialised = {part(k, optional_parts) for k in missing}
    for name in initialised:
        present = [k for k in state if k.startswith(optional_parts[name])]
        if present:
            lacking = next(k for k in missing if k.startswith(optional_parts[name]))
            raise PtmError(f"{file}: part {name!r} is incomplete: has {present[0]!r} but not {lacking!r}")
    check_shapes(file, state, expected)
    model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return sorted(initialised), ignored
