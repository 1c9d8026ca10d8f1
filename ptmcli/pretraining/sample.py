"""The sample corpus bundled with ptm, turned into a tokenizer and shards on first use.

Both are cached (keyed by the corpus' hash and the tokenizer settings), so
only the first ``ptm pretrain`` without ``--data`` pays for them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "enwiki_excerpt.txt"
SAMPLE_VOCAB = 8000

# Without --data, settings the user did not give are these: a run of a couple of
# minutes on a laptop CPU whose loss falls visibly (a demonstration, not a model).
SAMPLE_PRESETS = {"bert": "bert-tiny", "gpt": "gpt-tiny", "elmo": "elmo-small"}
SAMPLE_DEFAULTS = {"preset": "bert-tiny", "batch_size": 16, "max_steps": 150, "lr": 1e-3, "warmup_steps": 15, "eval_every": 75, "log_every": 10}


def cache_root() -> Path:
    base = os.environ.get("PTM_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ptm")
    return Path(base)


def sample_data() -> tuple[Path, Path]:
    """(shards dir, tokenizer dir) for the bundled sample, building them if needed."""
    from ptmcli.data.encode import encode_to_shards
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()[:16]
    root = cache_root() / "sample" / f"{digest}-wordpiece{SAMPLE_VOCAB}"
    tok_dir, shard_dir = root / "tokenizer", root / "shards"
    if not (tok_dir / "tokenizer_config.json").exists():
        print(f"ptm: training a {SAMPLE_VOCAB}-token WordPiece tokenizer on the bundled sample (cached in {root})", file=sys.stderr)
        tokenizer = train_tokenizer(iter_texts([str(SAMPLE)]), "wordpiece", SAMPLE_VOCAB, min_frequency=2)
        root.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tok_dir, overwrite=True)  # a stale half-built cache entry is replaced
    if not (shard_dir / "manifest.json").exists():
        print("ptm: encoding the bundled sample into shards", file=sys.stderr)
        encode_to_shards([str(SAMPLE)], tok_dir, shard_dir, workers=min(2, os.cpu_count() or 1), overwrite=True, progress=False)
    return shard_dir, tok_dir
