"""`ptm predict` end to end: tiny finetuned checkpoints of every task type, unlabeled input in every form."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from conftest import run_cli

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.data.encode import encode_to_shards
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.tasks.metrics import entities
from ptmcli.textio.inputs import iter_texts
from ptmcli.tokenization.train import train_tokenizer

TINY = ["--preset", "bert-tiny", "--hidden-size", "16", "--num-heads", "2", "--intermediate-size", "32", "--num-layers", "1",
        "--seq-len", "32", "--max-position-embeddings", "64", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "1",
        "--no-progress", "--threads", "1", "--peak-tflops", "1"]
FT = ["--max-steps", "8", "--lr", "5e-3", "--batch-size", "8", "--max-len", "32", "--no-progress", "--threads", "1"]
WORDS = ["good", "bad", "fine", "sad", "nice", "poor"]
FILLER = ["", "very ", "rather long and winding ", "x "]
# Sentences of different lengths, so batches sorted by length come back in another order than the input's.
SENTENCES = [f"the river was {FILLER[i % 4]}{w} today" for i, w in enumerate(WORDS * 2)]
NER = ["EU B-ORG", "rejects O", "German B-MISC", "call O", "to O", "boycott O", "", "Peter B-PER", "Blackburn I-PER", "",
       "-DOCSTART- O", "", "LONDON B-LOC", "1996-08-30 O", ""]
COPA = [{"premise": f"the city was {FILLER[i % 4]}{w}", "choice1": "good river", "choice2": f"bad {w} music",
         "question": "cause" if i % 2 else "effect", "label": i % 2} for i, w in enumerate(WORDS)]
LABELED = {
    "classification": ("cls.tsv", ["sentence\tlabel"] + [f"{s}\t{'pos' if i % 2 else 'neg'}" for i, s in enumerate(SENTENCES)]),
    "pair-classification": ("pair.tsv", ["sentence1\tsentence2\tlabel"]
                            + [f"{s}\tthe music was {w}\t{'entailment' if i % 2 else 'contradiction'}"
                               for i, (s, w) in enumerate(zip(SENTENCES, WORDS * 2))]),
    "regression": ("sts.tsv", ["sentence1\tsentence2\tscore"] + [f"{s}\tthe {w} city\t{i % 5}.5" for i, (s, w) in enumerate(zip(SENTENCES, WORDS * 2))]),
    "token-classification": ("ner.txt", NER * 2),
    "multiple-choice": ("copa.jsonl", [json.dumps(r) for r in COPA]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A 1-step pretrained tiny BERT and a 2-step finetuned run of it for every task type, with their labeled data."""
    from ptmcli.cli.main import main

    root = tmp_path_factory.mktemp("predict")
    lines, docs = [], 0
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            docs += line.startswith("</doc>")
            if docs == 3:
                break
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    train_tokenizer(islice(iter_texts([str(root / "wiki.txt")]), 1000), "wordpiece", 400).save(root / "tok")
    encode_to_shards([str(root / "wiki.txt")], str(root / "tok"), str(root / "shards"), workers=1, progress=False)
    paths = {"root": root}

    def ok(*args) -> None:
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            assert not stop.code, f"ptm {' '.join(map(str, args))}"

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTM_CACHE", str(root / "cache"))
        ok("pretrain", "--data", root / "shards", "--tokenizer", root / "tok", "-o", root / "bert", *TINY, "--max-steps", "1")
        paths["pretrained"] = list_step_checkpoints(root / "bert")[-1]
        for task, (name, content) in LABELED.items():
            paths[name] = root / name
            paths[name].write_text("\n".join(content) + "\n", encoding="utf-8")
            ok("finetune", "--checkpoint", paths["pretrained"], "--task", task, "--train", paths[name], "--dev", paths[name],
               "-o", root / task, *FT)
            paths[task] = root / task
    return paths


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))


