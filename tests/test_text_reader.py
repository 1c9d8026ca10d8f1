"""The one text reader (ptmcli.textio.lines) under corpora, extract-features input and labeled task data."""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from pathlib import Path

import pytest

from ptmcli.errors import PtmError
from ptmcli.features.labeled_input import iter_labeled_records
from ptmcli.features.readers import iter_records
from ptmcli.tasks.labeled_shards import prepare_labeled
from ptmcli.tasks.readers import open_labeled, read_labeled, stream_labeled
from ptmcli.textio.inputs import ReadStats, iter_documents
from ptmcli.textio.lines import TextLines
from ptmcli.tokenization.train import train_tokenizer

BOM = b"\xef\xbb\xbf"
SST = "sentence\tlabel\na charming and often affecting journey .\t1\nboilerplate clichés from start to finish .\t0\n"


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


class FakeStdin:
    def __init__(self, data: bytes | io.RawIOBase) -> None:
        self.buffer = io.BytesIO(data) if isinstance(data, bytes) else data


class Endless(io.RawIOBase):
    """A header, then rows without end; reading past ``limit`` bytes fails the test."""

    def __init__(self, header: bytes, row: bytes, limit: int) -> None:
        self.header, self.row, self.limit, self.given = header, row, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = len(buffer)
        if self.given + count > self.limit:
            raise AssertionError(f"read past {self.limit} bytes: the reader is not streaming")
        start = self.given
        if start < len(self.header):
            block = self.header[start:] + self.row * (count // len(self.row) + 1)
        else:
            offset = (start - len(self.header)) % len(self.row)
            block = self.row[offset:] + self.row * (count // len(self.row) + 1)
        buffer[:count] = block[:count]
        self.given += count
        return count


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# -- the reader ---------------------------------------------------------------------------------


def test_lines_are_numbered_decoded_and_stripped(tmp_path):
    path = write(tmp_path / "a.txt", BOM + b"first\r\nsecond\n\nlast")
    assert list(TextLines(path)) == [(1, "first"), (2, "second"), (3, ""), (4, "last")]
    assert list(TextLines(path).numbered(keep_endings=True)) == [(1, "first\r\n"), (2, "second\n"), (3, "\n"), (4, "last")]
    lines = TextLines(path)
    assert lines.head(5) == BOM + b"fi"  # the content as stored, mark included
    assert lines.peek_nonblank(5) == ["first", "second", "last"] and lines.peek_nonblank(1) == ["first"]
    assert list(lines)[0] == (1, "first")  # looking ahead consumed nothing
    with pytest.raises(RuntimeError, match="read once"):
        list(lines)


def test_gzip_by_magic_bytes_and_suffix(tmp_path):
    data = gzip.compress(b"one\ntwo\n")
    for name in ("x.txt.gz", "x_noext"):
        lines = TextLines(write(tmp_path / name, data))
        assert lines.compressed and list(lines) == [(1, "one"), (2, "two")]
    with pytest.raises(PtmError, match=r"plain\.tsv\.gz has a \.gz name but is not gzip data"):
        TextLines(write(tmp_path / "plain.tsv.gz", "a\n"))
    with pytest.raises(PtmError, match=r"missing\.txt: no such file"):
        TextLines(str(tmp_path / "missing.txt"))
    with pytest.raises(PtmError, match="is a directory"):
        TextLines(str(tmp_path))


def test_byte_counts_are_of_the_stored_file(tmp_path):
    raw = b"".join(f"line {i}\n".encode() for i in range(5000))
    for name, data in (("p.txt", raw), ("c.txt.gz", gzip.compress(raw))):
        stats = ReadStats()
        assert sum(1 for _ in TextLines(write(tmp_path / name, data), stats=stats)) == 5000
        assert (stats.lines, stats.bytes_read) == (5000, len(data))


BAD = b"good line\nstill good\n\ncaf\xe9 latin-1\nafter\n"


def test_bad_utf8_under_each_errors_policy(tmp_path):
    path = write(tmp_path / "bad.txt", BAD)
    with pytest.raises(PtmError, match=rf"^{path}:4: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\)$"):
        list(TextLines(path))
    with pytest.raises(PtmError, match=rf"^{path}:4: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\); use this$"):
        list(TextLines(path, advice="use this"))
    stats = ReadStats()
    assert list(TextLines(path, errors="replace", stats=stats))[3] == (4, "caf\ufffd latin-1")
    assert (stats.replaced_lines, stats.skipped_lines) == (1, 0)
    stats = ReadStats()
    assert [n for n, _ in TextLines(path, errors="skip", stats=stats)] == [1, 2, 3, 5]
    assert (stats.replaced_lines, stats.skipped_lines, stats.lines) == (0, 1, 5)
    with pytest.raises(PtmError, match="unknown --errors mode 'ignore'"):
        TextLines(path, errors="ignore")


@pytest.mark.parametrize("errors", ["strict", "replace", "skip"])
def test_every_caller_names_the_same_bad_line(tmp_path, errors):
    """The corpus reader under each --errors policy, extract-features and labeled data all stop at line 4."""
    corpus = write(tmp_path / "bad.txt", BAD)
    if errors == "strict":
        with pytest.raises(PtmError, match=rf"{corpus}:4: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\); "
                                           "use --errors replace or --errors skip$"):
            list(iter_documents([corpus]))
    else:
        docs = list(iter_documents([corpus], errors=errors))
        assert [d.line for d in docs] == [1, 4] if errors == "replace" else [1, 5]
    with pytest.raises(PtmError, match=rf"^{corpus}:4: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\)$"):
        list(iter_records(corpus))
    labeled = write(tmp_path / "bad.tsv", b"sentence\tlabel\n" + b"".join(line[:-1] + b"\t1\n" for line in BAD.splitlines(True)
                                                                       if line.strip()))
    with pytest.raises(PtmError, match=rf"^{labeled}:4: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\); "
                                       "convert the file to UTF-8$"):
        read_labeled(labeled, "classification")


def test_stdin_plain_and_gzip(monkeypatch):
    for data in (b"one\ntwo\n", gzip.compress(b"one\ntwo\n")):
        monkeypatch.setattr(sys, "stdin", FakeStdin(data))
        lines = TextLines("-")
        assert lines.name == "<stdin>" and list(lines) == [(1, "one"), (2, "two")]
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"caf\xe9\n"))
    with pytest.raises(PtmError, match=r"^<stdin>:1: invalid UTF-8"):
        list(TextLines("-"))


