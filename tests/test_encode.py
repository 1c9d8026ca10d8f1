"""`ptm tokenize encode` end to end on real data, and the library function behind it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from itertools import chain, islice
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli_err as ptm
from conftest import shared_file

from ptmcli.commands.tokenize_encode import parse_size
from ptmcli.data import encode_workers
from ptmcli.data.encode import encode_to_shards, merge_rank_manifests
from ptmcli.data.sentences import split_sentences
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError
from ptmcli.textio.inputs import iter_documents, iter_texts
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Small slices of the real data sets: Wikipedia (WikiExtractor), WikiText-2, ChnSentiCorp."""
    directory = tmp_path_factory.mktemp("data")
    with open(shared_file("enwiki-sample/enwiki_sample.txt"), encoding="utf-8") as file:
        lines = list(islice(file, 3000))
    end = max(i for i, line in enumerate(lines) if line.startswith("</doc>"))
    (directory / "wiki.txt").write_text("".join(lines[: end + 1]), encoding="utf-8")
    with open(shared_file("wikitext-2-raw/wiki.valid.raw"), encoding="utf-8") as file:
        (directory / "wikitext.txt").write_text("".join(islice(file, 600)), encoding="utf-8")
    with open(shared_file("chinese/train.tsv"), encoding="utf-8") as file:
        (directory / "reviews.tsv").write_text("".join(islice(file, 400)), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def tokenizer_dir(data, tmp_path_factory) -> Path:
    texts = chain(islice(iter_texts([str(data / "wiki.txt")]), 1500),
                  iter_texts([str(data / "reviews.tsv")], tsv_column="text_a"))
    directory = tmp_path_factory.mktemp("tok") / "wordpiece"
    train_tokenizer(texts, "wordpiece", 3000).save(directory)
    return directory




def expected_rows(tokenizer: PtmTokenizer, inputs: list[str], split: bool = True, **read) -> list[dict]:
    """What the shards should hold, computed the slow obvious way."""
    rows = []
    for document in iter_documents(inputs, **read):
        if split:
            sentences = [s for p in document.paragraphs for s in split_sentences(p)]
        else:
            sentences = [p.strip() for p in document.paragraphs if p.strip()]
        encoded = [pair for pair in tokenizer.encode_batch_words(sentences) if pair[0]]
        if encoded:
            rows.append({
                "input_ids": [t for ids, _ in encoded for t in ids],
                "sentence_ends": np.cumsum([len(ids) for ids, _ in encoded]).tolist(),
                "word_starts": [f for _, flags in encoded for f in flags],
            })
    return rows


def assert_rows(dataset: ShardDataset, rows: list[dict], word_starts: bool = True) -> None:
    assert len(dataset) == len(rows)
    for i, row in enumerate(rows):
        got = dataset[i]
        assert got.input_ids.tolist() == row["input_ids"], i
        assert got.sentence_ends.tolist() == row["sentence_ends"], i
        if word_starts:
            assert got.word_starts.tolist() == row["word_starts"], i
        else:
            assert got.word_starts is None


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_wikipedia_end_to_end(data, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    code, err = ptm(capsys, "tokenize", "encode", str(data / "wiki.txt"), "--tokenizer", str(tokenizer_dir),
                    "-o", str(out), "--workers", "2", "--shard-size", "128KB")
    assert code == 0, err
    assert err.startswith("ptm: encoded ") and "MB/s" in err and err.count("\n") == 1  # no bar: not a tty
    tokenizer = PtmTokenizer.load(tokenizer_dir)
    dataset = ShardDataset.open(out, verify=True)
    assert_rows(dataset, expected_rows(tokenizer, [str(data / "wiki.txt")]))
    manifest = dataset.manifest
    assert len(manifest["shards"]) > 1 and all(s["bytes"] <= 128_000 for s in manifest["shards"][:-1])
    assert manifest["tokenizer"] == {"sha256": tokenizer.sha256, "vocab_size": 3000, "kind": "wordpiece", "path": str(Path(tokenizer_dir).resolve())}
    assert manifest["source"] == [str(data / "wiki.txt")]
    assert manifest["input"]["bytes"] == os.path.getsize(data / "wiki.txt")
    assert manifest["created_by"].startswith("ptm ")
    dataset.check_tokenizer(tokenizer)
    # Several sentences per article, all inside the row.
    assert np.mean([len(dataset[i].sentence_ends) for i in range(len(dataset))]) > 10
    assert no_leftovers(tmp_path)


def test_worker_count_does_not_change_the_output(data, tokenizer_dir, tmp_path):
    # WordPiece takes the whole-document shortcut; the end-to-end tests compare it with per-sentence encoding.
    assert encode_workers.wordpiece_shortcut(PtmTokenizer.load(tokenizer_dir)) is not None
    hashes = []
    for workers in (1, 2):
        manifest = encode_to_shards([str(data / "wiki.txt")], str(tokenizer_dir), str(tmp_path / f"w{workers}"),
                                    workers=workers, progress=False)
        hashes.append([s["sha256"] for s in manifest["shards"]])
    assert hashes[0] == hashes[1]


def test_wikitext_gzip_and_no_sentence_splitting(data, tokenizer_dir, tmp_path, capsys):
    gz = tmp_path / "wikitext.txt.gz"
    gz.write_bytes(gzip.compress((data / "wikitext.txt").read_bytes()))
    out = tmp_path / "shards"
    code, err = ptm(capsys, "tokenize", "encode", str(gz), "-t", str(tokenizer_dir), "-o", str(out),
                    "--no-split-sentences", "--no-word-starts", "--workers", "1")
    assert code == 0, err
    dataset = ShardDataset.open(out)
    rows = expected_rows(PtmTokenizer.load(tokenizer_dir), [str(data / "wikitext.txt")], split=False)
    assert_rows(dataset, rows, word_starts=False)
    assert dataset.manifest["options"]["split_sentences"] is False


def test_chinese_tsv_column(data, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    code, err = ptm(capsys, "tokenize", "encode", str(data / "reviews.tsv"), "-t", str(tokenizer_dir), "-o", str(out),
                    "--tsv-column", "text_a")
    assert code == 0, err
    dataset = ShardDataset.open(out)
    rows = expected_rows(PtmTokenizer.load(tokenizer_dir), [str(data / "reviews.tsv")], tsv_column="text_a")
    assert_rows(dataset, rows)
    assert len(dataset) == 399
    assert sum(len(dataset[i].sentence_ends) > 1 for i in range(len(dataset))) > 100  # split at 。！？


def test_stdin(data, tokenizer_dir, tmp_path):
    out = tmp_path / "shards"
    result = subprocess.run(
        [sys.executable, "-m", "ptmcli", "tokenize", "encode", "-", "-t", str(tokenizer_dir), "-o", str(out),
         "--workers", "2"],
        input=(data / "wikitext.txt").read_bytes(), capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    dataset = ShardDataset.open(out)
    assert dataset.manifest["source"] == ["-"]
    assert_rows(dataset, expected_rows(PtmTokenizer.load(tokenizer_dir), [str(data / "wikitext.txt")]))


def test_existing_output_is_refused_and_replaced_only_on_request(data, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["tokenize", "encode", str(data / "wikitext.txt"), "-t", str(tokenizer_dir), "-o", str(out), "--workers", "1"]
    assert ptm(capsys, *args)[0] == 0
    before = json.loads((out / "manifest.json").read_text())
    code, err = ptm(capsys, *args, "--no-word-starts")
    assert code == 2 and "already exists; pass --overwrite" in err
    assert json.loads((out / "manifest.json").read_text()) == before
    assert ptm(capsys, *args, "--no-word-starts", "--overwrite")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["options"]["word_starts"] is False
    assert no_leftovers(tmp_path)
    other = tmp_path / "not-shards"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    code, err = ptm(capsys, "tokenize", "encode", str(data / "wikitext.txt"), "-t", str(tokenizer_dir),
                    "-o", str(other), "--overwrite")
    assert code == 2 and "not a ptm shard directory" in err
    assert (other / "precious.txt").read_text() == "keep me"


def test_bad_input_midway_leaves_nothing(data, tokenizer_dir, tmp_path, capsys):
    good = (data / "wiki.txt").read_bytes()
    bad = tmp_path / "broken.txt"
    tail = b"<doc id=\"2\" url=\"u\" title=\"t\">\nTitle\nFine text after it.\n</doc>\n"
    bad.write_bytes(good + b"<doc id=\"1\" url=\"u\" title=\"t\">\nTitle\nbroken \xff\xfe text\n</doc>\n" + tail)
    out = tmp_path / "shards"
    line = good.count(b"\n") + 3
    code, err = ptm(capsys, "tokenize", "encode", str(bad), "-t", str(tokenizer_dir), "-o", str(out),
                    "--workers", "2", "--shard-size", "64KB")
    assert code == 2
    assert f"{bad}:{line}: invalid UTF-8" in err and err.count("\n") == 1
    assert not out.exists() and no_leftovers(tmp_path)
    # --errors skip goes on past the line
    code, err = ptm(capsys, "tokenize", "encode", str(bad), "-t", str(tokenizer_dir), "-o", str(out), "--errors", "skip")
    assert code == 0 and "1 bad lines skipped" in err


def test_interrupt_while_workers_run_leaves_nothing(data, tokenizer_dir, tmp_path, monkeypatch):
    from ptmcli.data.shard_writer import ShardWriter

    real_add = ShardWriter.add
    calls = []

    def interrupted_add(self, chunk):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_add(self, chunk)

    monkeypatch.setattr(ShardWriter, "add", interrupted_add)
    with pytest.raises(KeyboardInterrupt):
        encode_to_shards([str(data / "wiki.txt")], str(tokenizer_dir), str(tmp_path / "shards"), workers=2,
                         progress=False)
    assert not (tmp_path / "shards").exists() and no_leftovers(tmp_path)


def test_empty_documents_are_dropped_and_counted(tokenizer_dir, tmp_path):
    lines = [{"text": "A real document. It has two sentences."}, {"text": "\u200b\u200b"},
             {"text": "Another one."}, {"text": "\x01\x02"}, {"text": "Written [SEP] literally. Fine."}]
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    manifest = encode_to_shards([str(source)], str(tokenizer_dir), str(tmp_path / "shards"), workers=1)
    assert manifest["rows"] == 3 and manifest["input"]["empty_documents"] == 2
    assert manifest["input"]["documents"] == 5
    dataset = ShardDataset.open(tmp_path / "shards")
    assert [len(dataset[i].sentence_ends) for i in range(3)] == [2, 1, 2]
    assert_rows(dataset, expected_rows(PtmTokenizer.load(tokenizer_dir), [str(source)]))


@pytest.mark.parametrize("left", ["all", "all but 1", "1", "none"])
def test_sentence_markers_never_clash_with_the_text(tokenizer_dir, left):
    """Whatever markers the WordPiece shortcut must skip because the text holds them, the rows are the same."""
    tokenizer = PtmTokenizer.load(tokenizer_dir)
    shortcut = encode_workers.wordpiece_shortcut(tokenizer)
    markers = [marker for marker, _ in shortcut.markers]
    assert markers[0] == "~" and markers[-1] in ("[SEP]", "[CLS]", "[PAD]")
    taken = {"all": 0, "all but 1": 1, "1": len(markers) - 1, "none": len(markers)}[left]
    present = " ".join(markers[:taken])
    documents = [[f"First sentence {present} here. Second one! Third?", "Next paragraph. Ends here."],
                 [f"Short {present}. And more."], ["\u200b"]]
    texts_seen = []
    encode_batch = tokenizer.encode_batch
    tokenizer.encode_batch = lambda texts: texts_seen.extend(texts) or encode_batch(texts)
    chunk = encode_workers.encode_documents(tokenizer, documents, True, True, shortcut)
    # paragraph by paragraph with a free marker after each sentence, or sentence by sentence when none is free
    assert len(texts_seen) == (4 if left != "none" else 8)
    if left != "none":
        assert texts_seen[0].count(f" {markers[taken]} ") == 3
    reference = encode_workers.encode_documents(tokenizer, documents, True, True, None)  # one sentence at a time
    for name in ("token_ids", "doc_lengths", "sentence_ends", "doc_sentences", "word_starts"):
        np.testing.assert_array_equal(getattr(chunk, name), getattr(reference, name))
    assert chunk.empty_documents == 1 and chunk.doc_sentences.tolist() == [5, 2]


def test_ranks_encode_their_share_and_rank_zero_merges(data, tokenizer_dir, tmp_path, monkeypatch):
    # Two files, two ranks: one file each; one file, two ranks: every other document.
    text = (data / "wiki.txt").read_text(encoding="utf-8")
    cut = text.index("</doc>", len(text) // 2) + len("</doc>\n")
    parts = [tmp_path / "a.txt", tmp_path / "b.txt"]
    parts[0].write_text(text[:cut], encoding="utf-8")
    parts[1].write_text(text[cut:], encoding="utf-8")
    single = encode_to_shards([str(p) for p in parts], str(tokenizer_dir), str(tmp_path / "single"), workers=1)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for inputs, name in (([str(p) for p in parts], "by-file"), ([str(data / "wiki.txt")], "by-document")):
        out = tmp_path / name
        partial = encode_to_shards(inputs, str(tokenizer_dir), str(out), workers=1, rank=1, world_size=2)
        assert not out.exists() and all(s["file"].startswith("part-r1-") for s in partial["shards"])
        merged = encode_to_shards(inputs, str(tokenizer_dir), str(out), workers=1, rank=0, world_size=2)
        dataset = ShardDataset.open(out, verify=True)
        assert merged["rows"] == len(dataset) == single["rows"]
        assert merged["tokens"] == dataset.num_tokens == single["tokens"]
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + sorted(s["file"] for s in merged["shards"])
        assert {s["file"][:8] for s in merged["shards"]} == {"part-r0-", "part-r1-"}
    assert no_leftovers(tmp_path)


def test_a_failed_rank_stops_the_merge(data, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    out = tmp_path / "shards"
    with pytest.raises(PtmError):
        encode_to_shards([str(tmp_path / "missing.txt"), str(data / "wiki.txt")], str(tokenizer_dir), str(out),
                         rank=1, world_size=2)
    staging = Path(f"{out}.tmp-dist")
    staging.mkdir(exist_ok=True)
    (staging / "rank-1.failed").touch()
    with pytest.raises(PtmError, match="rank 1 failed"):
        merge_rank_manifests(str(out), 2, poll_seconds=0.01, timeout=5)
    assert not out.exists() and no_leftovers(tmp_path)


def test_a_rank_that_dies_silently_stops_the_merge(tmp_path, monkeypatch):
    # A rank killed outright writes neither its manifest nor a failure marker.
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    out = tmp_path / "shards"
    staging = Path(f"{out}.tmp-dist")
    staging.mkdir()
    (staging / "rank-0.json").write_text("{}", encoding="utf-8")
    with pytest.raises(PtmError, match=r"ranks 1, 2 wrote no partial manifest and showed no progress for 0.2 s"):
        merge_rank_manifests(str(out), 3, poll_seconds=0.01, timeout=0.2)
    assert not out.exists() and no_leftovers(tmp_path)


def test_the_merge_deadline_counts_from_the_last_sign_of_progress(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    out = tmp_path / "shards"
    staging = Path(f"{out}.tmp-dist")
    staging.mkdir()
    (staging / "rank-0.json").write_text("{}", encoding="utf-8")

    def slow_rank() -> None:
        # A rank still writing its shard, for longer than the deadline, that then fails.
        with open(staging / "part-r1-00000.arrow", "wb") as shard:
            for _ in range(12):
                shard.write(b"x" * 100)
                shard.flush()
                time.sleep(0.05)
        (staging / "rank-1.failed").touch()

    writer = threading.Thread(target=slow_rank)
    started = time.monotonic()
    writer.start()
    try:
        with pytest.raises(PtmError, match="rank 1 failed"):
            merge_rank_manifests(str(out), 2, poll_seconds=0.01, timeout=0.3)
    finally:
        writer.join()
    assert time.monotonic() - started >= 0.55
    assert not out.exists() and no_leftovers(tmp_path)


def test_other_tokenizer_kinds_and_spawned_workers(data, tmp_path, monkeypatch):
    """Byte-level BPE takes the encode_batch_words path; workers are spawned where fork is not used."""
    tokenizer = train_tokenizer(islice(iter_texts([str(data / "wiki.txt")]), 400), "bytelevel", 600)
    tokenizer.save(tmp_path / "tok")
    assert encode_workers.wordpiece_shortcut(tokenizer) is None
    monkeypatch.setattr(encode_workers, "START_METHOD", "spawn")
    encode_to_shards([str(data / "wikitext.txt")], str(tmp_path / "tok"), str(tmp_path / "shards"), workers=2)
    assert_rows(ShardDataset.open(tmp_path / "shards"), expected_rows(tokenizer, [str(data / "wikitext.txt")]))


def test_sizes_and_flags(tokenizer_dir, tmp_path, capsys):
    assert parse_size("256MB") == 256_000_000 and parse_size("1GB") == 10**9
    assert parse_size("512MiB") == 512 << 20 and parse_size("1.5k") == 1500 and parse_size("4096") == 4096
    for bad in ("lots", "12XB", "-1MB"):
        with pytest.raises(PtmError, match="--shard-size"):
            parse_size(bad)
    code, err = ptm(capsys, "tokenize", "encode", "nothing-here.txt", "-t", str(tokenizer_dir), "-o", str(tmp_path / "o"))
    assert code == 2 and "nothing-here.txt does not exist" in err
    code, err = ptm(capsys, "tokenize", "encode", "x", "-t", str(tokenizer_dir), "-o", str(tmp_path / "o"),
                    "--errors", "ignore")
    assert code == 2 and "--errors 'ignore'" in err
    code, err = ptm(capsys, "tokenize", "encode", "--help")
    assert code == 0


def test_one_sentence_per_line_text_is_named_and_document_boundary_splits_it(tokenizer_dir, tmp_path, capsys):
    lines = [f"Satz Nummer {i} steht allein auf seiner Zeile." for i in range(40)]
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err = ptm(capsys, "tokenize", "encode", source, "--tokenizer", tokenizer_dir, "-o", tmp_path / "one", "-j", "1")
    assert code == 0, err
    assert "has no blank line, so its 40 lines became one document" in err and "--document-boundary line" in err
    assert len(ShardDataset.open(tmp_path / "one")) == 1
    code, err = ptm(capsys, "pretrain", "--data", tmp_path / "one", "-o", tmp_path / "run", "--preset", "bert-tiny",
                    "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--seq-len", "32",
                    "--batch-size", "2", "--max-steps", "1", "--no-progress")
    assert code == 0 and "no held-out documents" in err, err

    code, err = ptm(capsys, "tokenize", "encode", source, "--tokenizer", tokenizer_dir, "-o", tmp_path / "lines", "-j", "1",
                    "--document-boundary", "line")
    assert code == 0 and "warning" not in err, err
    per_line = ShardDataset.open(tmp_path / "lines")
    assert len(per_line) == 40
    assert per_line.manifest["options"]["document_boundary"] == "line"
    # Blank-separated text keeps its documents whatever the flag's default, and "none" makes one of a file.
    source.write_text("A first document.\nIts second line.\n\nA second document.\n", encoding="utf-8")
    assert ptm(capsys, "tokenize", "encode", source, "--tokenizer", tokenizer_dir, "-o", tmp_path / "blank", "-j", "1")[0] == 0
    assert len(ShardDataset.open(tmp_path / "blank")) == 2
    assert ptm(capsys, "tokenize", "encode", source, "--tokenizer", tokenizer_dir, "-o", tmp_path / "none", "-j", "1",
               "--document-boundary", "none")[0] == 0
    assert len(ShardDataset.open(tmp_path / "none")) == 1