def ptm(capsys, monkeypatch, *args, stdin: bytes | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return run_cli(capsys, *args)


def predict(capsys, monkeypatch, checkpoint, *args, stdin: bytes | None = None) -> list[dict]:
    code, out, err = ptm(capsys, monkeypatch, "predict", "-c", checkpoint, *args, "--threads", "1", stdin=stdin)
    assert code == 0, err
    assert err.strip().splitlines()[-1].startswith("ptm predict: "), err
    return [json.loads(line) for line in out.splitlines()]


def eval_predictions(capsys, monkeypatch, checkpoint, data: Path, tmp_path: Path) -> list[dict]:
    target = tmp_path / "eval-predictions.jsonl"
    code, _, err = ptm(capsys, monkeypatch, "eval", "-c", checkpoint, "--data", data, "--predictions", target, "--threads", "1")
    assert code == 0, err
    return [json.loads(line) for line in target.read_text().splitlines()]


def assert_same_classes(records: list[dict], expected: list[dict], lines: list[int] | None = None) -> None:
    """Predicted labels and probabilities equal ``ptm eval --predictions``'s, example by example."""
    assert len(records) == len(expected)
    for record, reference in zip(records, expected):
        assert record["label"] == reference["prediction"]
        assert list(record["probabilities"].values()) == pytest.approx(reference["probabilities"], abs=2e-6)
        assert record["score"] == max(record["probabilities"].values())
    assert [r["line"] for r in records] == (lines if lines is not None else [e["line"] for e in expected])


def test_classification_on_every_input_form_equals_eval(models, tmp_path, capsys, monkeypatch):
    run, labeled = models["classification"], models["cls.tsv"]
    expected = eval_predictions(capsys, monkeypatch, run / "best", labeled, tmp_path)
    lines = list(range(1, len(SENTENCES) + 1))

    # The labeled file itself: the label column is ignored; a run directory stands for its best/.
    code, out, err = ptm(capsys, monkeypatch, "predict", "-c", run, labeled, "--threads", "1")
    assert code == 0 and "best" in err and f"ptm predict: {len(SENTENCES)} examples" in err, err
    records = [json.loads(line) for line in out.splitlines()]
    assert_same_classes(records, expected)
    assert [r["text"] for r in records] == SENTENCES

    unlabeled = tmp_path / "new.tsv"
    unlabeled.write_text("sentence\n" + "\n".join(SENTENCES) + "\n")
    assert_same_classes(predict(capsys, monkeypatch, run, unlabeled), expected)
    # Small chunks and batches: every chunk is sorted by length inside, the output keeps the input order.
    assert_same_classes(predict(capsys, monkeypatch, run, unlabeled, "--chunk-size", "5", "--batch-size", "2"), expected)

    as_jsonl = tmp_path / "new.jsonl"
    as_jsonl.write_text("".join(json.dumps({"id": i, "sentence": s}) + "\n" for i, s in enumerate(SENTENCES)))
    assert_same_classes(predict(capsys, monkeypatch, run, as_jsonl), expected, lines)

    plain = "\n".join(SENTENCES).encode() + b"\n"
    assert_same_classes(predict(capsys, monkeypatch, run, "-", stdin=plain), expected, lines)
    assert_same_classes(predict(capsys, monkeypatch, run, stdin=b"sentence\tlabel\n" + plain.replace(b"\n", b"\t?\n")), expected)
    named = tmp_path / "named.tsv"
    named.write_text("id\tbody\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES)))
    assert_same_classes(predict(capsys, monkeypatch, run, named, "--text-columns", "body"), expected)
    packed = tmp_path / "new.txt.gz"
    packed.write_bytes(gzip.compress(plain))
    assert_same_classes(predict(capsys, monkeypatch, run, packed), expected, lines)

    code, out, err = ptm(capsys, monkeypatch, "predict", "-c", run, unlabeled, "--output-format", "tsv", "--threads", "1")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header == "sentence\tlabel\tscore"
    assert [row.split("\t") for row in rows] == [[s, r["prediction"], str(max(r["probabilities"]))] for s, r in zip(SENTENCES, expected)]


def test_pairs_and_regression_equal_eval(models, tmp_path, capsys, monkeypatch):
    pair_run, pair_data = models["pair-classification"], models["pair.tsv"]
    expected = eval_predictions(capsys, monkeypatch, pair_run / "best", pair_data, tmp_path)
    assert_same_classes(predict(capsys, monkeypatch, pair_run, pair_data), expected)
    pairs = [line.split("\t")[:2] for line in LABELED["pair-classification"][1][1:]]
    plain = "".join(f"{a} ||| {b}\n" for a, b in pairs).encode()
    records = predict(capsys, monkeypatch, pair_run, stdin=plain)
    assert_same_classes(records, expected, list(range(1, len(pairs) + 1)))
    assert [[r["text"], r["text_b"]] for r in records] == pairs

    sts_run, sts_data = models["regression"], models["sts.tsv"]
    expected = eval_predictions(capsys, monkeypatch, sts_run / "best", sts_data, tmp_path)
    records = predict(capsys, monkeypatch, sts_run, sts_data)
    assert [r["score"] for r in records] == pytest.approx([e["prediction"] for e in expected], abs=1e-6)
    assert set(records[0]) == {"line", "text", "text_b", "score"}
    code, out, err = ptm(capsys, monkeypatch, "predict", "-c", sts_run, sts_data, "--output-format", "tsv", "--threads", "1")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header == "sentence1\tsentence2\tscore" and len(rows) == len(expected)
    assert [float(row.split("\t")[2]) for row in rows] == pytest.approx([e["prediction"] for e in expected], abs=1e-6)


def test_token_classification_tags_spans_and_input_forms(models, tmp_path, capsys, monkeypatch):
    run, labeled = models["token-classification"], models["ner.txt"]
    expected = eval_predictions(capsys, monkeypatch, run / "best", labeled, tmp_path)
    records = predict(capsys, monkeypatch, run, labeled)  # the tag column is ignored
    assert [r["tags"] for r in records] == [e["tags"] for e in expected]
    assert [r["line"] for r in records] == [e["line"] for e in expected] == [1, 8, 13, 16, 23, 28]
    assert records[0]["tokens"] == ["EU", "rejects", "German", "call", "to", "boycott"]
    for record in records:
        assert [(s["type"], s["start"], s["end"] - 1) for s in record["spans"]] == entities(record["tags"])
        assert all(s["text"] == " ".join(record["tokens"][s["start"] : s["end"]]) for s in record["spans"])

    words_only = tmp_path / "words.conll"
    words_only.write_text("\n".join(line.split(" ")[0] for line in NER * 2) + "\n")
    assert predict(capsys, monkeypatch, run, words_only) == records
    # A long CoNLL input streams through in blocks of whole sentences; lines still count from the top.
    monkeypatch.setattr("ptmcli.tasks.readers.CONLL_BLOCK_LINES", 4)
    assert predict(capsys, monkeypatch, run, words_only, "--chunk-size", "2") == records
    sentences = "".join(" ".join(r["tokens"]) + "\n" for r in records).encode()
    by_line = predict(capsys, monkeypatch, run, stdin=sentences)
    assert [r["tags"] for r in by_line] == [r["tags"] for r in records] and [r["line"] for r in by_line] == [1, 2, 3, 4, 5, 6]
    as_jsonl = tmp_path / "ner.jsonl"
    as_jsonl.write_text("".join(json.dumps({"tokens": r["tokens"]}) + "\n" for r in records))
    assert [r["tags"] for r in predict(capsys, monkeypatch, run, as_jsonl)] == [r["tags"] for r in records]

    code, out, err = ptm(capsys, monkeypatch, "predict", "-c", run, words_only, "--output-format", "tsv", "--threads", "1")
    assert code == 0, err
    blocks = out.split("\n\n")
    assert blocks[-1] == "" and len(blocks) == len(records) + 1
    for block, record in zip(blocks, records):
        assert [line.split("\t") for line in block.splitlines()] == [list(p) for p in zip(record["tokens"], record["tags"])]


def test_multiple_choice_equals_eval(models, tmp_path, capsys, monkeypatch):
    run, labeled = models["multiple-choice"], models["copa.jsonl"]
    expected = eval_predictions(capsys, monkeypatch, run / "best", labeled, tmp_path)
    records = predict(capsys, monkeypatch, run, labeled)
    assert [r["choice"] for r in records] == [int(e["prediction"]) for e in expected]
    for record, reference in zip(records, expected):
        assert record["probabilities"] == pytest.approx(reference["probabilities"], abs=2e-6)
    assert records[1]["text"] == "the city was very bad What was the cause of this?"
    assert records[1]["choices"] == ["good river", "bad bad music"]

    unlabeled = tmp_path / "copa.jsonl"
    unlabeled.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in COPA))
    assert predict(capsys, monkeypatch, run, unlabeled) == records
    plain = "".join(f"{r['text']} ||| {' ||| '.join(r['choices'])}\n" for r in records).encode()
    assert predict(capsys, monkeypatch, run, stdin=plain) == records


