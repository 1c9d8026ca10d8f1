"""ERNIE-style knowledge masking: lexicon phrases matched over whole words, masked as units beside words."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli_err as ptm
from conftest import sample_corpus, shared_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.errors import PtmError
from ptmcli.pretraining.lexicon_units import Lexicon, UnitMasker

VOCAB = {w: i + 10 for i, w in enumerate("the new york times harry potter in a of was big city".split())}


class WordTokenizer:
    """One token per word, as a WordPiece tokenizer does for words in its vocabulary."""

    def encode_batch(self, texts):
        return [[VOCAB[w] for w in text.split()] for text in texts]


def _row(text: str):
    ids = [1] + [VOCAB[w] for w in text.split()] + [2]
    special = [True] + [False] * (len(ids) - 2) + [True]
    return torch.tensor([ids]), torch.tensor([special]), torch.ones(1, len(ids), dtype=torch.bool)


def test_phrases_match_greedily_longest_over_whole_words():
    lexicon = Lexicon(WordTokenizer().encode_batch(["new york", "new york times", "harry potter"]))
    ids, special, starts = _row("the new york times of harry potter was new york")
    first = np.arange(1, ids.shape[1] - 1)
    units = lexicon.units(ids[0].numpy(), first, first + 1)
    assert units == [(1, 2, False), (2, 5, True), (5, 6, False), (6, 8, True), (8, 9, False), (9, 11, True)]


def test_phrase_share_and_masked_fraction():
    lexicon = Lexicon(WordTokenizer().encode_batch(["new york", "harry potter"]))
    text = " ".join(["the new york times of harry potter was a big city"] * 12)
    ids, special, starts = _row(text)
    ids, special, starts = ids.repeat(64, 1), special.repeat(64, 1), starts.repeat(64, 1)
    masker = UnitMasker(lexicon, 40, 3, (1, 2, 0), 0.15, unit_ratio=0.5)
    masked, labels = masker(ids, special, np.arange(64), 5, starts)
    chosen = labels.numpy() != -100
    real = (~special.numpy()).sum()
    assert abs(chosen.sum() / real - 0.15) < 0.01
    # Phrase tokens are chosen whole: "new" with "york", "harry" with "potter".
    row_ids = ids.numpy()
    for a in (VOCAB["new"], VOCAB["harry"]):
        at = row_ids == a
        assert (chosen[:, 1:][at[:, :-1]] == chosen[:, :-1][at[:, :-1]]).all()
    phrase_tokens = np.isin(row_ids, [VOCAB[w] for w in ("new", "york", "harry", "potter")])
    share = (chosen & phrase_tokens).sum() / chosen.sum()
    assert 0.4 < share < 0.6, share
    # Keyed by example number: a row masked alone is the row masked in the batch.
    alone = masker(ids[7:8], special[7:8], np.arange(7, 8), 5, starts[7:8])
    assert torch.equal(alone[0], masked[7:8]) and torch.equal(alone[1], labels[7:8])


@pytest.mark.parametrize("content,message", [(None, "no such file"), ("\n  \n", "has no phrases")])
def test_missing_or_empty_lexicon_is_refused(tmp_path, content, message):
    path = tmp_path / "lexicon.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PtmError, match=message):
        Lexicon.load(str(path), WordTokenizer())


# -- the masker on real shards, through the MLM objectives' builder ------------------------------------

TINY = ["--preset", "bert-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--num-layers", "2",
        "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "1", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(shards, tokenizer, lexicon): the lexicon holds the corpus's 40 most frequent word pairs and 10 triples."""
    root = tmp_path_factory.mktemp("knowledge")
    shards, tok = sample_corpus(root, articles=8, vocab_size=1000, tokenizer_lines=2000)
    words = [w for w in (root / "wiki.txt").read_text(encoding="utf-8").lower().split() if w.isalpha()]
    pairs = Counter(zip(words, words[1:])).most_common(40)
    triples = Counter(zip(words, words[1:], words[2:])).most_common(10)
    lexicon = root / "lexicon.txt"
    lexicon.write_text("\n".join(" ".join(p) for p, _ in pairs + triples) + "\n", encoding="utf-8")
    return shards, tok, lexicon


