"""Hugging Face model directories on disk: config.json and weight files, read strictly.

Weights are read from ``model.safetensors``, sharded safetensors with their
``model.safetensors.index.json``, or, only through ``torch.load(weights_only=True)``,
legacy ``pytorch_model.bin`` files (sharded too). Written weights are always
one safetensors file whose tensors each own their memory, with every tied
weight stored once.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ptmcli.errors import PtmError

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
# Weight files of other frameworks, named so the error can say what was found.
_FOREIGN = {"tf_model.h5": "TensorFlow", "flax_model.msgpack": "Flax", "model.ckpt.index": "TensorFlow 1"}


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PtmError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise PtmError(f"{path}: expected a JSON object")
    return value


def read_hf_config(directory: Path) -> dict:
    """The model's config.json."""
    return read_json(Path(directory) / CONFIG)


def weight_source(directory: Path) -> Path:
    """The weight file or index to read, preferring safetensors; a clear error when there is none."""
    directory = Path(directory)
    for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX):
        if (directory / name).is_file():
            return directory / name
    found = [f"{kind} ({name})" for name, kind in _FOREIGN.items() if (directory / name).exists()]
    also = f"; it has only {', '.join(found)} weights" if found else ""
    raise PtmError(
        f"{directory}: no model weights ({SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or {TORCH_BIN_INDEX}){also}"
    )


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Every tensor of the model directory by its transformers name, and the file or index read."""
    source = weight_source(directory)
    if source.name.endswith(".index.json"):
        return _read_sharded(source), source
    if source.suffix == ".safetensors":
        return read_safetensors(source), source
    return read_torch_bin(source), source


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise PtmError(f"{path}: unreadable safetensors file ({str(err).splitlines()[0]})") from None


def read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    """A legacy pickle-based weight file, read with ``weights_only=True``: only tensors, never code."""
    import pickle  # for the exception type torch's weights-only loader raises; nothing is unpickled with it
    import re
    import zipfile

    try:
        with warnings.catch_warnings():  # the refusal below is the one line the user needs
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused is None:
            raise PtmError(f"{path}: unreadable PyTorch weight file (not a pickle of tensors)") from None
        raise PtmError(
            f"{path}: refused by torch.load(weights_only=True): the file holds a {refused.group(1)} object, not only "
            "tensors, and ptm never unpickles code (re-save it as safetensors with the library that wrote it)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise PtmError(f"{path}: unreadable PyTorch weight file ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise PtmError(f"{path}: expected a flat mapping of tensor names to tensors")
    return dict(state)


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    index = read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise PtmError(f"{index_path}: no weight_map")
    read = read_safetensors if index_path.name == SAFETENSORS_INDEX else read_torch_bin
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if Path(shard).name != shard or not shard_path.is_file():
            raise PtmError(f"{index_path}: shard {shard!r} is missing")
        tensors.update(read(shard_path))
    absent = sorted(set(weight_map) - set(tensors))
    if absent:
        raise PtmError(f"{index_path}: {len(absent)} tensor(s) listed but in no shard, e.g. {absent[0]!r}")
    return tensors


def owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors that each own their storage, as safetensors requires.

    Views into a larger buffer (the query/key/value slices of a fused projection)
    are copied; a tensor that is already alone in its storage is kept as is.
    """
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size() or tensor.storage_offset():
            tensor = tensor.clone()
        out[key] = tensor
    return out


def shared_groups(tensors: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names of tensors that share memory, in groups (empty when each tensor owns its storage)."""
    by_storage: dict[int, list[str]] = {}
    for key, tensor in tensors.items():
        if tensor.numel():
            by_storage.setdefault(tensor.untyped_storage().data_ptr(), []).append(key)
    return [group for group in by_storage.values() if len(group) > 1]


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """One safetensors file (transformers reads the ``format: pt`` metadata)."""
    from safetensors.torch import save_file

    tensors = owned(tensors)
    groups = shared_groups(tensors)
    if groups:  # tied weights must have been dropped by the caller; a bug otherwise
        raise AssertionError(f"tensors share memory: {groups[0]}")
    save_file(tensors, str(path), metadata={"format": "pt"})
