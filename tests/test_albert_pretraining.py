"""ALBERT pretraining: sentence-order pairs, n-gram masking, the model flags, and `ptm pretrain --arch albert` end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from conftest import run_cli_err as ptm
from safetensors.torch import load_file
from test_examples import Documents

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.pretraining.keyed_masking import KeyedMasker
from ptmcli.pretraining.ngram_masking import choose_ngrams, span_length_weights
from ptmcli.pretraining.pair_plans import build_pairs, sentence_spans
from ptmcli.pretraining.sentence_order import SentenceOrderStream
from ptmcli.pretraining.sentence_order_plans import plan_sentence_order


def _occurrences(document: np.ndarray, part: np.ndarray) -> list[int]:
    """Where ``part`` occurs in ``document``."""
    return [start for start in range(len(document) - len(part) + 1) if np.array_equal(document[start:start + len(part)], part)]


def _find(document: np.ndarray, part: np.ndarray) -> int:
    """Where ``part`` first occurs in ``document`` (its ids are distinct in ``Documents``), else -1."""
    return (_occurrences(document, part) or [-1])[0]


def _in_order(document: np.ndarray, earlier: np.ndarray, later: np.ndarray) -> bool:
    """Whether ``later`` occurs in ``document`` after an occurrence of ``earlier``."""
    ends = [start + len(earlier) for start in _occurrences(document, earlier)]
    return bool(ends) and any(start >= min(ends) for start in _occurrences(document, later))


def test_sentence_order_pairs_are_consecutive_text_of_one_document_swapped_half_the_time():
    docs = Documents(count=200, seed=3)
    rng, plans = random.Random(0), []
    for row in range(len(docs)):
        plans += plan_sentence_order(row, sentence_spans(docs[row].sentence_ends), 12, rng, short_seq_prob=0.2)
    labels = np.array([plan[-1] for plan in plans])
    assert len(plans) > 300 and abs(labels.mean() - 0.5) < 0.06
    for row, first_start, first_end, other_row, second_start, second_end, swapped in plans:
        assert other_row == row and first_end > first_start and second_end > second_start
        # Untrimmed, the earlier segment ends exactly where the later one begins.
        earlier, later = ((second_start, second_end), (first_start, first_end)) if swapped else ((first_start, first_end), (second_start, second_end))
        assert earlier[1] == later[0]
    # A chunk of one sentence is split inside it: some split points are not sentence ends.
    ends = {(row, int(e)) for row in range(len(docs)) for e in docs[row].sentence_ends}
    splits = [(plan[0], plan[2] if not plan[-1] else plan[5]) for plan in plans]
    assert any(split not in ends for split in splits)

    built = build_pairs(plans, np.arange(len(plans)), docs.__getitem__, 12, seed=1, with_word_starts=False)
    for plan, example in zip(plans, built):
        document = docs[plan[0]].input_ids
        a, b = _find(document, example.tokens_a), _find(document, example.tokens_b)
        assert a >= 0 and b >= 0 and len(example.tokens_a) + len(example.tokens_b) <= 12
        # Label 1: what is shown first comes after what is shown second in the document (B A).
        assert (b + len(example.tokens_b) <= a) if example.is_random_next else (a + len(example.tokens_a) <= b)


def test_a_sentence_order_stream_resumes_and_builds_any_rows_alike():
    def stream():
        return SentenceOrderStream(Documents(), np.arange(12), "mlm+sop", 16, 7, separator_id=3, whole_word=True)

    def pairs(drawn):
        return [(e.tokens_a.tolist(), e.tokens_b.tolist(), e.is_random_next) for e in drawn.examples]

    first = stream()
    first.take(5)
    state = json.loads(json.dumps(first.state_dict()))
    after = [first.take(6) for _ in range(4)]
    resumed = stream()
    resumed.load_state_dict(state)
    for drawn in after:
        part = resumed.take(6, slice(2, 5))
        assert pairs(part) == pairs(drawn)[2:5] and part.widest == drawn.widest


def _rows(count: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] A [SEP] B [SEP] pad`` rows of random lengths and random word starts."""
    gen = np.random.default_rng(seed)
    special = np.ones((count, width), dtype=bool)
    for r in range(count):
        used = int(gen.integers(width * 7 // 8, width + 1))
        middle = int(gen.integers(2, used - 2))
        special[r, 1:used - 1] = False
        special[r, middle] = True
    return special, gen.random((count, width)) < 0.7


def _spans(chosen: np.ndarray, action: np.ndarray, starts: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, begin, end) of every span: a run of chosen tokens with one action draw."""
    spans = []
    for r in range(chosen.shape[0]):
        j = 0
        while j < chosen.shape[1]:
            if not chosen[r, j]:
                j += 1
                continue
            k = j + 1
            while k < chosen.shape[1] and chosen[r, k] and action[r, k] == action[r, j]:
                k += 1
            spans.append((r, j, k))
            j = k
    return spans


def test_ngram_spans_are_whole_words_of_lengths_proportional_to_one_over_n():
    special, word_starts = _rows(300, 512, seed=0)
    chosen, action = choose_ngrams(special, word_starts, np.arange(300), 5, 0.15, 3)
    assert not (chosen & special).any()
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01
    starts = word_starts | special
    starts[:, 1:] |= special[:, :-1]
    lengths = []
    for r, begin, end in _spans(chosen, action, starts):
        assert starts[r, begin] and (end == special.shape[1] or starts[r, end]), "a span is whole words"
        assert not special[r, begin:end].any(), "a span never crosses [SEP]"
        lengths.append(int(starts[r, begin:end].sum()))
    shares = np.bincount(lengths, minlength=4)[1:] / len(lengths)
    # Close to 6/11, 3/11, 2/11: only a row's last span may be shortened to fit the row's share.
    assert len(lengths) > 3000 and np.abs(shares - span_length_weights(3)).max() < 0.02, shares


def test_ngram_masking_is_keyed_by_example_whatever_the_batch():
    special, word_starts = _rows(8, 64, seed=1)
    ids = torch.from_numpy(np.where(special, 0, 50 + np.arange(64))).long()
    masker = KeyedMasker(100, 4, (0, 1, 2), 0.15, ngram=3)
    whole, whole_labels = masker(ids, torch.from_numpy(special), np.arange(10, 18), 3, torch.from_numpy(word_starts))
    part, part_labels = masker(ids[5:], torch.from_numpy(special[5:]), np.arange(15, 18), 3, torch.from_numpy(word_starts[5:]))
    assert torch.equal(whole[5:], part) and torch.equal(whole_labels[5:], part_labels)
    # 80/10/10 per span: a span's tokens are all [MASK] or none is.
    chosen = whole_labels.numpy() != -100
    for r, begin, end in _spans(chosen, np.where(whole.numpy() == 4, 1.0, 0.0) + chosen, word_starts | special):
        assert len(set((whole.numpy()[r, begin:end] == 4).tolist())) == 1


def test_a_rank_builds_exactly_its_rows_of_a_global_sop_batch_with_ngram_masking():
    from ptmcli.pretraining.bert_task import BertPretrainTask, Specials

    def task():
        stream = SentenceOrderStream(Documents(count=40), np.arange(40), "mlm+sop", 24, 7, separator_id=3, whole_word=True)
        return BertPretrainTask(stream, Specials(1, 3, 0, 4, 500), batch_size=8, mask_prob=0.3, seed=2, pair_head="sop", ngram=3)

    whole, part = task(), task()
    for _ in range(3):
        (full,), (mine,) = whole.next_micro_batches(1), part.next_micro_batches(1, slice(4, 8))
        assert set(full) == {"input_ids", "attention_mask", "mlm_labels", "token_type_ids", "sop_labels"}
        for key in full:
            assert torch.equal(full[key][4:8], mine[key]), key


# -- end to end -----------------------------------------------------------------------------------

ALBERT_TINY = ["--arch", "albert", "--preset", "albert-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
               "--embedding-size", "16", "--seq-len", "48", "--batch-size", "8", "--eval-rows", "4", "--eval-batches", "2",
               "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def unigram_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A sentencepiece unigram tokenizer and shards of the first articles of the bundled sample, through the CLI."""
    from ptmcli.pretraining.sample import SAMPLE

    root = tmp_path_factory.mktemp("unigram")
    lines, docs = [], 0
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            docs += line.startswith("</doc>")
            if docs == 30:
                break
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    from ptmcli.cli.main import main

    for args in (["train", root / "wiki.txt", "--model", "unigram", "--vocab-size", "1200", "-o", root / "tok"],
                 ["encode", root / "wiki.txt", "--tokenizer", root / "tok", "-o", root / "shards"]):
        try:
            main(["tokenize", *map(str, args)])
        except SystemExit as stop:
            assert not stop.code, args
    return root / "shards", root / "tok"


def test_albert_pretrains_with_sop_and_ngrams_then_finetunes_extracts_evaluates_and_converts(unigram_corpus, tmp_path, capsys,
                                                                                             monkeypatch):
    import transformers

    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.bert_task import BertPretrainTask

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    shards, tok = unigram_corpus
    batches, make_batches = [], BertPretrainTask.next_micro_batches

    def recorded(self, count):
        made = make_batches(self, count)
        batches.extend(made)
        return made

    monkeypatch.setattr(BertPretrainTask, "next_micro_batches", recorded)
    run = tmp_path / "run"
    code, err = ptm(capsys, "pretrain", "--data", shards, "-o", run, *ALBERT_TINY, "--max-steps", "12", "--lr", "3e-3",
                    "--ngram-mask", "3", "--share", "all")
    assert code == 0, err
    assert "sop_acc" in err.splitlines()[-1]
    ckpt = list_step_checkpoints(run)[-1]
    config = read_config(ckpt)
    assert config["objective"] == "mlm+sop" and config["model"]["embedding_size"] == 16 and config["model"]["share"] == "all"

    labels = torch.cat([b["sop_labels"] for b in batches])
    assert len(labels) == 96 and 0.3 < labels.float().mean() < 0.7, labels
    documents = [row.input_ids for row in ShardDataset.open(shards)]
    for batch in batches:
        original = torch.where(batch["mlm_labels"] != -100, batch["mlm_labels"], batch["input_ids"]).numpy()
        for row, types, mask, swapped in zip(original, batch["token_type_ids"].numpy(), batch["attention_mask"].numpy(),
                                             batch["sop_labels"].tolist()):
            length = int(mask.sum())
            shown_first, shown_second = row[1:length][types[1:length] == 0][:-1], row[1:length][types[1:length] == 1][:-1]
            earlier, later = (shown_second, shown_first) if swapped else (shown_first, shown_second)
            # The two segments are in one document, the later one after the earlier one.
            assert any(_in_order(doc, earlier, later) for doc in documents)

    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the city was built\t{i % 2}\nhe wrote a book\t{(i + 1) % 2}\n" for i in range(8)),
                    encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", run, "--task", "classification", "--train", data, "--dev", data,
                           "-o", tmp_path / "ft", "--max-steps", "3", "--max-len", "16", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract-features", "-c", run, data, "-o", tmp_path / "f.npy", "--layers", "all", "--pool", "mean")
    assert code == 0, err
    assert np.load(tmp_path / "f.npy").shape[-2:] == (3, 32)  # L + 1 layers of width H
    code, _, err = run_cli(capsys, "eval", "-c", tmp_path / "ft" / "best", "--data", data)
    assert code == 0, err

    code, _, err = run_cli(capsys, "convert", ckpt, tmp_path / "hf")
    assert code == 0, err
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["AlbertForPreTraining"]
    hf = transformers.AlbertForPreTraining.from_pretrained(tmp_path / "hf")
    ours = load_file(str(ckpt / "model.safetensors"))
    assert torch.equal(hf.sop_classifier.classifier.weight, ours["sop.weight"]), "the trained SOP head survives conversion"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "gpt", "--objective", "mlm+sop"], "--objective 'mlm+sop' is not available for --arch gpt"),
        (["--arch", "albert", "--share", "layers"], "--share"),
        (["--arch", "bert", "--share", "none"], "--share is not a setting of --arch bert models"),
        (["--arch", "bert", "--embedding-size", "64"], "--embedding-size is not a setting of --arch bert models"),
        (["--arch", "albert", "--ngram-mask", "0"], "--ngram-mask 0"),
    ],
)
def test_bad_albert_flags_fail_with_one_line(unigram_corpus, tmp_path, capsys, args, message):
    shards, tok = unigram_corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", "--max-steps", "1", *args)
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
