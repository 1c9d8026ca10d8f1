"""The sample corpus bundled with ptm, turned into a tokenizer and shards on first use.

Both are cached (keyed by the corpus' hash and the tokenizer settings), so
only the first ``ptm pretrain`` without ``--data`` pays for them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.runtime.cache import cache_root

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "enwiki_excerpt.txt"
SAMPLE_VOCAB = 8000

# Without --data, settings the user did not give are these: a run of a couple of
# minutes on a laptop CPU whose loss falls visibly (a demonstration, not a model).
SAMPLE_DEFAULTS = {"preset": "bert-tiny", "batch_size": 16, "max_steps": 150, "lr": 1e-3, "warmup_steps": 15, "eval_every": 75, "log_every": 10}


def sample_data() -> tuple[Path, Path]:
    """(shards dir, tokenizer dir) for the bundled sample, building them if needed.

    Safe to call from several processes at once (torchrun ranks): each builder
    works in a private directory beside the cache entry and publishes it with
    one rename; a builder that loses the race drops its copy and uses the
    winner's, so every caller gets the same, complete directory.
    """
    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()[:16]
    # "-v2": entries are published whole; older ptm built in place and could leave half-built ones.
    root = cache_root() / "sample" / f"{digest}-wordpiece{SAMPLE_VOCAB}-v2"
    if not _complete(root):
        _build(root)
    return root / "shards", root / "tokenizer"


def _complete(root: Path) -> bool:
    return (root / "tokenizer" / "tokenizer_config.json").is_file() and (root / "shards" / "manifest.json").is_file()


def _build(root: Path) -> None:
    from ptmcli.data.encode import encode_to_shards
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    root.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would stick to the published entry.
    work = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    work.mkdir()
    try:
        print(f"ptm: training a {SAMPLE_VOCAB}-token WordPiece tokenizer on the bundled sample (cached in {root})", file=sys.stderr)
        tokenizer = train_tokenizer(iter_texts([str(SAMPLE)]), "wordpiece", SAMPLE_VOCAB, min_frequency=2)
        tokenizer.save(work / "tokenizer")
        print("ptm: encoding the bundled sample into shards", file=sys.stderr)
        encode_to_shards([str(SAMPLE)], str(work / "tokenizer"), str(work / "shards"),
                         workers=min(2, os.cpu_count() or 1), progress=False)
        _point_manifest_at(work / "shards" / "manifest.json", root / "tokenizer")
        try:
            os.rename(work, root)
        except OSError:
            # Another builder published first (rename does not replace a non-empty directory).
            if not _complete(root):
                raise PtmError(f"the sample cache entry {root} is incomplete; delete it and run again") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _point_manifest_at(manifest_path: Path, tokenizer_dir: Path) -> None:
    """Record where the tokenizer will live once published, not the private build directory."""
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["tokenizer"]["path"] = str(tokenizer_dir)
    temp = manifest_path.with_name(manifest_path.name + ".tmp")
    temp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, manifest_path)
