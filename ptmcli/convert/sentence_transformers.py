"""sentence-transformers model directories: how the model turns token vectors into one text vector.

A sentence-transformers directory is a transformers model (``config.json``,
weights, tokenizer) plus ``modules.json``, which lists the steps ``encode()``
runs: the Transformer, a Pooling module (``1_Pooling/config.json``), often a
Normalize module. Both the classic layout (``pooling_mode_mean_tokens: true``
..., ``sentence_bert_config.json`` with ``max_seq_length``) and the current one
(``pooling_mode: "mean"``, the length in ``tokenizer_config.json``) are read.

ptm keeps what it needs as ``sentence_embedding`` in the checkpoint's
config.json::

    {"pool": "mean" | "cls" | "max" | "last", "normalize": bool, "max_seq_length": int | null}

which ``ptm extract-features`` and ``ptm finetune`` take as their default
pooling, and which ``ptm convert --to hf`` writes back as the classic layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ptmcli.errors import PtmError

MODULES = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"

# sentence-transformers' pooling mode names -> ptm's --pool names.
_POOL_NAMES = {"mean": "mean", "cls": "cls", "max": "max", "lasttoken": "last"}
# The classic config's flags, in the order sentence-transformers concatenates them.
_LEGACY_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass
class SentenceModules:
    """What a directory's modules.json says, in ptm's terms."""

    transformer_dir: Path
    """Where the transformers model of the first module lives (the directory itself, or an old ``0_Transformer/``)."""
    embedding: dict | None
    """``sentence_embedding`` for the checkpoint config, or None when the pooling is not one ptm has."""
    read: list[str] = field(default_factory=list)
    """One phrase per module, for the convert output."""
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PtmError(f"{path} does not exist, but {MODULES} names it") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{path}: not valid JSON ({err})") from None


def _kind(module: dict) -> str:
    """The class name of a module (``Pooling``), whatever package path its version wrote."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _pooling_modes(config: dict) -> list[str]:
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for flag, name in _LEGACY_FLAGS.items() if config.get(flag)]
        return modes or ["mean"]  # what sentence-transformers falls back to
    return [mode] if isinstance(mode, str) else [str(m) for m in mode]


def read_modules(directory: Path) -> SentenceModules | None:
    """The sentence-transformers modules of ``directory``, or None when it has no modules.json."""
    path = directory / MODULES
    if not path.is_file():
        return None
    modules = _read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise PtmError(f"{path}: expected a list of modules")
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    if not modules or _kind(modules[0]) != "Transformer":
        first = _kind(modules[0]) if modules else "nothing"
        raise PtmError(f"{path}: the first module is {first}; ptm converts models whose first module is a Transformer")
    transformer_dir = directory / str(modules[0].get("path") or "")
    result = SentenceModules(transformer_dir, None)
    pool: str | None = None
    normalize = False
    after_pooling: list[str] = []
    for module in modules[1:]:
        kind, where = _kind(module), str(module.get("path") or "")
        if kind == "Pooling":
            config = _read_json(directory / where / "config.json")
            modes = _pooling_modes(config if isinstance(config, dict) else {})
            if len(modes) == 1 and modes[0] in _POOL_NAMES:
                pool = _POOL_NAMES[modes[0]]
                result.read.append(f"{pool} pooling")
            else:
                result.notes.append(f"{directory / where / 'config.json'}: pooling {'+'.join(modes)} is not one ptm "
                                    "computes (cls, mean, max, last); no default pooling is recorded")
        elif kind == "Normalize" and pool is not None and not after_pooling:
            normalize = True
            result.read.append("L2 normalisation")
        else:
            after_pooling.append(f"{where or kind} ({kind})")
    if after_pooling:
        result.notes.append(f"{path}: {', '.join(after_pooling)} not converted: ptm's pooled vectors are the ones "
                            "before it, so they differ from encode()'s")
    sentence_config = transformer_dir / SENTENCE_BERT_CONFIG
    if sentence_config.is_file() and (_read_json(sentence_config) or {}).get("do_lower_case"):
        result.notes.append(f"{sentence_config}: do_lower_case is true: encode() lowercases texts before its tokenizer, "
                            "ptm leaves that to the tokenizer (lowercase your input if it does not)")
    max_length = _max_seq_length(transformer_dir)
    if max_length is not None:
        result.read.append(f"at most {max_length} tokens")
    if pool is not None:
        result.embedding = {"pool": pool, "normalize": normalize, "max_seq_length": max_length}
    return result


def _max_seq_length(transformer_dir: Path) -> int | None:
    """encode()'s length limit: sentence_bert_config.json's, else the tokenizer config's (current layout)."""
    for name, key in ((SENTENCE_BERT_CONFIG, "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = transformer_dir / name
        if path.is_file():
            config = _read_json(path)
            value = config.get(key) if isinstance(config, dict) else None
            if isinstance(value, int) and 0 < value <= 1_000_000:  # transformers writes 1e30 for "no limit"
                return value
    return None


def check_embedding(value, where: str) -> dict | None:
    """A checkpoint config's ``sentence_embedding``, checked."""
    if value is None:
        return None
    if (not isinstance(value, dict) or value.get("pool") not in _POOL_NAMES.values()
            or not isinstance(value.get("normalize", False), bool)
            or not (value.get("max_seq_length") is None or isinstance(value.get("max_seq_length"), int))):
        raise PtmError(f"{where}: sentence_embedding must be {{\"pool\": cls|mean|max|last, \"normalize\": bool, "
                       "\"max_seq_length\": int or null}")
    return {"pool": value["pool"], "normalize": bool(value.get("normalize", False)),
            "max_seq_length": value.get("max_seq_length")}


def describe(embedding: dict) -> str:
    """``mean pooling, L2-normalised, at most 256 tokens``."""
    parts = [f"{embedding['pool']} pooling"]
    if embedding.get("normalize"):
        parts.append("L2-normalised")
    if embedding.get("max_seq_length"):
        parts.append(f"at most {embedding['max_seq_length']} tokens")
    return ", ".join(parts)


def write_modules(embedding: dict, hidden_size: int, directory: Path) -> None:
    """modules.json and the module configs of the classic layout, which every sentence-transformers version reads."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"}]
    if embedding.get("normalize"):
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
        (directory / NORMALIZE_DIR).mkdir()
    wanted = {v: k for k, v in _POOL_NAMES.items()}[embedding["pool"]]
    pooling = {"word_embedding_dimension": hidden_size,
               **{flag: name == wanted for flag, name in _LEGACY_FLAGS.items()}, "include_prompt": True}
    (directory / POOLING_DIR).mkdir()
    _write_json(directory / POOLING_DIR / "config.json", pooling)
    _write_json(directory / MODULES, modules)
    sentence_config: dict = {"do_lower_case": False}
    if embedding.get("max_seq_length"):
        sentence_config["max_seq_length"] = embedding["max_seq_length"]
    _write_json(directory / SENTENCE_BERT_CONFIG, sentence_config)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
