"""`ptm tokenize train` and `ptm tokenize show` from the command line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from conftest import shared_file
from typer.testing import CliRunner

from ptmcli.cli import tokenize as tokenize_cli
from ptmcli.cli.main import app
from ptmcli.errors import PtmError
from ptmcli.textio import inputs
from ptmcli.tokenization import specials
from ptmcli.tokenization.tokenizer import PtmTokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def wiki_slice(tmp_path_factory) -> Path:
    """The first 2000 lines of the Wikipedia sample, WikiExtractor format as it comes."""
    source = shared_file("enwiki-sample/enwiki_sample.txt")
    path = tmp_path_factory.mktemp("cli") / "wiki.txt"
    with open(source, encoding="utf-8") as f:
        path.write_text("".join(islice(f, 2000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_dir(wiki_slice, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tok"
    result = runner.invoke(app, ["tokenize", "train", str(wiki_slice), "--vocab-size", "1200", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained a 1,200-token wordpiece tokenizer" in result.stderr
    return out


def ptm(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptmcli", *args], input=stdin, capture_output=True, timeout=120)


def test_train_writes_a_loadable_directory(trained_dir, wiki_slice):
    assert sorted(p.name for p in trained_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    tokenizer = PtmTokenizer.load(trained_dir)
    assert (tokenizer.kind, tokenizer.vocab_size, tokenizer.lowercase) == ("wordpiece", 1200, True)
    # WikiExtractor markup is not training text: no <doc> pieces were learned.
    assert tokenizer.token_to_id("curid") is None


def test_train_options_reach_the_tokenizer(wiki_slice, tmp_path):
    gz = tmp_path / "wiki.txt.gz"
    gz.write_bytes(gzip.compress(wiki_slice.read_bytes()))
    out = tmp_path / "bl"
    result = runner.invoke(app, ["tokenize", "train", str(gz), "-m", "bytelevel", "--vocab-size", "700",
                                 "--special-tokens", "roberta", "--lowercase", "--max-length", "256", "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (config["kind"], config["lowercase"], config["model_max_length"], config["special_set"]) == (
        "bytelevel", True, 256, "roberta")
    assert PtmTokenizer.load(out).mask_id == 4


def test_train_from_stdin_jsonl(tmp_path):
    copa = shared_file("copa/train.jsonl")
    out = tmp_path / "sp"
    result = runner.invoke(app, ["tokenize", "train", "-", "-m", "sp-bpe", "--vocab-size", "500", "--text-field",
                                 "premise", "-o", str(out)], input=copa.read_bytes())
    assert result.exit_code == 0, result.output
    assert (out / "tokenizer.model").is_file() and "400 documents" in result.stderr


def test_train_from_tsv_column(tmp_path):
    sst = shared_file("sst2/dev.tsv")
    out = tmp_path / "tsv"
    result = runner.invoke(app, ["tokenize", "train", str(sst), "--tsv-column", "sentence", "--vocab-size", "800",
                                 "-m", "bpe", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "872 documents" in result.stderr


def test_vocab_flag_builds_without_training(trained_dir, tmp_path):
    out = tmp_path / "from_vocab"
    result = runner.invoke(app, ["tokenize", "train", "--vocab", str(trained_dir / "vocab.txt"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = ["The history of anarchism is long."]
    assert PtmTokenizer.load(out).encode_batch(text) == PtmTokenizer.load(trained_dir).encode_batch(text)
    result = runner.invoke(app, ["tokenize", "train", "x.txt", "--vocab", str(trained_dir / "vocab.txt"),
                                 "-o", str(tmp_path / "other")])
    assert isinstance(result.exception, PtmError) and "give no INPUT files" in str(result.exception)


def test_errors_mode_is_passed_to_the_reader(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a sentence here\nanother one\n\xff\xfe\nlast sentence\n")
    result = runner.invoke(app, ["tokenize", "train", str(bad), "--vocab-size", "60", "-o", str(tmp_path / "o1")])
    assert isinstance(result.exception, PtmError) and f"{bad}:3: invalid UTF-8" in str(result.exception)
    assert not (tmp_path / "o1").exists()
    result = runner.invoke(app, ["tokenize", "train", str(bad), "--vocab-size", "60", "--errors", "skip",
                                 "-o", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert "1 lines could not be read and were skipped" in result.stderr


def test_show_formats(trained_dir):
    tokenizer = PtmTokenizer.load(trained_dir)
    lines = ["Anarchism is a political philosophy.", "", "中文 text"]
    expected = tokenizer.encode_batch(lines)
    stdin = "\n".join(lines) + "\n"
    result = runner.invoke(app, ["tokenize", "show", "-t", str(trained_dir), "--ids"], input=stdin)
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n")[:-1] == [" ".join(map(str, row)) for row in expected]
    result = runner.invoke(app, ["tokenize", "show", "-t", str(trained_dir), "--tokens", *lines])
    assert result.stdout.split("\n")[:-1] == [" ".join(tokenizer.convert_ids_to_tokens(r)) for r in expected]
    result = runner.invoke(app, ["tokenize", "show", "-t", str(trained_dir), "--json"], input=stdin)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ids"] for r in records] == expected and [r["text"] for r in records] == lines
    result = runner.invoke(app, ["tokenize", "show", "-t", str(trained_dir), lines[0]])
    pieces, ids = result.stdout.rstrip("\n").split("\t")
    assert ids.split() == [str(i) for i in expected[0]] and len(pieces.split()) == len(expected[0])
    result = runner.invoke(app, ["tokenize", "show", "-t", str(trained_dir), "--ids", "--json", "x"])
    assert isinstance(result.exception, PtmError) and "choose one of" in str(result.exception)


def test_help_has_examples_and_choices_match_the_library():
    for command in ("train", "show"):
        result = runner.invoke(app, ["tokenize", command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.stdout and "ptm tokenize " + command in result.stdout
    assert tuple(m.value for m in tokenize_cli.Model) == specials.MODELS
    assert tuple(s.value for s in tokenize_cli.SpecialSet) == tuple(specials.SPECIAL_SETS)
    assert tuple(f.value for f in tokenize_cli.InputFormat) == inputs.FORMATS
    assert tuple(e.value for e in tokenize_cli.ErrorMode) == inputs.ERROR_MODES


# -- through the real `ptm` entry point: exit status and stderr (a few, each starts Python) -------


def test_bad_input_exits_2_with_one_line(tmp_path):
    result = ptm("tokenize", "train", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out"))
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.strip().splitlines() == [f"ptm: error: input file {tmp_path / 'missing.txt'} does not exist"]
    assert not (tmp_path / "out").exists()
    result = ptm("tokenize", "show", "--tokenizer", str(tmp_path), "hello")
    assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
    assert result.stderr.decode().strip() == f"ptm: error: {tmp_path} is not a tokenizer directory: it has neither tokenizer.json nor tokenizer.model"


def test_existing_output_is_refused_and_left_untouched(wiki_slice, tmp_path):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = ptm("tokenize", "train", str(wiki_slice), "--vocab-size", "300", "-o", str(out))
    assert result.returncode == 2 and "already exists; pass --overwrite" in result.stderr.decode()
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    result = ptm("tokenize", "train", "-", "--vocab-size", "300", "-o", str(out), "--overwrite",
                 stdin=gzip.compress(wiki_slice.read_bytes()))
    assert result.returncode == 0, result.stderr.decode()
    assert not (out / "notes.txt").exists() and PtmTokenizer.load(out).vocab_size == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_binary_input_exits_2(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    result = ptm("tokenize", "train", str(binary), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [f"ptm: error: {binary} looks binary (NUL bytes in its "
                                                           "first 2560 bytes); ptm reads UTF-8 text, optionally gzip-compressed"]


def test_limit_alphabet_keeps_every_chinese_character_when_raised(tmp_path):
    # 1,500 distinct ideographs, each in a few "reviews": more than the default alphabet of 1,000.
    chars = [chr(0x4E00 + i) for i in range(1500)]
    lines = ["".join(chars[(j * 7 + k) % 1500] for k in range(30)) for j in range(1000)]
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def unknown_rate(extra: list[str]) -> float:
        out = tmp_path / f"tok{len(extra)}"
        result = runner.invoke(app, ["tokenize", "train", str(corpus), "--vocab-size", "3000", "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        tok = PtmTokenizer.load(out)
        ids = [i for row in tok.encode_batch(lines) for i in row]
        return sum(i == tok.unk_id for i in ids) / len(ids)

    assert unknown_rate([]) > 0.1
    assert unknown_rate(["--limit-alphabet", "2000"]) == 0.0
    result = runner.invoke(app, ["tokenize", "train", str(corpus), "-o", str(tmp_path / "bad"), "--limit-alphabet", "0"])
    assert isinstance(result.exception, PtmError) and "--limit-alphabet" in str(result.exception)


@pytest.mark.parametrize("model, vocab_size", [("wordpiece", 500), ("bpe", 300)])
def test_training_twice_gives_the_same_file(model, vocab_size, tmp_path):
    # Each run is its own process, so the trainer's hash maps are seeded differently each time;
    # before the word-internal pieces were fixed up front, three runs gave three different files.
    import ptmcli.sample

    text = Path(ptmcli.sample.__file__).parent / "enwiki_excerpt.txt"
    files = []
    for run in range(3):
        out = tmp_path / f"run{run}"
        done = ptm("tokenize", "train", str(text), "-m", model, "--vocab-size", str(vocab_size), "-o", str(out))
        assert done.returncode == 0, done.stderr.decode()
        files.append((out / "tokenizer.json").read_bytes())
    assert files[0] == files[1] == files[2]


def test_a_small_alphabet_limit_is_filled_in_frequency_order(tmp_path):
    # 'a' x5, 'b' x3, 'c' and 'd' x2 each, 'e' x1: a limit of 3 keeps a, b and the first of the tied c/d.
    path = tmp_path / "t.txt"
    path.write_text("aaaaa bbb cc dd e\n", encoding="utf-8")
    out = tmp_path / "tok"
    done = ptm("tokenize", "train", str(path), "-m", "wordpiece", "--vocab-size", "40", "--limit-alphabet", "3",
               "--min-frequency", "1", "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"a", "b", "c"} <= set(vocab) and not {"d", "e", "##d", "##e"} & set(vocab)
