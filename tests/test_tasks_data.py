"""Labeled data: readers, label lists, encoding for each input style, cached shards, collation."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st

from ptmcli.errors import PtmError
from ptmcli.tasks.collate import collate, padded_length
from ptmcli.tasks.encode import (
    IGNORE_INDEX,
    EncodeReport,
    encode_examples,
    style_tokens,
    truncate_pair,
    word_predictions,
)
from ptmcli.tasks.labeled_shards import LabeledShards, prepare_labeled
from ptmcli.tasks.labels import build_label_list, output_size
from ptmcli.tasks.metrics import entities
from ptmcli.tasks.readers import (
    COPA_QUESTIONS,
    LabeledExample,
    detect_format,
    read_examples,
    read_labeled,
)
from ptmcli.tokenization.train import train_tokenizer

SENTENCES = [
    "the movie was a charming and often affecting journey .",
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "Peter Blackburn went to London with the European Commission .",
    "EU rejects German call to boycott British lamb .",
    "The man turned on the faucet. Water flowed from the spout.",
    "The girl found a bug in her cereal. She lost her appetite.",
    "He said the foodservice pie business doesn't fit the company's strategy.",
    "A man with a hard hat is dancing. A child is riding a horse.",
    "unbelievably underwhelming entertainment , remarkably unremarkable .",
    "a well-made , boiler-plate movie .",
] * 20


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer(iter(SENTENCES), "wordpiece", 300, min_frequency=1)


@pytest.fixture(scope="module")
def bytelevel():
    return train_tokenizer(iter(SENTENCES), "bytelevel", 400, min_frequency=1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PTM_CACHE", str(root))
    return root


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# -- readers ----------------------------------------------------------------------------------


def test_tsv_single_sentence_strips_texts_and_keeps_lines(tmp_path):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\nhide new secretions \t0\n\ncharming movie \t1\n")
    examples = read_examples(path, "classification")
    assert [e.texts for e in examples] == [("hide new secretions",), ("charming movie",)]
    assert [e.label for e in examples] == ["0", "1"]
    assert [e.line for e in examples] == [2, 4]


@pytest.mark.parametrize("header,row,task,texts,label", [
    ("index\tsentence1\tsentence2\tlabel", "0\tA cat.\tA \"dog\".\tentailment", "pair-classification",
     ("A cat.", 'A "dog".'), "entailment"),
    ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t11\t12\the said \" hi\tshe said", "pair-classification",
     ('he said " hi', "she said"), "1"),
    ("index\tquestion\tsentence\tlabel", "0\tWhy?\tBecause.\tnot_entailment", "pair-classification",
     ("Why?", "Because."), "not_entailment"),
    ("qid\tlabel\ttext_a", "0\t1\t很好", "classification", ("很好",), "1"),
    ("text_a\ttext_b\tgold_label", "a\tb\tneutral", "pair-classification", ("a", "b"), "neutral"),
    ("index\tgenre\tsentence1\tsentence2\tscore", "0\tnews\tx y\tx\t3.800", "regression", ("x y", "x"), 3.8),
    ("sentence\tscore", "so so\t1.53333333333333", "regression", ("so so",), 1.53333333333333),
])
def test_glue_columns_are_detected(tmp_path, header, row, task, texts, label):
    path = write(tmp_path, "data.tsv", f"{header}\n{row}\n")
    [example] = read_examples(path, task)
    assert example.texts == texts and example.label == label


def test_explicit_columns_override_detection(tmp_path):
    path = write(tmp_path, "data.tsv", "id\tbody\ttitle\tstars\tlabel\n7\tgreat phone\tphone\t5\tpos\n")
    found = read_labeled(path, "pair-classification", text_columns=["title", "body"], label_column="stars")
    assert found.examples[0].texts == ("phone", "great phone") and found.examples[0].label == "5"
    assert found.columns() == {"text": ["title", "body"], "label": "stars", "choices": []}
    with pytest.raises(PtmError, match=r"data\.tsv:1: no column 'headline'; the columns are: id, body, title, stars"):
        read_examples(path, "classification", text_columns=["headline"])
    with pytest.raises(PtmError, match="reads 1 text column"):
        read_examples(path, "classification", text_columns=["title", "body"])


def test_missing_text_or_label_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "data.tsv", "id\tbody\n1\tfine\n")
    with pytest.raises(PtmError, match=r"data\.tsv:1: cannot tell which column holds the text.*columns are: id, body"):
        read_examples(path, "classification", label_column="id")
    with pytest.raises(PtmError, match=r"no label column.*columns are: id, body"):
        read_examples(path, "classification", text_columns=["body"])


def test_classification_refuses_a_pair_file(tmp_path):
    path = write(tmp_path, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(PtmError, match="pair-classification"):
        read_examples(path, "classification")


@pytest.mark.parametrize("content,match", [
    (b"sentence\tlabel\ngood\t1\nbad\t0\textra\n", r"bad\.tsv:3: the row has 3 tab-separated fields, the header has 2"),
    (b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\n", r"bad\.tsv:3: invalid UTF-8 \(byte 0xe9 at byte 4 of the line\); convert the file to UTF-8$"),
    (b"", r"bad\.tsv: the file is empty"),
    (b"\n  \n", r"bad\.tsv: the file is empty"),
    (b"sentence\tlabel\n", r"bad\.tsv: no examples"),
    (b"sentence\tlabel\ngood\t\n", r"bad\.tsv:2: the label column 'label' is empty"),
])
def test_bad_tables_name_file_and_line(tmp_path, content, match):
    path = write(tmp_path, "bad.tsv", content)
    with pytest.raises(PtmError, match=match):
        read_examples(path, "classification")


def test_regression_label_must_be_a_number(tmp_path):
    path = write(tmp_path, "sts.tsv", "sentence1\tsentence2\tscore\na\tb\t4.0\nc\td\thigh\n")
    with pytest.raises(PtmError, match=r"sts\.tsv:3: regression label 'high' is not a number"):
        read_examples(path, "regression")
    path = write(tmp_path, "nan.tsv", "sentence1\tsentence2\tscore\na\tb\tnan\n")
    with pytest.raises(PtmError, match="finite"):
        read_examples(path, "regression")


def test_unlabeled_files_need_require_labels_false(tmp_path):
    path = write(tmp_path, "test.tsv", "qid\ttext_a\n0\t还行\n1\t不好\n")
    with pytest.raises(PtmError, match="no label column"):
        read_examples(path, "classification")
    examples = read_examples(path, "classification", require_labels=False)
    assert [e.label for e in examples] == [None, None] and examples[1].texts == ("不好",)


def test_csv_quoting_crlf_and_multiline_records(tmp_path):
    content = 'text,label\r\n"good, really",pos\r\n"two\r\nlines",neg\r\nplain,pos\r\n'
    path = write(tmp_path, "data.csv", content)
    examples = read_examples(path, "classification")
    assert [e.texts[0] for e in examples] == ["good, really", "two\r\nlines", "plain"]
    assert [e.line for e in examples] == [2, 3, 5]
    bad = write(tmp_path, "bad.csv", "text,label\nok,1\nmore,1,x\n")
    with pytest.raises(PtmError, match=r"bad\.csv:3: the row has 3 comma-separated fields"):
        read_examples(bad, "classification")


def test_format_detection():
    assert detect_format("x.txt", "a\tb\n", "classification") == "tsv"
    assert detect_format("x.txt", "a,b\n", "classification") == "csv"
    assert detect_format("x", '{"premise": "p"}\n', "multiple-choice") == "jsonl"
    assert detect_format("train.txt", "EU NNP B-NP B-ORG\n", "token-classification") == "conll"
    assert detect_format("x.jsonl", '{"tokens": []}\n', "token-classification") == "jsonl"
    assert detect_format("x.tsv", "a,b\n", "classification") == "tsv"


COPA = [
    {"premise": "The man turned on the faucet.", "choice1": "The toilet filled with water.",
     "choice2": "Water flowed from the spout.", "question": "effect", "label": 1, "idx": 0},
    {"premise": "The girl lost her appetite. ", "choice1": " She found a bug in her cereal.",
     "choice2": "She poured milk.", "question": "cause", "label": 0, "idx": 1},
]


def test_copa_jsonl(tmp_path):
    path = write(tmp_path, "val.jsonl", "\n".join(json.dumps(r) for r in COPA))
    found = read_labeled(path, "multiple-choice")
    first, second = found.examples
    assert first.texts == ("The man turned on the faucet.", COPA_QUESTIONS["effect"])
    assert second.texts == ("The girl lost her appetite.", COPA_QUESTIONS["cause"])
    assert second.choices == ("She found a bug in her cereal.", "She poured milk.")
    assert (first.label, second.label, second.line) == (1, 0, 2)
    assert found.choice_columns == ["choice1", "choice2"] and found.label_column == "label"
    assert output_size("multiple-choice", build_label_list(found.examples, "multiple-choice")) == 1


@pytest.mark.parametrize("line,match", [
    ('{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}', r"x\.jsonl:2: label 2 should be the index"),
    ('{"premise": "p", "choice1": "a", "question": "cause", "label": 0}', r"x\.jsonl:2: no field 'choice2'"),
    ('["not", "an", "object"]', r"x\.jsonl:2: expected a JSON object"),
    ('{"premise": "p", ', r"x\.jsonl:2: not valid JSON"),
    ('{"premise": 3, "choice1": "a", "choice2": "b", "question": "cause", "label": 0}', r"x\.jsonl:2: field 'premise' should be a string"),
])
def test_bad_jsonl_lines(tmp_path, line, match):
    path = write(tmp_path, "x.jsonl", json.dumps(COPA[0]) + "\n" + line + "\n")
    with pytest.raises(PtmError, match=match):
        read_examples(path, "multiple-choice")


def test_swag_style_choices_and_lists(tmp_path):
    csv_path = write(tmp_path, "swag.csv", "sent1,sent2,ending0,ending1,ending2,label\nShe opens,the door,and a,and b,and c,2\n")
    [example] = read_examples(csv_path, "multiple-choice")
    assert example.texts == ("She opens", "the door") and example.choices == ("and a", "and b", "and c")
    assert example.label == 2
    listed = write(tmp_path, "mc.jsonl", json.dumps({"question": "2+2?", "choices": ["3", "4"], "label": "1"}) + "\n")
    [example] = read_examples(listed, "multiple-choice")
    assert example.choices == ("3", "4") and example.label == 1


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

LONDON NNP B-NP B-LOC
1996-08-30 CD I-NP O"""