# -- labeled data --------------------------------------------------------------------------------


def test_gzipped_tsv_of_task_data(tmp_path):
    plain = read_labeled(write(tmp_path / "train.tsv", SST), "classification")
    packed = write(tmp_path / "train.tsv.gz", gzip.compress(SST.encode()))
    found = read_labeled(packed, "classification")
    assert found.format == "tsv" and found.examples == plain.examples and [e.line for e in found.examples] == [2, 3]
    # Without a telling name the content decides: gzip by magic bytes, then TSV by its tab.
    found = read_labeled(write(tmp_path / "train", gzip.compress(SST.encode())), "classification")
    assert found.format == "tsv" and found.examples == plain.examples
    assert [e.texts for e in open_labeled(packed, "classification", labels=False)] == [e.texts for e in plain.examples]


def test_finetune_reads_a_gzipped_tsv(tmp_path):
    """prepare_labeled is what ptm finetune reads --train and --dev through."""
    sentences = SST.splitlines()[1:] * 5
    tokenizer = train_tokenizer(iter(line.split("\t")[0] for line in sentences), "wordpiece", 120, min_frequency=1)
    content = ("sentence\tlabel\n" + "\n".join(sentences) + "\n").encode()
    plain = prepare_labeled(write(tmp_path / "train.tsv", content), tokenizer, "classification", "bert", 16, cache=False)
    packed = prepare_labeled(write(tmp_path / "train.tsv.gz", gzip.compress(content)), tokenizer, "classification",
                             "bert", 16, cache=False)
    assert len(packed) == len(plain) == 10 and packed.labels == plain.labels == ["0", "1"]
    assert all((packed[i]["input_ids"] == plain[i]["input_ids"]).all() for i in range(10))
    bad = write(tmp_path / "bad.tsv.gz", gzip.compress(content + b"caf\xe9\t1\n"))
    with pytest.raises(PtmError, match=r"bad\.tsv\.gz:12: invalid UTF-8"):
        prepare_labeled(bad, tokenizer, "classification", "bert", 16, cache=False)