def _task(corpus, unit: str, objective: str = "mlm+nsp", batch_size: int = 16, lexicon: Path | None = None, ratio: float = 0.5):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok, default_lexicon = corpus
    lexicon = lexicon or default_lexicon
    cfg = SimpleNamespace(objective=objective, seq_len=64, seed=5, short_seq_prob=0.1, whole_word_mask=False, batch_size=batch_size,
                          mask_prob=0.15, eval_batches=1, compile=False, ngram_mask=1, mask_unit=unit,
                          mask_lexicon=str(lexicon) if unit in ("phrase", "entity") else None, lexicon_mask_ratio=ratio, disc_weight=50.0)
    dataset = ShardDataset.open(shards)
    rows = np.arange(len(dataset))
    arch = "electra" if objective == "rtd" else "bert"
    return OBJECTIVES[objective].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:], [("heldout", dataset, rows[:2])],
                                                        get_family(arch)))


def _originals(batch) -> tuple[np.ndarray, np.ndarray]:
    """(the unmasked ids, which tokens were chosen) of a masked batch."""
    labels = batch["mlm_labels"].numpy()
    chosen = labels != -100
    return np.where(chosen, labels, batch["input_ids"].numpy()), chosen


def _units_of(batch, tokenizer, lexicon):
    """Per row: the lexicon's units (begin, end, from_lexicon) over the row's WordPiece words, and what was chosen."""
    pieces = np.array([p.startswith("##") for p in tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))])
    ids, chosen = _originals(batch)
    special = np.isin(ids, [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id])
    from ptmcli.pretraining.span_masking import word_ranges

    for r in range(len(ids)):
        first, ends, _ = word_ranges(~special[r], ~pieces[ids[r]])
        yield lexicon.units(ids[r], first, ends), chosen[r], special[r]


@pytest.mark.parametrize("unit", ["phrase", "entity"])
def test_lexicon_units_and_words_are_masked_whole_at_15_percent(corpus, unit):
    from ptmcli.pretraining.lexicon_units import Lexicon
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    tokenizer = PtmTokenizer.load(corpus[1])
    lexicon = Lexicon.load(str(corpus[2]), tokenizer)
    task = _task(corpus, unit)
    chosen_total = real_total = lexical_chosen = units_seen = 0
    for _ in range(40):
        batch = task.next_micro_batches(1)[0]
        for units, chosen, special in _units_of(batch, tokenizer, lexicon):
            assert not (chosen & special).any()
            for begin, end, from_lexicon in units:
                part = chosen[begin:end]
                # A phrase (or a word) is masked entirely or not at all.
                assert part.all() or not part.any(), (begin, end, from_lexicon)
                units_seen += from_lexicon
                lexical_chosen += int(from_lexicon and part.all()) * (end - begin)
            chosen_total += int(chosen.sum())
            real_total += int((~special).sum())
    assert units_seen > 100  # the corpus has the lexicon's phrases: the check above had something to check
    assert abs(chosen_total / real_total - 0.15) < 0.01, chosen_total / real_total
    # At most half of the masked tokens come from lexicon units (--lexicon-mask-ratio 0.5): less where a
    # row has few phrases or whole phrases do not fill its share exactly.
    assert 0.2 < lexical_chosen / chosen_total <= 0.5 + 0.02, lexical_chosen / chosen_total


@pytest.mark.parametrize("unit, objective", [("word", "mlm"), ("token", "mlm+nsp"), ("phrase", "mlm")])
def test_masked_fraction_stays_at_15_percent(corpus, unit, objective):
    task = _task(corpus, unit, objective)
    chosen_total = real_total = 0
    for _ in range(40):
        batch = task.next_micro_batches(1)[0]
        ids, chosen = _originals(batch)
        special = np.isin(ids, [task.specials.cls_id, task.specials.sep_id, task.specials.pad_id])
        chosen_total += int(chosen.sum())
        real_total += int((~special).sum())
    assert abs(chosen_total / real_total - 0.15) < 0.01, chosen_total / real_total


