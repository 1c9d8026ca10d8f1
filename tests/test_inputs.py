"""The text-input layer: formats, expansion of paths, gzip, stdin, bad input."""

from __future__ import annotations

import gzip
import io
import json
import sys
from itertools import islice
from pathlib import Path

import pytest
from conftest import shared_file

from ptmcli.errors import PtmError
from ptmcli.textio.inputs import (
    ReadStats,
    detect_format,
    expand_inputs,
    iter_documents,
    iter_texts,
    total_input_bytes,
)


def head_lines(path: Path, count: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in islice(f, count)]


@pytest.fixture(scope="module")
def enwiki_slice(tmp_path_factory) -> Path:
    """The first 2000 lines of the Wikipedia sample (WikiExtractor format), cut at a </doc>."""
    lines = head_lines(shared_file("enwiki-sample/enwiki_sample.txt"), 2000)
    last_close = max(i for i, line in enumerate(lines) if line == "</doc>")
    path = tmp_path_factory.mktemp("enwiki") / "wiki_00"
    path.write_text("\n".join(lines[: last_close + 1]) + "\n", encoding="utf-8")
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


# -- formats ---------------------------------------------------------------------------------


def test_plain_text_blank_lines_end_documents(tmp_path):
    path = write(tmp_path / "c.txt", "first para\nsecond para\n\n  \nnext doc\r\n\n\nlast one\nend")
    docs = list(iter_documents([str(path)]))
    assert [d.paragraphs for d in docs] == [["first para", "second para"], ["next doc"], ["last one", "end"]]
    assert [d.line for d in docs] == [1, 5, 8]
    assert all(d.source == str(path) and d.title is None for d in docs)


def test_wikiextractor_documents_match_the_doc_tags(enwiki_slice):
    lines = enwiki_slice.read_text(encoding="utf-8").split("\n")
    tags = [(i + 1, line) for i, line in enumerate(lines) if line.startswith("<doc ")]
    stats = ReadStats()
    docs = list(iter_documents([str(enwiki_slice)], stats=stats))
    assert detect_format(str(enwiki_slice), enwiki_slice.read_bytes()[:8192]) == "wikiextractor"
    assert len(docs) == len(tags) == stats.documents
    for doc, (number, tag) in zip(docs, tags, strict=True):
        assert doc.line == number
        assert f'title="{doc.title}"' in tag  # the first line inside is the title ...
        assert doc.title not in doc.paragraphs[:1]  # ... and is not a paragraph
        assert all(p.strip() and not p.startswith(("<doc ", "</doc>")) for p in doc.paragraphs)
    body = [line for line in lines if line.strip() and not line.startswith(("<doc ", "</doc>"))]
    assert sum(len(d.paragraphs) for d in docs) == len(body) - len(docs)
    assert stats.lines == len(lines) - 1 and stats.bytes_read == enwiki_slice.stat().st_size


def test_jsonl_on_real_data_and_nested_fields(tmp_path):
    copa = shared_file("copa/train.jsonl")
    records = [json.loads(line) for line in copa.read_text(encoding="utf-8").splitlines()]
    docs = list(iter_documents([str(copa)], text_field="premise"))
    assert [d.paragraphs for d in docs] == [[r["premise"]] for r in records]
    assert [d.line for d in docs] == list(range(1, len(records) + 1))

    lines = [json.dumps({"meta": {"body": "a\n\nb\nc"}, "title": "T"}), "", json.dumps({"meta": {"body": ""}}),
             json.dumps({"meta": {"body": ["x", "y\nz"]}})]
    path = write(tmp_path / "nested.jsonl", "\n".join(lines))
    docs = list(iter_documents([str(path)], text_field="meta.body"))
    assert [(d.line, d.paragraphs, d.title) for d in docs] == [(1, ["a", "b", "c"], "T"), (4, ["x", "y", "z"], None)]


