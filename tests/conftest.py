"""Shared fixtures: the real data sets beside the checkout, skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_file(relative: str) -> Path:
    """Path to a file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (expected ../shared/data beside the checkout)")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent")
    return SHARED_DATA


def sample_corpus(root: Path, articles: int, vocab_size: int, tokenizer_lines: int) -> tuple[Path, Path]:
    """Shards and a WordPiece tokenizer for the first ``articles`` of ptm's bundled Wikipedia sample.

    The tokenizer learns from the first ``tokenizer_lines`` texts. Returns ``(shards, tokenizer)``.
    """
    from itertools import islice

    from ptmcli.data.encode import encode_to_shards
    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    lines, docs = [], 0
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            docs += line.startswith("</doc>")
            if docs == articles:
                break
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    tok = root / "tok"
    train_tokenizer(islice(iter_texts([str(root / "wiki.txt")]), tokenizer_lines), "wordpiece", vocab_size).save(tok)
    encode_to_shards([str(root / "wiki.txt")], str(tok), str(root / "shards"), workers=1, progress=False)
    return root / "shards", tok


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the ptm command line in this process: (exit status, stdout, stderr)."""
    from ptmcli.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli_err(capsys, *args) -> tuple[int, str]:
    """Run the ptm command line in this process: (exit status, stderr)."""
    code, _out, err = run_cli(capsys, *args)
    return code, err


SENTIMENT_GOOD = ["good", "great", "fine", "nice", "happy"]
SENTIMENT_BAD = ["bad", "awful", "poor", "sad", "wrong"]


def sentiment_rows(n: int, seed: int, filler: list[str]) -> list[tuple[str, int]]:
    """``n`` learnable (sentence, label) rows: 3-8 filler words with one good (1) or bad (0) word among them."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(filler) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(SENTIMENT_GOOD if label else SENTIMENT_BAD))
        rows.append((" ".join(words), label))
    return rows


def save_pretrained(root: Path, name: str, model, arch: str, tokenizer, tok_dir: Path) -> Path:
    """``model`` (a pretraining model of ``arch``, random or trained) saved as a ptm MLM checkpoint ``root/name``."""
    from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving

    config = {"arch": arch, "model": model.config.to_dict(), "objective": "mlm", "task": None,
              "tokenizer": {"sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size}}
    return save_checkpoint(root / name, config=config, weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=tok_dir)