def test_conll_reader(tmp_path):
    path = write(tmp_path, "train.txt", CONLL)  # no trailing newline, as the real files
    found = read_labeled(path, "token-classification")
    assert found.format == "conll"
    assert [e.words for e in found.examples] == [("EU", "rejects", "German", "call"), ("Peter", "Blackburn"),
                                                 ("LONDON", "1996-08-30")]
    assert found.examples[0].word_labels == ("B-ORG", "O", "B-MISC", "O")
    assert [e.line for e in found.examples] == [3, 8, 12]
    assert found.examples[1].texts == ("Peter Blackburn",)
    pos = read_examples(path, "token-classification", conll_label_index=1)
    assert pos[0].word_labels == ("NNP", "VBZ", "JJ", "NN")
    assert build_label_list(found.examples, "token-classification") == [
        "O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_conll_problems(tmp_path):
    ragged = write(tmp_path, "ragged.txt", "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(PtmError, match=r"ragged\.txt:2: the line has 2 columns, the first token line \(line 1\) has 3"):
        read_examples(ragged, "token-classification")
    words_only = write(tmp_path, "test.txt", "EU\nrejects\n\nPeter\n")
    with pytest.raises(PtmError, match=r"test\.txt:1: the line has a word but no label column"):
        read_examples(words_only, "token-classification")
    unlabeled = read_examples(words_only, "token-classification", require_labels=False)
    assert [e.words for e in unlabeled] == [("EU", "rejects"), ("Peter",)] and unlabeled[0].word_labels is None
    with pytest.raises(PtmError, match="label column 5 is out of range"):
        read_examples(ragged, "token-classification", conll_label_index=5)
    with pytest.raises(PtmError, match="use task token-classification"):
        read_examples(ragged, "classification", fmt="conll")


def test_token_jsonl_with_integer_tags(tmp_path):
    path = write(tmp_path, "ner.jsonl", json.dumps({"tokens": ["EU", "rejects"], "ner_tags": [3, 0]}) + "\n")
    [example] = read_examples(path, "token-classification")
    assert example.words == ("EU", "rejects") and example.word_labels == ("3", "0")
    bad = write(tmp_path, "bad.jsonl", json.dumps({"tokens": ["EU", "rejects"], "ner_tags": [3]}) + "\n")
    with pytest.raises(PtmError, match=r"bad\.jsonl:1: field 'ner_tags' should be a list with one tag per word"):
        read_examples(bad, "token-classification")


# -- labels -----------------------------------------------------------------------------------


def _ex(label, line=1):
    return LabeledExample(texts=("x",), label=label, line=line)


def test_label_lists_are_sorted_deterministically():
    assert build_label_list([_ex("2"), _ex("10"), _ex("1"), _ex("2")], "classification") == ["1", "2", "10"]
    assert build_label_list([_ex("b"), _ex("a"), _ex("10")], "classification") == ["10", "a", "b"]
    assert build_label_list([_ex(None), _ex("neutral")], "pair-classification") == ["neutral"]
    assert build_label_list([_ex(2.5)], "regression") == []


def test_labels_unseen_in_training_name_label_and_line(tmp_path, wordpiece):
    dev = write(tmp_path, "dev.tsv", "sentence\tlabel\ngood\t1\nok\tneutral\n")
    with pytest.raises(PtmError, match=r"dev\.tsv:3: label 'neutral' is not among the 2 labels of the training data \(0, 1\)"):
        prepare_labeled(dev, wordpiece, "classification", "bert", 32, labels=["0", "1"])
    conll = write(tmp_path, "valid.txt", "Paris B-LOC\nis O\n\nfun B-EVENT\n")
    with pytest.raises(PtmError, match=r"valid\.txt:4: label 'B-EVENT'"):
        prepare_labeled(conll, wordpiece, "token-classification", "bert", 32, labels=["O", "B-LOC"])
    with pytest.raises(PtmError, match="names 'O' twice"):
        prepare_labeled(conll, wordpiece, "token-classification", "bert", 32, labels=["O", "O"])


# -- encoding ---------------------------------------------------------------------------------


def test_bert_layout_with_segments(wordpiece):
    pair = LabeledExample(texts=("the movie was charming .", "a witty movie ."), label="1", line=2)
    [row] = encode_examples([pair], wordpiece, "pair-classification", "bert", 64, ["0", "1"])
    ids = row["input_ids"].tolist()
    a, b = wordpiece.encode_batch(list(pair.texts))
    assert ids == [wordpiece.cls_id, *a, wordpiece.sep_id, *b, wordpiece.sep_id]
    assert row["token_type_ids"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert int(row["labels"]) == 1 and int(row["line"]) == 2
    assert row["input_ids"].dtype == np.int32


def _longest_first(a: int, b: int, budget: int) -> tuple[int, int]:
    while a + b > budget:
        if a > b:
            a -= 1
        else:
            b -= 1
    return a, b


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 80))
def test_truncate_pair_is_longest_first(a, b, budget):
    assert truncate_pair(a, b, budget) == _longest_first(a, b, budget)


def test_truncation_respects_max_len(wordpiece):
    examples = [LabeledExample(texts=(s, SENTENCES[i + 1]), label=1.5, line=i) for i, s in enumerate(SENTENCES[:9])]
    report = EncodeReport()
    rows = encode_examples(examples, wordpiece, "regression", "bert", 12, [], report=report)
    lengths = [len(r["input_ids"]) for r in rows]
    full = [len(a) + len(b) + 3 for a, b in zip(wordpiece.encode_batch([e.texts[0] for e in examples]),
                                                wordpiece.encode_batch([e.texts[1] for e in examples]))]
    assert lengths == [min(n, 12) for n in full]
    assert report.truncated == sum(n > 12 for n in full) > 0
    assert all(r["labels"].dtype == np.float32 for r in rows)
    with pytest.raises(PtmError, match="max length 3 leaves no room"):
        encode_examples(examples, wordpiece, "regression", "bert", 3, [])


def test_gpt_and_elmo_styles_use_documented_tokens(wordpiece, bytelevel):
    gpt = style_tokens(bytelevel, "gpt")
    eot = bytelevel.token_to_id("<|endoftext|>")
    assert (gpt.start, gpt.delimiter, gpt.end) == (eot, eot, eot)
    on_bert_vocab = style_tokens(wordpiece, "gpt")
    assert (on_bert_vocab.start, on_bert_vocab.delimiter, on_bert_vocab.end) == (
        wordpiece.cls_id, wordpiece.sep_id, wordpiece.sep_id)
    elmo = style_tokens(wordpiece, "elmo")
    assert (elmo.start, elmo.delimiter, elmo.end) == (wordpiece.cls_id, wordpiece.sep_id, wordpiece.sep_id)
    with pytest.raises(PtmError, match="input style bert needs a cls token"):
        style_tokens(bytelevel, "bert")
    with pytest.raises(PtmError, match="unknown input style"):
        style_tokens(bytelevel, "no-such-family")
    example = LabeledExample(texts=("EU rejects", "British lamb"), label="a", line=1)
    [row] = encode_examples([example], bytelevel, "pair-classification", "gpt", 64, ["a"])
    a, b = bytelevel.encode_batch(["EU rejects", "British lamb"])
    assert row["input_ids"].tolist() == [eot, *a, eot, *b, eot]
    assert bytelevel.decode(row["input_ids"].tolist()) == "EU rejectsBritish lamb"
    [row] = encode_examples([example], wordpiece, "pair-classification", "elmo", 64, ["a"])
    a, b = wordpiece.encode_batch(["EU rejects", "British lamb"])
    assert row["input_ids"].tolist() == [elmo.start, *a, elmo.end, *b, elmo.end]


def _word_of(tokenizer, row, i, words) -> str:
    start = row["word_index"][i]
    later = [p for p in row["word_index"][i + 1 :] if p >= 0]
    end = later[0] if later else len(row["input_ids"]) - 1
    return tokenizer.decode(row["input_ids"][start:end].tolist())


def test_token_labels_sit_on_first_subtokens(wordpiece):
    words = ("Peter", "Blackburn", "underwhelming", "boiler-plate", "1996", ".")
    tags = ("B-PER", "I-PER", "O", "O", "O", "O")
    labels = ["O", "B-PER", "I-PER"]
    example = LabeledExample(texts=(" ".join(words),), label=None, words=words, word_labels=tags, line=5)
    [row] = encode_examples([example], wordpiece, "token-classification", "bert", 64, labels)
    ids, tag_ids, index = row["input_ids"], row["labels"], row["word_index"]
    assert ids[0] == wordpiece.cls_id and ids[-1] == wordpiece.sep_id
    assert len(ids) > len(words) + 2, "the tiny vocabulary should split some words"
    assert [labels[tag_ids[p]] for p in index] == list(tags)
    assert sorted(np.flatnonzero(tag_ids != IGNORE_INDEX).tolist()) == sorted(index.tolist())
    for i, word in enumerate(words):
        if word == "1996":  # no digits in the tiny vocabulary: one [UNK] still carries the tag
            assert ids[index[i]] == wordpiece.unk_id and tag_ids[index[i]] == 0
        else:
            assert _word_of(wordpiece, row, i, words).replace(" ", "") == word.lower()
    assert word_predictions(tag_ids, index, labels) == list(tags)
    # Truncation: words past max_len lose their place and predict "O".
    [short] = encode_examples([example], wordpiece, "token-classification", "bert", 5, labels)
    assert len(short["input_ids"]) == 5 and short["word_index"][-1] == -1
    assert word_predictions(short["labels"], short["word_index"], labels)[-1] == "O"


def test_bytelevel_words_get_running_text_pieces(bytelevel):
    words = ("EU", "rejects", "German", "call")
    example = LabeledExample(texts=(" ".join(words),), label=None, words=words, word_labels=None, line=1)
    [row] = encode_examples([example], bytelevel, "token-classification", "gpt", 64, ["O"])
    [whole] = bytelevel.encode_batch([" ".join(words)])
    assert row["input_ids"][1:-1].tolist() == whole
    assert (row["labels"] == IGNORE_INDEX).all()


def test_sentencepiece_words_get_running_text_pieces():
    unigram = train_tokenizer(iter(SENTENCES), "unigram", 120)
    words = ("Peter", "Blackburn", "went", "to", "London")
    example = LabeledExample(texts=(" ".join(words),), label=None, words=words, word_labels=("B", "I", "O", "O", "B"),
                             line=1)
    [row] = encode_examples([example], unigram, "token-classification", "bert", 64, ["O", "B", "I"])
    assert row["input_ids"][1:-1].tolist() == unigram.encode_batch([" ".join(words)])[0]
    assert [int(row["labels"][p]) for p in row["word_index"]] == [1, 2, 0, 0, 1]


def test_multiple_choice_builds_one_sequence_per_choice(tmp_path, wordpiece):
    path = write(tmp_path, "copa.jsonl", "\n".join(json.dumps(r) for r in COPA))
    shards = prepare_labeled(path, wordpiece, "multiple-choice", "bert", 40)
    row = shards[1]
    assert row["input_ids"].shape[0] == 2 and row["lengths"].shape == (2,)
    context = wordpiece.encode_batch([" ".join(read_examples(path, "multiple-choice")[1].texts)])[0]
    for k, choice in enumerate(["She found a bug in her cereal.", "She poured milk."]):
        n = row["lengths"][k]
        [piece] = wordpiece.encode_batch([choice])
        assert row["input_ids"][k, :n].tolist() == [wordpiece.cls_id, *context, wordpiece.sep_id, *piece, wordpiece.sep_id]
        assert (row["input_ids"][k, n:] == shards.pad_id).all()
    assert int(row["labels"]) == 0 and shards.labels == []
    batch = collate([shards[0], shards[1]], shards.pad_id)
    assert batch["input_ids"].shape[:2] == (2, 2) and batch["input_ids"].shape[2] % 8 == 0
    assert batch["attention_mask"].sum(-1).tolist() == batch["lengths"].tolist()
    assert batch["labels"].tolist() == [1, 0]


# -- shards and cache -------------------------------------------------------------------------


def test_prepare_caches_by_content(tmp_path, wordpiece, cache):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\n" + "".join(f"{s}\t{i % 3}\n" for i, s in enumerate(SENTENCES[:30])))
    first = prepare_labeled(path, wordpiece, "classification", "bert", 16)
    assert not first.from_cache and first.path is not None and Path(first.path).parent == cache / "labeled"
    manifest = json.loads((Path(first.path) / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("format", "version", "kind", "task", "labels", "rows", "input_style")} == {
        "format": "ptm-shards", "version": 1, "kind": "labeled", "task": "classification",
        "labels": ["0", "1", "2"], "rows": 30, "input_style": "bert"}
    assert manifest["tokenizer"]["sha256"] == wordpiece.sha256 and manifest["shards"][0]["rows"] == 30
    assert manifest["tokens"] == sum(len(r["input_ids"]) for r in first)
    assert not [p for p in (cache / "labeled").iterdir() if p.name.startswith(".")], "no staging directory left"

    again = prepare_labeled(path, wordpiece, "classification", "bert", 16)
    assert again.from_cache and again.path == first.path and len(again) == 30
    for i in (0, 7, 29, -1):
        for key in first[i]:
            assert np.array_equal(first[i][key], again[i][key])
    memory = prepare_labeled(path, wordpiece, "classification", "bert", 16, cache=False)
    assert memory.path is None and all(np.array_equal(memory[i]["input_ids"], first[i]["input_ids"]) for i in range(30))

    assert prepare_labeled(path, wordpiece, "classification", "bert", 24).path != first.path
    assert prepare_labeled(path, wordpiece, "classification", "elmo", 16).path != first.path
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("one more line\t1\n")
    changed = prepare_labeled(path, wordpiece, "classification", "bert", 16)
    assert changed.path != first.path and len(changed) == 31


def test_damaged_cache_entry_is_rebuilt(tmp_path, wordpiece):
    path = write(tmp_path, "train.tsv", "sentence\tlabel\ngood movie\t1\nbad movie\t0\n")
    first = prepare_labeled(path, wordpiece, "classification", "bert", 16)
    os.remove(os.path.join(first.path, first.manifest["shards"][0]["file"]))
    with pytest.raises(PtmError, match="missing"):
        LabeledShards.open(first.path)
    rebuilt = prepare_labeled(path, wordpiece, "classification", "bert", 16)
    assert not rebuilt.from_cache and len(rebuilt) == 2 and LabeledShards.open(rebuilt.path, verify=True)


def test_token_rows_round_trip_through_shards(tmp_path, wordpiece):
    path = write(tmp_path, "train.txt", CONLL)
    shards = prepare_labeled(path, wordpiece, "token-classification", "bert", 32)
    reopened = LabeledShards.open(shards.path, verify=True)
    assert reopened.labels[0] == "O" and reopened.task == "token-classification"
    row = reopened[0]
    assert [reopened.labels[row["labels"][p]] for p in row["word_index"]] == ["B-ORG", "O", "B-MISC", "O"]
    batch = collate([reopened[i] for i in range(3)], reopened.pad_id)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and batch["labels"].shape == (3, width)
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == IGNORE_INDEX).all() and (batch["input_ids"][padding] == reopened.pad_id).all()
    assert batch["word_index"].tolist()[1] == [*row_index(reopened[1]), -1, -1]
    assert batch["line"].tolist() == [3, 8, 12]


def row_index(row) -> list[int]:
    return row["word_index"].tolist()


def test_unlabeled_test_file_needs_the_label_list(tmp_path, wordpiece):
    path = write(tmp_path, "test.tsv", "qid\ttext_a\n0\tgood movie\n1\tbad\n")
    with pytest.raises(PtmError, match="no label column"):
        prepare_labeled(path, wordpiece, "classification", "bert", 16)
    with pytest.raises(PtmError, match="no labels to build the label list"):
        prepare_labeled(path, wordpiece, "classification", "bert", 16, require_labels=False)
    shards = prepare_labeled(path, wordpiece, "classification", "bert", 16, labels=["0", "1"], require_labels=False)
    assert shards.manifest["has_labels"] is False
    assert collate(list(shards), shards.pad_id)["labels"].tolist() == [IGNORE_INDEX, IGNORE_INDEX]


def test_padded_length():
    assert [padded_length(n) for n in (1, 8, 9, 17)] == [8, 8, 16, 24]
    assert padded_length(9, 8, max_length=12) == 12 and padded_length(20, 8, max_length=12) == 20
    assert padded_length(5, 1) == 5


# -- real data (skipped when ../shared/data is absent) ----------------------------------------


@pytest.mark.parametrize("relative,task,rows,counts", [
    ("sst2/dev.tsv", "classification", 872, {"1": 444, "0": 428}),
    ("rte/dev.tsv", "pair-classification", 277, {"entailment": 146, "not_entailment": 131}),
    ("mrpc/dev.tsv", "pair-classification", 408, {"1": 279, "0": 129}),
    ("chinese/dev.tsv", "classification", 1200, {"1": 593, "0": 607}),
    ("copa/val.jsonl", "multiple-choice", 100, {0: 55, 1: 45}),
])
def test_real_files_read_with_published_counts(relative, task, rows, counts):
    examples = read_examples(str(shared_file(relative)), task)
    assert len(examples) == rows and Counter(e.label for e in examples) == counts
    assert all(all(e.texts) for e in examples)


def test_real_stsb_and_unlabeled_chinese_test():
    scores = [e.label for e in read_examples(str(shared_file("stsb/dev.tsv")), "regression")]
    assert len(scores) == 1500 and abs(np.mean(scores) - 2.36) < 0.01 and min(scores) >= 0 and max(scores) <= 5
    test = read_labeled(str(shared_file("chinese/test.tsv")), "classification", require_labels=False)
    assert len(test.examples) == 1200 and not test.has_labels and test.text_columns == ["text_a"]


def test_real_conll_entity_counts():
    sentences = read_examples(str(shared_file("conll2003/valid.txt")), "token-classification")
    assert len(sentences) == 3250 and sum(len(s.words) for s in sentences) == 51362
    counts = Counter(kind for s in sentences for kind, _, _ in entities(s.word_labels))
    assert counts == {"PER": 1842, "LOC": 1837, "ORG": 1341, "MISC": 922}


def test_real_data_encodes_and_caches(wordpiece):
    dev = prepare_labeled(str(shared_file("rte/dev.tsv")), wordpiece, "pair-classification", "bert", 128,
                          labels=["entailment", "not_entailment"])
    assert len(dev) == 277 and max(len(r["input_ids"]) for r in dev) == 128 and dev.manifest["truncated"] > 0
    assert prepare_labeled(str(shared_file("rte/dev.tsv")), wordpiece, "pair-classification", "bert", 128,
                           labels=["entailment", "not_entailment"]).from_cache
    ner = prepare_labeled(str(shared_file("conll2003/valid.txt")), wordpiece, "token-classification", "bert", 128)
    assert ner.labels[0] == "O" and len(ner.labels) == 9 and len(ner) == 3250