def test_jsonl_errors_name_the_line_and_field(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "ok"}\n{"text": broken\n{"body": "x"}\n')
    with pytest.raises(PtmError, match=rf"{path}:2: not valid JSON"):
        list(iter_documents([str(path)]))
    stats = ReadStats()
    with pytest.raises(PtmError, match=rf"{path}:3: no field 'text' \(fields: body\)"):
        list(iter_documents([str(path)], errors="skip", stats=stats))
    assert stats.skipped_lines == 1
    number = write(tmp_path / "n.jsonl", '{"text": 3}\n')
    with pytest.raises(PtmError, match=r"n.jsonl:1: field 'text' holds int"):
        list(iter_documents([str(number)], fmt="jsonl"))


def test_tsv_columns_by_name_index_and_default(tmp_path):
    sst = shared_file("sst2/dev.tsv")
    rows = [line.split("\t") for line in sst.read_text(encoding="utf-8").splitlines()[1:]]
    docs = list(iter_documents([str(sst)], tsv_column="sentence"))
    assert [d.paragraphs[0] for d in docs] == [r[0] for r in rows]
    assert docs[0].line == 2
    by_index = list(iter_texts([str(sst)], tsv_column="0"))
    assert by_index == [d.paragraphs[0] for d in docs]

    chinese = shared_file("chinese/dev.tsv")
    texts = list(iter_texts([str(chinese)], tsv_column="text_a"))
    assert len(texts) == 1200 and all("\t" not in t for t in texts)
    with pytest.raises(PtmError, match=r"choose the text column with --tsv-column \(columns: qid, label, text_a\)"):
        list(iter_texts([str(chinese)]))
    with pytest.raises(PtmError, match=r"no column 'body'"):
        list(iter_texts([str(chinese)], tsv_column="body"))

    csv_file = write(tmp_path / "t.csv", 'id,text\n1,"a, quoted\nline"\n2,plain\n')
    assert [(d.line, d.paragraphs) for d in iter_documents([str(csv_file)])] == [(2, ["a, quoted", "line"]), (4, ["plain"])]
    short = write(tmp_path / "s.tsv", "a\tb\n1\tx\n2\n3\ty\n")
    with pytest.raises(PtmError, match=r"s.tsv:3: row has 1 fields, the header has 2"):
        list(iter_texts([str(short)], tsv_column="b"))
    assert list(iter_texts([str(short)], tsv_column="b", errors="skip")) == ["x", "y"]


def test_detect_format():
    assert detect_format("a.txt", b'<doc id="1" url="u" title="t">\nt\n') == "wikiextractor"
    assert detect_format("a.txt", b'\n\n{"text": "x"}\n') == "jsonl"
    assert detect_format("a", b'{"text": "' + b"x" * 9000) == "jsonl"  # first line longer than the head
    assert detect_format("a.txt", b"{not json}\n") == "text"
    assert detect_format("a.txt", b'["a list"]\n') == "text"
    assert detect_format("a.tsv.gz", b"label\ttext\n") == "tsv"
    assert detect_format("a.csv", b"a,b\n") == "tsv"
    assert detect_format("a.txt", b"label\ttext\n") == "text"
    assert detect_format("a.txt", b"\xef\xbb\xbf<doc id=") == "wikiextractor"


def test_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello\n")
    assert list(iter_texts([str(path)])) == ["hello"]


# -- paths, gzip, stdin ------------------------------------------------------------------------


def test_globs_directories_and_hidden_files(tmp_path):
    for name in ["b/2.txt", "a.txt", "b/1.txt", "b/.hidden.txt", ".git/x.txt", "c/d/3.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path / name, f"{name}\n")
    expected = [str(tmp_path / n) for n in ["a.txt", "b/1.txt", "b/2.txt", "c/d/3.txt"]]
    assert expand_inputs([str(tmp_path)]) == expected
    assert expand_inputs([str(tmp_path / "b" / "*.txt")]) == expected[1:3]
    assert expand_inputs([str(tmp_path / "**" / "*.txt")]) == expected
    assert list(iter_texts([str(tmp_path / "b")])) == ["b/1.txt", "b/2.txt"]
    assert total_input_bytes(expected) == sum(len(n) + 1 for n in ["a.txt", "b/1.txt", "b/2.txt", "c/d/3.txt"])
    assert total_input_bytes(["-", expected[0]]) is None
    with pytest.raises(PtmError, match=r"input file .*missing.txt does not exist"):
        expand_inputs([str(tmp_path / "missing.txt")])
    with pytest.raises(PtmError, match=r"matches no files"):
        expand_inputs([str(tmp_path / "*.json")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PtmError, match=r"holds no \(non-hidden\) files"):
        expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(PtmError, match="no input files"):
        expand_inputs([])


def test_gzip_by_suffix_and_by_magic(tmp_path, enwiki_slice):
    plain = list(iter_documents([str(enwiki_slice)]))
    data = gzip.compress(enwiki_slice.read_bytes())
    with_suffix = write(tmp_path / "wiki.txt.gz", data)
    without_suffix = write(tmp_path / "wiki_01", data)
    for path in (with_suffix, without_suffix):
        stats = ReadStats()
        docs = list(iter_documents([str(path)], stats=stats))
        assert [(d.line, d.paragraphs, d.title) for d in docs] == [(d.line, d.paragraphs, d.title) for d in plain]
        assert stats.bytes_read == len(data)  # compressed bytes, comparable with the file size
    fake = write(tmp_path / "fake.txt.gz", "not gzip\n")
    with pytest.raises(PtmError, match="has a .gz name but is not gzip data"):
        list(iter_texts([str(fake)]))
    truncated = write(tmp_path / "cut.txt.gz", data[: len(data) // 2])
    with pytest.raises(PtmError, match="cut.txt.gz"):
        list(iter_texts([str(truncated)]))


@pytest.mark.parametrize("compress", [False, True])
def test_stdin_plain_and_gzip(monkeypatch, compress):
    text = "one\ntwo\n\nthree\n"
    data = gzip.compress(text.encode()) if compress else text.encode()
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    docs = list(iter_documents(["-"]))
    assert [(d.source, d.line, d.paragraphs) for d in docs] == [("<stdin>", 1, ["one", "two"]), ("<stdin>", 4, ["three"])]


def test_stdin_jsonl_is_detected(monkeypatch):
    monkeypatch.setattr(sys, "stdin", FakeStdin(b'{"text": "a"}\n{"text": "b"}\n'))
    assert list(iter_texts(["-"])) == ["a", "b"]


# -- bad input --------------------------------------------------------------------------------


def test_binary_file_is_refused(tmp_path):
    path = write(tmp_path / "model.bin", b"PK\x03\x04\x00\x00\x01binary")
    with pytest.raises(PtmError, match=rf"{path} looks binary"):
        list(iter_texts([str(path)]))


def invalid_utf8_file(tmp_path: Path) -> Path:
    return write(tmp_path / "bad.txt", b"good line\nstill good\n\ncaf\xe9 latin-1\nafter\n\nlast\n")


def test_invalid_utf8_strict_names_the_exact_line(tmp_path):
    path = invalid_utf8_file(tmp_path)
    with pytest.raises(PtmError, match=rf"{path}:4: invalid UTF-8 \(byte 0xe9"):
        list(iter_texts([str(path)]))


def test_invalid_utf8_replace_and_skip(tmp_path):
    path = invalid_utf8_file(tmp_path)
    stats = ReadStats()
    docs = list(iter_documents([str(path)], errors="replace", stats=stats))
    assert docs[1].paragraphs == ["caf\ufffd latin-1", "after"] and docs[1].line == 4
    assert (stats.replaced_lines, stats.skipped_lines) == (1, 0)
    stats = ReadStats()
    docs = list(iter_documents([str(path)], errors="skip", stats=stats))
    assert [(d.line, d.paragraphs) for d in docs] == [(1, ["good line", "still good"]), (5, ["after"]), (7, ["last"])]
    assert (stats.replaced_lines, stats.skipped_lines, stats.lines) == (0, 1, 7)


def test_reading_is_lazy(tmp_path):
    # The bad byte is at the end: the first document comes out before it is read.
    path = write(tmp_path / "lazy.txt", "first\n\n" + "filler line\n" * 200_000 + "\n")
    with open(path, "ab") as f:
        f.write(b"\xff\n")
    documents = iter_documents([str(path)])
    assert next(documents).paragraphs == ["first"]
    with pytest.raises(PtmError, match=r"lazy.txt:200004: invalid UTF-8"):
        list(documents)


def test_empty_input_is_an_error(tmp_path):
    blank = write(tmp_path / "blank.txt", "\n  \n\n")
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(PtmError, match=r"no text found in .*blank.txt, .*empty.txt"):
        list(iter_texts([str(blank), str(empty)]))
    # An empty file among others is fine.
    other = write(tmp_path / "other.txt", "text\n")
    assert list(iter_texts([str(empty), str(other)])) == ["text"]


def test_unknown_options_are_refused(tmp_path):
    path = write(tmp_path / "x.txt", "x\n")
    with pytest.raises(PtmError, match="unknown input format 'xml'"):
        list(iter_texts([str(path)], fmt="xml"))
    with pytest.raises(PtmError, match="unknown --errors mode 'ignore'"):
        list(iter_texts([str(path)], errors="ignore"))


def test_named_pipe_with_gzip(tmp_path):
    # What `ptm tokenize train <(zcat ...)`-style process substitution hands over: a pipe, not a file.
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(gzip.compress(b"first\nsecond\n\nthird\n"))

    writer = threading.Thread(target=feed)
    writer.start()
    assert total_input_bytes(expand_inputs([str(fifo)])) is None
    assert [d.paragraphs for d in iter_documents([str(fifo)])] == [["first", "second"], ["third"]]
    writer.join(timeout=10)