def test_lexicon_ratio_zero_masks_words_only_and_one_takes_lexicon_units_first(corpus):
    from ptmcli.pretraining.lexicon_units import Lexicon
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    tokenizer = PtmTokenizer.load(corpus[1])
    lexicon = Lexicon.load(str(corpus[2]), tokenizer)
    for ratio in (0.0, 1.0):
        task = _task(corpus, "phrase", ratio=ratio)
        lexical = reachable = 0
        for _ in range(10):
            for units, chosen, special in _units_of(task.next_micro_batches(1)[0], tokenizer, lexicon):
                lexical += sum(end - begin for begin, end, from_lexicon in units if from_lexicon and chosen[begin])
                available = sum(end - begin for begin, end, from_lexicon in units if from_lexicon)
                reachable += min(available, round(0.15 * int((~special).sum())))
        if ratio == 0.0:
            assert lexical == 0
        else:
            # Lexicon units fill the row's budget first: all of them, or as many as fit whole.
            assert reachable > 100 and lexical >= 0.85 * reachable, (lexical, reachable)


def test_rows_are_masked_alike_whatever_the_batch_and_state_resumes_exactly(corpus, tmp_path):
    from ptmcli.training.distributed import Distributed, GlobalBatchShare, share_of, slice_batch

    whole = _task(corpus, "phrase", batch_size=6)
    parts = [GlobalBatchShare(_task(corpus, "phrase", batch_size=6), Distributed(rank=r, world_size=2)) for r in range(2)]
    for _ in range(3):
        full = whole.next_micro_batches(1)[0]
        for rank, part in enumerate(parts):
            share = part.next_micro_batches(1)[0]
            for key, value in slice_batch(full, share_of(6, Distributed(rank=rank, world_size=2)), 6).items():
                assert torch.equal(share[key], value), key
    state = whole.state_dict()
    assert len(state["mask_lexicon_sha256"]) == 64
    after = [whole.next_micro_batches(1)[0] for _ in range(2)]
    again = _task(corpus, "phrase", batch_size=6)
    again.load_state_dict(state)
    for expected in after:
        got = again.next_micro_batches(1)[0]
        assert all(torch.equal(got[k], v) for k, v in expected.items())
    # Another lexicon would mask other units: resuming with it is refused.
    other = tmp_path / "other.txt"
    other.write_text("of the\n", encoding="utf-8")
    with pytest.raises(PtmError, match="changed since the run began"):
        _task(corpus, "phrase", batch_size=6, lexicon=other).load_state_dict(state)


def test_rtd_masks_lexicon_units_all_as_mask(corpus):
    task = _task(corpus, "entity", "rtd")
    batch = task.next_micro_batches(1)[0]
    chosen = batch["mlm_labels"] != -100
    assert chosen.any() and (batch["input_ids"][chosen] == task.specials.mask_id).all()


# -- ptm pretrain end to end ----------------------------------------------------------------------------