def test_bom_prefixed_jsonl_everywhere(tmp_path, monkeypatch):
    rows = [{"premise": "p1", "hypothesis": "h1", "label": "entailment"}, {"premise": "p2", "hypothesis": "h2", "label": "neutral"}]
    data = BOM + "".join(json.dumps(r) + "\n" for r in rows).encode()
    path = write(tmp_path / "mnli", data)  # no extension: the first line decides
    found = read_labeled(path, "pair-classification")
    assert found.format == "jsonl" and [e.texts for e in found.examples] == [("p1", "h1"), ("p2", "h2")]
    features = list(iter_records(write(tmp_path / "in", BOM + b'{"text": "a", "text_b": "b"}\n')))
    assert [(r.line, r.text_a, r.text_b) for r in features] == [(1, "a", "b")]
    assert [d.paragraphs for d in iter_documents([write(tmp_path / "c", BOM + b'{"text": "x"}\n')])] == [["x"]]
    monkeypatch.setattr(sys, "stdin", FakeStdin(gzip.compress(data)))
    stream = open_labeled("-", "pair-classification")
    assert stream.name == "<stdin>" and stream.format == "jsonl" and [e.label for e in stream] == ["entailment", "neutral"]


def test_labeled_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(SST.encode()))
    found = read_labeled("-", "classification")
    assert found.path == "<stdin>" and [e.label for e in found.examples] == ["1", "0"]
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"sentence\tlabel\ngood\t1\nbad\t0\textra\n"))
    with pytest.raises(PtmError, match=r"^<stdin>:3: the row has 3 tab-separated fields"):
        read_labeled("-", "classification")


@pytest.mark.parametrize("compress", [False, True])
def test_labeled_reader_streams_an_endless_input(monkeypatch, compress):
    """The first examples come out of an input that never ends: the reader never holds the whole file."""
    limit = 8 << 20
    endless = Endless(b"sentence\tlabel\n", b"a fine film\t1\n", limit)
    if compress:
        # gzip of an endless input, compressed as it is asked for.
        class Packed(io.RawIOBase):
            def __init__(self) -> None:
                self.packer, self.pending = zlib.compressobj(0, wbits=31), b""  # stored blocks in a gzip container

            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:
                while len(self.pending) < len(buffer):
                    chunk = bytearray(64 << 10)
                    self.pending += self.packer.compress(chunk[: endless.readinto(chunk)])
                    self.pending += self.packer.flush(zlib.Z_SYNC_FLUSH)
                count = len(buffer)
                buffer[:count], self.pending = self.pending[:count], self.pending[count:]
                return count

        source = Packed()
    else:
        source = endless
    monkeypatch.setattr(sys, "stdin", FakeStdin(source))
    stream = open_labeled("-", "classification")
    first = next(stream.chunks(1000))
    assert len(first) == 1000 and first[-1].line == 1001 and first[0].texts == ("a fine film",)
    assert endless.given < limit


def test_extract_features_task_input_streams(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(Endless(b"sentence\tlabel\n", b"a fine film\t1\n", 8 << 20)))
    records = iter_labeled_records("-", "classification")
    assert [(r.index, r.line, r.text_a) for r in (next(records), next(records))] == [(0, 2, "a fine film"), (1, 3, "a fine film")]
    empty = write(tmp_path / "empty.tsv", "sentence\tlabel\n")
    with pytest.raises(PtmError, match=r"empty\.tsv: no examples in the file"):
        list(stream_labeled(empty, "classification", require_labels=False))


def test_a_large_file_is_read_a_block_at_a_time(tmp_path, monkeypatch):
    """Reading the first examples of a big file reads a few buffers of it, not the file."""
    path = tmp_path / "big.tsv"
    with open(path, "wb") as handle:
        handle.write(b"sentence\tlabel\n")
        for _ in range(64):
            handle.write(b"a fine film\t1\n" * 20_000)  # about 18 MB
    opened = []
    real_open = open

    def tracking_open(file, *args, **kwargs):
        handle = real_open(file, *args, **kwargs)
        if str(file) == str(path):
            opened.append(handle)
        return handle

    monkeypatch.setattr("builtins.open", tracking_open)
    stream = open_labeled(str(path), "classification")
    assert len(next(stream.chunks(100))) == 100
    assert opened and opened[0].tell() < 4 << 20