def test_a_closed_pipe_ends_the_run_quietly(models, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"{SENTENCES[i % len(SENTENCES)]} {i}\n" for i in range(3000)))
    env = {**os.environ, "PTM_CACHE": str(tmp_path / "cache")}
    command = (f"{sys.executable} -m ptmcli predict -c {models['classification']} {big} --chunk-size 50 --threads 1 | head -n 2;"
               " echo status=${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] == "status=0", done
    assert json.loads(lines[1])["line"] == 2
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("make_input, args, message", [
    (None, ["-c", "{pretrained}"], "not finetuned; finetune it first (ptm finetune --task ...) or use ptm extract-features"),
    ("id\tbody\n1\tfine\n", ["-c", "{classification}/best"], "cannot tell which column holds the text"),
    ("sentence\nfine\n", ["-c", "{classification}/best", "--text-columns", "headline"], "no column 'headline'; the columns are: sentence"),
    ("first text\nsecond text\n", ["-c", "{pair-classification}/best"], "input.txt:1: pair-classification reads two texts"),
    ("the city ||| only one choice\n", ["-c", "{multiple-choice}/best"], "input.txt:1: multiple-choice reads"),
    ("  \n\n", ["-c", "{classification}/best"], "input.txt: the file is empty"),
    ("sentence\n", ["-c", "{classification}/best"], "input.txt: no examples"),
    ("sentence\nfine\n", ["-c", "{classification}/best", "--batch-size", "0"], "--batch-size 0: must be positive"),
    ("sentence\nfine\n", ["-c", "{classification}/best", "--output-format", "xml"], "--output-format 'xml'"),
])
def test_errors_are_one_line_and_exit_2(models, tmp_path, capsys, monkeypatch, make_input, args, message):
    source = tmp_path / "input.txt"
    source.write_text(make_input if make_input is not None else "hello there\n")
    args = [a.format(**{k: v for k, v in models.items()}) for a in args]
    code, out, err = ptm(capsys, monkeypatch, "predict", source, *args)
    assert code == 2 and err.startswith("ptm: error: ") and err.count("\n") == 1 and message in err, err
    assert out == ""
    if "which column" in message:
        assert "columns are: id, body" in err


@pytest.mark.parametrize("task, name, content, message", [
    ("classification", "new.tsv", "sentence\nfine\n", "new.tsv:1: no label column"),
    ("classification", "plain", "a fine film\nanother one\n", "plain:1: cannot tell which column holds the text"),
    ("token-classification", "words.txt", "EU\nrejects\n\nPeter\n", "words.txt:1: the line has a word but no label column"),
])
def test_eval_on_unlabeled_data_points_to_predict(models, tmp_path, capsys, monkeypatch, task, name, content, message):
    data = tmp_path / name
    data.write_text(content)
    code, _, err = ptm(capsys, monkeypatch, "eval", "-c", models[task] / "best", "--data", data)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.rstrip().endswith(f"for predictions on unlabeled text use ptm predict -c {models[task] / 'best'} {data}")