def test_pretrain_with_a_lexicon_trains_records_and_resumes_exactly(corpus, tmp_path, capsys):
    from safetensors.torch import load_file

    shards, tok, lexicon = corpus
    common = ["--data", shards, "--tokenizer", tok, *TINY, "--seed", "2", "--mask-unit", "phrase", "--mask-lexicon", lexicon,
              "--lexicon-mask-ratio", "0.6", "--max-steps", "4"]
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "full")
    assert code == 0, err
    config = read_config(list_step_checkpoints(tmp_path / "full")[-1])
    run = json.loads((tmp_path / "full" / "run.json").read_text()) if (tmp_path / "full" / "run.json").exists() else {}
    assert "phrase" in json.dumps(config) + json.dumps(run)
    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "cut", "--save-every", "2", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0 and "resuming" in err, err
    full = load_file(str(list_step_checkpoints(tmp_path / "full")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_whole_word_mask_is_mask_unit_word(corpus, tmp_path, capsys, monkeypatch):
    from ptmcli.pretraining.bert_task import BertPretrainTask

    shards, tok, _ = corpus
    seen = {}
    made = BertPretrainTask.next_micro_batches

    def recorded(self, count, rows=None):
        batches = made(self, count, rows)
        seen.setdefault(self.run_name, []).extend(batches)
        return batches

    monkeypatch.setattr(BertPretrainTask, "next_micro_batches", recorded)
    for name, flags in (("alias", ["--whole-word-mask"]), ("unit", ["--mask-unit", "word"])):
        monkeypatch.setattr(BertPretrainTask, "run_name", name, raising=False)
        code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--max-steps", "2", *flags, "-o", tmp_path / name)
        assert code == 0, err
    assert len(seen["alias"]) == len(seen["unit"]) == 2
    for a, b in zip(seen["alias"], seen["unit"]):
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- jieba word segmentation -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chinese(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(a WordPiece tokenizer, its text file, the texts): 60 ChnSentiCorp reviews."""
    import csv

    from ptmcli.tokenization.train import train_tokenizer

    source = shared_file("chinese/train.tsv")
    with open(source, encoding="utf-8") as handle:
        texts = [row["text_a"].strip() for row, _ in zip(csv.DictReader(handle, delimiter="\t"), range(60))]
    root = tmp_path_factory.mktemp("chinese")
    (root / "zh.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tok = root / "tok"
    train_tokenizer(iter(texts), "wordpiece", 2000).save(tok)
    return tok, root / "zh.txt", texts


def test_jieba_word_starts_are_jiebas_words(chinese):
    jieba = pytest.importorskip("jieba", reason="jieba is not installed: pip install jieba (or pip install 'ptm[chinese]')")
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.tokenization.word_segmenters import encode_words

    tok, _, texts = chinese
    tokenizer = PtmTokenizer.load(tok)
    lines = texts[:8]
    by_tokenizer = encode_words(tokenizer, lines, "tokenizer")
    by_jieba = encode_words(tokenizer, lines, "jieba")
    multi = 0
    for text, (ids, starts), (plain_ids, plain_starts), (_, offsets) in zip(lines, by_jieba, by_tokenizer,
                                                                           tokenizer.encode_batch_offsets(lines)):
        assert ids == plain_ids and len(starts) == len(ids)
        # Grouped by the flags, the tokens spell jieba's words, in order (whitespace words have no tokens).
        bounds = [i for i, s in enumerate(starts) if s] + [len(ids)]
        spelled = [text[offsets[a][0]:offsets[b - 1][1]] for a, b in zip(bounds, bounds[1:])]
        words = [w for w in jieba.lcut(text) if w.strip()]
        assert spelled == words[: len(spelled)], (spelled[:10], words[:10])
        multi += sum(len(w) > 1 for w in spelled)
        # The tokenizer alone makes each Chinese character a word: jieba's words are fewer.
        assert sum(starts) < sum(plain_starts)
    assert multi > 20


def test_encode_with_jieba_stores_its_word_starts(chinese, tmp_path, capsys):
    pytest.importorskip("jieba", reason="jieba is not installed: pip install jieba (or pip install 'ptm[chinese]')")
    from ptmcli.data.shards import ShardDataset
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.tokenization.word_segmenters import encode_words

    tok, text, texts = chinese
    code, err = ptm(capsys, "tokenize", "encode", text, "-t", tok, "-o", tmp_path / "shards", "--word-segmenter", "jieba",
                    "--document-boundary", "line", "--no-split-sentences", "-j", "2")
    assert code == 0, err
    assert len(err.strip().splitlines()) == 1, err  # jieba's own loading messages are kept off stderr
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["options"]["word_segmenter"] == "jieba"
    dataset = ShardDataset.open(tmp_path / "shards")
    expected = encode_words(PtmTokenizer.load(tok), texts[:5], "jieba")
    for row, (ids, starts) in zip(dataset, expected):
        assert list(row.input_ids) == ids and list(row.word_starts) == starts
    # Chinese whole-word masking then masks jieba's words whole.
    code, err = ptm(capsys, "pretrain", "--data", tmp_path / "shards", *TINY, "--max-steps", "2", "--mask-unit", "word",
                    "-o", tmp_path / "run")
    assert code == 0, err


def test_jieba_missing_says_how_to_install_it(chinese, tmp_path, capsys, monkeypatch):
    tok, text, _ = chinese
    monkeypatch.setitem(sys.modules, "jieba", None)  # what an environment without jieba looks like to importlib
    code, err = ptm(capsys, "tokenize", "encode", text, "-t", tok, "-o", tmp_path / "out", "--word-segmenter", "jieba", "-j", "1")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "--word-segmenter jieba" in err and "pip install jieba" in err
    assert list(tmp_path.iterdir()) == []


# -- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--mask-unit", "phrase"], "--mask-unit phrase needs --mask-lexicon"),
    (["--mask-unit", "entity", "--mask-lexicon", "{missing}"], "no such file"),
    (["--mask-unit", "phrase", "--mask-lexicon", "{empty}"], "has no phrases"),
    (["--mask-unit", "token", "--mask-lexicon", "{lexicon}"], "--mask-lexicon is used only with --mask-unit phrase or entity"),
    (["--mask-lexicon", "{lexicon}"], "--mask-lexicon is used only with"),
    (["--whole-word-mask", "--mask-unit", "token"], "--whole-word-mask conflicts with --mask-unit token"),
    (["--mask-unit", "phrase", "--mask-lexicon", "{lexicon}", "--lexicon-mask-ratio", "1.5"], "--lexicon-mask-ratio 1.5"),
    (["--mask-unit", "phrase", "--mask-lexicon", "{lexicon}", "--ngram-mask", "3"], "--ngram-mask 3 conflicts"),
    (["--mask-unit", "sentence"], "sentence"),
    (["--arch", "gpt", "--preset", "gpt-tiny", "--mask-unit", "word"], "--objective clm does not mask tokens"),
    (["--arch", "elmo", "--preset", "elmo-small", "--mask-unit", "phrase", "--mask-lexicon", "{lexicon}"], "--objective bilm"),
    (["--objective", "span", "--mask-unit", "word"], "--objective span does not use it"),
])
def test_bad_mask_unit_flags_are_one_line_exit_2(corpus, tmp_path, capsys, flags, message):
    shards, tok, lexicon = corpus
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    names = {"missing": tmp_path / "nope.txt", "empty": empty, "lexicon": lexicon}
    tiny = [w for w in TINY if w not in ("--preset", "bert-tiny")] if "--preset" in flags else TINY
    args = [str(names[f[1:-1]]) if f.startswith("{") else f for f in flags]
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *tiny, *args)
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_word_units_need_shards_with_word_starts(corpus, tmp_path, capsys):
    shards, tok, lexicon = corpus
    text = Path(shards).parent / "wiki.txt"
    assert ptm(capsys, "tokenize", "encode", text, "-t", tok, "-o", tmp_path / "plain", "--no-word-starts", "-j", "1")[0] == 0
    code, err = ptm(capsys, "pretrain", "--data", tmp_path / "plain", "-o", tmp_path / "run", *TINY, "--mask-unit", "phrase",
                    "--mask-lexicon", lexicon)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "without word boundaries" in err, err
    assert not (tmp_path / "run").exists()
    code, err = ptm(capsys, "tokenize", "encode", text, "-t", tok, "-o", tmp_path / "out", "--no-word-starts",
                    "--word-segmenter", "jieba", "-j", "1")
    assert code == 2 and "--word-segmenter jieba" in err and "--no-word-starts" in err, err
    assert not (tmp_path / "out").exists()
