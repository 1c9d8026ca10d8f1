"""Extractive question answering: SQuAD reading, windows and offsets, n-best decoding, EM/F1, the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from ptmcli.errors import PtmError
from ptmcli.tasks.qa_answers import answer_texts, best_spans
from ptmcli.tasks.qa_metrics import exact_match, normalize_answer, squad_scores, token_f1
from ptmcli.tasks.qa_windows import answer_tokens, encode_windows
from ptmcli.tasks.squad import Answer, QAExample, read_squad
from ptmcli.tokenization.tokenizer import PtmTokenizer
from tests.test_finetune import pretrained  # noqa: F401  (fixture)
from tests.test_pretrain import corpus, ptm  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def tokenizer(corpus):  # noqa: F811
    return PtmTokenizer.load(corpus[1])


def _example(context: str, answer: str, question: str = "where is it", qid: str = "q1") -> QAExample:
    return QAExample(qid, question, context, (Answer(answer, context.index(answer)),), 1)


def _labelled_texts(windows) -> list[str | None]:
    """Per window: the context text between its labelled start and end, or None when labelled at position 0."""
    out = []
    for row in windows.rows:
        start, end = (int(v) for v in row["labels"])
        context = windows.examples[int(row["example"])].context
        out.append(None if start == 0 else context[row["offsets"][start, 0] : row["offsets"][end, 1]])
    return out


def _frame(tokenizer, question: str) -> int:
    """Tokens before the passage: the start token, the question, the delimiter."""
    return len(tokenizer.encode_batch([question])[0]) + 2


# -- tokenizer offsets and answer positions -----------------------------------------------------------


def test_offsets_point_back_into_the_original_text_accents_included(tokenizer):
    text = "Le Café de Zoë est à Montréal."
    (ids, offsets), = tokenizer.encode_batch_offsets([text])
    assert ids == tokenizer.encode_batch([text])[0]
    assert len(offsets) == len(ids)
    pieces = [text[a:b] for a, b in offsets]
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    span = answer_tokens(offsets, text.index("Montréal"), text.index("Montréal") + len("Montréal"))
    assert span is not None and text[offsets[span[0]][0] : offsets[span[1]][1]] == "Montréal"


def test_answer_tokens_cover_an_answer_inside_a_word():
    offsets = [(0, 3), (4, 9), (9, 12), (13, 16)]  # "the river ##side was"
    assert answer_tokens(offsets, 4, 12) == (1, 2)
    assert answer_tokens(offsets, 5, 8) == (1, 1)  # part of a token: the token
    assert answer_tokens(offsets, 20, 24) is None


# -- windows ------------------------------------------------------------------------------------------


def test_an_answer_ending_at_the_windows_last_token_is_labelled_there(tokenizer):
    context = "the city was built on the river and the music of the city was played in the old hall by the people"
    example = _example(context, "the music")
    (ids, offsets), = tokenizer.encode_batch_offsets([context])
    _, last = answer_tokens(offsets, context.index("the music"), context.index("the music") + len("the music"))
    room = _frame(tokenizer, example.question) + 1  # passage tokens in a window: max_len - room
    fits = encode_windows([example], tokenizer, "bert", room + last + 1, doc_stride=4)
    assert _labelled_texts(fits)[0] == "the music"
    assert int(fits.rows[0]["labels"][1]) == len(fits.rows[0]["input_ids"]) - 2  # the token before the end token
    short = encode_windows([example], tokenizer, "bert", room + last, doc_stride=4)
    texts = _labelled_texts(short)
    assert texts[0] is None and "the music" in texts  # cut at the edge: not in the first window, whole in a later one


def test_an_answer_in_two_windows_overlap_is_labelled_in_both_and_decoded_once(tokenizer):
    context = " ".join(["the city was built on the river"] * 3 + ["and music was played in the hall"] + ["by the people of the city"] * 3)
    example = _example(context, "music was played")
    windows = encode_windows([example], tokenizer, "bert", _frame(tokenizer, example.question) + 1 + 24, doc_stride=6)
    texts = _labelled_texts(windows)
    assert texts.count("music was played") >= 2 and set(texts) <= {None, "music was played"}
    for row, text in zip(windows.rows, texts):
        assert row["input_ids"][0] == tokenizer.cls_id and row["input_ids"][-1] == tokenizer.sep_id
        assert len(row["input_ids"]) <= _frame(tokenizer, example.question) + 1 + 24
        if text is None:
            assert list(row["labels"]) == [0, 0]
    # Logits that point at the answer in every window that holds it: one answer for the question.
    logits = []
    for row in windows.rows:
        scores = np.zeros((len(row["input_ids"]), 2), dtype=np.float32)
        start, end = row["labels"]
        if start:
            scores[start, 0] = scores[end, 1] = 5.0
        logits.append(scores)
    assert answer_texts([context], logits, windows.rows) == ["music was played"]


def test_every_passage_token_is_in_some_window(tokenizer):
    context = " ".join(f"word{i}" for i in range(60))
    windows = encode_windows([_example(context, "word30")], tokenizer, "bert", 24, doc_stride=100)  # stride beyond a window
    covered = set()
    for row in windows.rows:
        covered |= {int(a) for a, _ in row["offsets"] if a >= 0}
    (ids, offsets), = tokenizer.encode_batch_offsets([context])
    assert covered == {a for a, _ in offsets}


def test_accents_are_kept_in_the_answer_taken_from_the_context(tokenizer):
    context = "Zoë a ouvert un café à Montréal en hiver."
    example = _example(context, "café à Montréal", question="Qu'a ouvert Zoë ?")
    windows = encode_windows([example], tokenizer, "bert", 64)
    assert _labelled_texts(windows) == ["café à Montréal"]


# -- decoding -----------------------------------------------------------------------------------------


def test_n_best_pairs_respect_order_length_and_the_passage():
    start = np.array([9.0, 1.0, 8.0, 0.0, 0.0, 3.0])
    end = np.array([9.0, 7.0, 0.0, 0.0, 6.0, 2.0])
    passage = np.array([False, True, True, True, True, True])  # position 0 ([CLS]) is never an answer
    spans = best_spans(start, end, passage, n_best=3, max_answer_len=3)
    # (2, 1) ends before its start, (2, 5) and (1, 4) are too long, (2, 2) is not among the top three ends
    assert [(s.start, s.end) for s in spans] == [(2, 4), (1, 1), (5, 5)]
    assert spans[0].score == pytest.approx(14.0)
    assert [(s.start, s.end) for s in best_spans(start, end, passage, max_answer_len=1)][:2] == [(1, 1), (2, 2)]
    assert best_spans(start, end, np.zeros(6, dtype=bool)) == []


# -- EM and F1 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,normal", [
    ("The Denver Broncos", "denver broncos"), ("  a  cat, an apple; the END.", "cat apple end"),
    ("Theatre", "theatre"), ("Santa Clara, California", "santa clara california"), ("1,000", "1000"),
])
def test_normalisation(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_f1():
    assert exact_match("the Denver Broncos!", "Denver Broncos") == 1.0
    assert token_f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    assert token_f1("Carolina", "Denver Broncos") == 0.0 and token_f1("", "Denver") == 0.0
    scores = squad_scores(["Denver Broncos", "Carolina Panthers team"], [["Broncos", "Denver Broncos"], ["the Carolina Panthers"]])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.8) / 2)


# -- reading SQuAD ------------------------------------------------------------------------------------


SQUAD = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "Paris is the capital of France.", "qas": [
    {"id": "a", "question": "What is the capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]},
    {"id": "b", "question": "Paris is the capital of what?", "answers": [{"text": "France", "answer_start": 24}]}]}]}]}


def test_json_and_both_jsonl_answer_layouts_read_the_same(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(SQUAD))
    columns = [{"id": q["id"], "question": q["question"], "context": SQUAD["data"][0]["paragraphs"][0]["context"],
                "answers": {"text": [a["text"] for a in q["answers"]], "answer_start": [a["answer_start"] for a in q["answers"]]}}
               for q in SQUAD["data"][0]["paragraphs"][0]["qas"]]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(c) for c in columns) + "\n")
    listed = [dict(c, answers=[{"text": t, "answer_start": s} for t, s in zip(c["answers"]["text"], c["answers"]["answer_start"])]) for c in columns]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(c) for c in listed) + "\n")
    read = [[(e.id, e.question, e.context, e.answers) for e in read_squad(tmp_path / name)] for name in ("a.json", "b.jsonl", "c.jsonl")]
    assert read[0] == read[1] == read[2] and read[0][1][3] == (Answer("France", 24),)


def test_an_answer_off_its_offset_names_the_question(tmp_path):
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 20
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PtmError, match="question 'b'.*not at answer_start 20"):
        read_squad(tmp_path / "bad.json")
    notes = []
    kept = read_squad(tmp_path / "bad.json", errors="report", note=notes.append)
    assert [e.id for e in kept] == ["a"] and len(notes) == 1 and "1 answer(s) not at their answer_start" in notes[0]
    unanswered = read_squad(tmp_path / "bad.json", require_answers=False, errors="report")
    assert [e.id for e in unanswered] == ["a", "b"] and unanswered[1].answers == ()
    (tmp_path / "other.json").write_text(json.dumps({"rows": [1, 2]}))
    with pytest.raises(PtmError, match="not SQuAD data"):
        read_squad(tmp_path / "other.json")


# -- the CLI ------------------------------------------------------------------------------------------


def _questions(n: int, seed: int) -> dict:
    """Questions whose answer is the word after "called": a span task a tiny model can start to learn."""
    import random

    rng = random.Random(seed)
    names = ["paris", "london", "music", "river", "city", "hall", "people", "world"]
    filler = "the of and a in to was is built on old new".split()
    paragraphs = []
    for i in range(n):
        name = rng.choice(names)
        before = " ".join(rng.choice(filler) for _ in range(rng.randint(2, 12)))
        after = " ".join(rng.choice(filler) for _ in range(rng.randint(2, 12)))
        context = f"{before} called {name} {after}."
        paragraphs.append({"context": context, "qas": [{"id": f"q{seed}-{i}", "question": "what is it called?",
                                                        "answers": [{"text": name, "answer_start": context.index(f"called {name}") + 7}]}]})
    return {"version": "1.1", "data": [{"title": "made", "paragraphs": paragraphs}]}


def test_finetune_eval_predict_and_bad_input_end_to_end(pretrained, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train.json").write_text(json.dumps(_questions(120, 0)))
    (tmp_path / "dev.json").write_text(json.dumps(_questions(30, 1)))
    run = tmp_path / "run"
    code, err = ptm(capsys, "finetune", "--checkpoint", pretrained / "bert", "--task", "qa", "--train", tmp_path / "train.json",
                    "--dev", tmp_path / "dev.json", "-o", run, "--epochs", "8", "--lr", "3e-3", "--max-len", "24", "--doc-stride", "8",
                    "--batch-size", "16", "--no-progress", "--threads", "2", "--log-every", "20")
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["metric"] == "f1" and results["best"]["f1"] >= 50, results
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"]["type"] == "qa" and config["task"]["doc_stride"] == 8 and config["task"]["max_answer_len"] == 30

    code, out, err = run_cli(capsys, "eval", "-c", run / "best", "--data", tmp_path / "dev.json", "--json", "--predictions", tmp_path / "p.jsonl")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["f1"] == pytest.approx(results["best"]["f1"]) and metrics["questions"] == 30
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"q1-{i}" for i in range(30)]
    gold = {q["id"]: q["answers"][0]["text"] for p in _questions(30, 1)["data"][0]["paragraphs"] for q in p["qas"]}
    em = 100 * sum(normalize_answer(r["prediction"]) == normalize_answer(gold[r["id"]]) for r in records) / 30
    assert em == pytest.approx(results["best"]["exact_match"])

    code, out, err = run_cli(capsys, "predict", "-c", run / "best", tmp_path / "dev.json")
    assert code == 0, err
    assert json.loads(out) == {r["id"]: r["prediction"] for r in records}

    bad = _questions(3, 2)
    bad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    bad_run = ["finetune", "--checkpoint", pretrained / "bert", "--task", "qa", "--train", tmp_path / "bad.json",
               "--no-progress", "--max-steps", "1"]
    code, err = ptm(capsys, *bad_run, "-o", tmp_path / "bad-run", "--errors", "strict")
    assert code == 2 and "question 'q2-1'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad-run").exists()
    # By default the misplaced answer (and its question, left with none) is skipped and counted.
    code, err = ptm(capsys, *bad_run, "-o", tmp_path / "lenient-run")
    assert code == 0, err
    assert "1 answer(s) not at their answer_start skipped; 1 question(s) left without answers dropped" in err, err


# -- conversion ---------------------------------------------------------------------------------------


def test_bert_for_question_answering_converts_both_ways(tmp_path):
    import torch
    import transformers

    from ptmcli.convert.ptm_model import load_model
    from ptmcli.finetuning.task_model import load_task_model
    from tests.test_convert import batch, convert, hf_bert_dir, tensors

    src, hf_model = hf_bert_dir(tmp_path, "BertForQuestionAnswering")
    convert(src, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["task"]["type"] == "qa"
    ids, types, mask = batch()
    with torch.no_grad():
        ref = hf_model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        task_model, _, _ = load_task_model(tmp_path / "ckpt")
        through_finetuning = task_model({"input_ids": ids, "token_type_ids": types, "attention_mask": mask})["logits"]
        module, _, _ = load_model(tmp_path / "ckpt")
        through_heads = module(ids, types, mask)
    for logits in (through_finetuning, through_heads):
        torch.testing.assert_close(logits[..., 0], ref.start_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[..., 1], ref.end_logits, atol=1e-5, rtol=0)

    convert(tmp_path / "ckpt", tmp_path / "back")
    original, back = tensors(src), tensors(tmp_path / "back")
    assert sorted(original) == sorted(back) and all(torch.equal(original[k], back[k]) for k in original)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    reloaded = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert torch.equal(again.start_logits, ref.start_logits) and torch.equal(again.end_logits, ref.end_logits)
