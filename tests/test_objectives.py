"""MLM masking, NSP pair building, FULL-SENTENCES packing and batch collation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import shared_file

from ptmcli.objectives.collate import collate_blocks, collate_pairs
from ptmcli.objectives.mlm import IGNORE_INDEX, mask_tokens
from ptmcli.objectives.nsp import PairExample, nsp_examples
from ptmcli.objectives.packing import SentencePacker

VOCAB, MASK, CLS, SEP, PAD = 1000, 4, 2, 3, 0
SPECIAL_IDS = (0, 1, 2, 3, 4)


def special_batch(rows: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (rows, length), generator=gen)
    ids[:, 0] = CLS
    ids[:, length // 2] = SEP
    ids[:, -1] = SEP
    ids[::3, -5:] = PAD
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    return ids, special


# --- MLM -------------------------------------------------------------------------------------


def test_mask_rates_follow_80_10_10_and_never_touch_specials():
    ids, special = special_batch(128, 256)
    masked, labels = mask_tokens(ids, special, VOCAB, MASK, torch.Generator().manual_seed(1), special_ids=SPECIAL_IDS)
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any()
    assert torch.equal(masked[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01
    n = chosen.sum().item()
    became_mask = (masked[chosen] == MASK).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    assert abs(became_mask - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.015  # a random pick can equal the original: 1/995 of the 10%
    replaced = masked[chosen & (masked != MASK) & (masked != ids)]
    assert replaced.numel() > 0 and not torch.isin(replaced, torch.tensor(SPECIAL_IDS)).any()
    # Without special_ids, the ids at special positions of the batch are still never drawn.
    small_vocab = torch.where(special, ids, ids % 3 + 5)
    masked, labels = mask_tokens(small_vocab, special, 8, MASK, torch.Generator().manual_seed(2))
    drawn = masked[(labels != IGNORE_INDEX) & (masked != MASK)]
    assert set(drawn.tolist()) <= {1, 5, 6, 7}
    assert 1 in set(drawn.tolist())  # id 1 is a plain token here: it may be drawn


def test_masking_is_deterministic_given_the_generator():
    ids, special = special_batch(8, 64)
    first = mask_tokens(ids, special, VOCAB, MASK, torch.Generator().manual_seed(7))
    again = mask_tokens(ids, special, VOCAB, MASK, torch.Generator().manual_seed(7))
    other = mask_tokens(ids, special, VOCAB, MASK, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


@pytest.fixture(scope="module")
def wordpiece_rows():
    """Real WordPiece tokens of Tiny Shakespeare lines: ids, special mask, word starts, word ids."""
    from tokenizers import BertWordPieceTokenizer

    lines = shared_file("tinyshakespeare/input.txt").read_text(encoding="utf-8").splitlines()
    lines = [line for line in lines if len(line.split()) >= 6]
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(lines[:4000], vocab_size=300, min_frequency=2, show_progress=False)
    length = 48
    rows, starts, words = [], [], []
    for enc in tokenizer.encode_batch(lines[:400], add_special_tokens=False):
        ids = ([CLS] + enc.ids + [SEP] + [PAD] * length)[:length]
        word_ids = ([-1] + enc.word_ids + [-1] + [-1] * length)[:length]
        rows.append(ids)
        starts.append([not tok.startswith("##") for tok in ["[CLS]"] + enc.tokens + ["[SEP]"] + ["[PAD]"] * length][:length])
        words.append(word_ids)
    ids = torch.tensor(rows)
    return ids, (ids == CLS) | (ids == SEP) | (ids == PAD), torch.tensor(starts), torch.tensor(words)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(wordpiece_rows):
    ids, special, starts, word_ids = wordpiece_rows
    assert (~starts[~special]).float().mean() > 0.2  # really multi-piece words
    _, labels = mask_tokens(ids, special, 300, MASK, torch.Generator().manual_seed(0), word_starts=starts)
    chosen = labels != IGNORE_INDEX
    assert not chosen[special].any()
    multi_piece_words = 0
    for r in range(ids.shape[0]):
        for w in word_ids[r].unique().tolist():
            if w < 0:
                continue
            pieces = chosen[r][word_ids[r] == w]
            assert pieces.all() or not pieces.any(), f"row {r} word {w} partly masked"
            multi_piece_words += int(pieces.all() and len(pieces) > 1)
    assert multi_piece_words > 20
    rate = chosen.sum().item() / (~special).sum().item()
    assert 0.11 < rate < 0.19


# --- NSP -------------------------------------------------------------------------------------


def make_corpus(num_docs: int, seed: int = 0):
    """Documents whose token ids encode (document, position): doc d, position p -> d * 100000 + p."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(num_docs):
        lengths = rng.integers(3, 40, size=rng.integers(1, 25))
        ends = np.cumsum(lengths)
        tokens = d * 100000 + np.arange(ends[-1])
        docs.append(np.split(tokens, ends[:-1]))
    return docs


def examples_for(docs, max_num_tokens=61, seed=0, **kwargs):
    rng = random.Random(seed)
    out = []
    for d, doc in enumerate(docs):

        def other_document(r, d=d):
            return docs[(d + r.randint(1, len(docs) - 1)) % len(docs)]

        out.extend((d, ex) for ex in nsp_examples(doc, max_num_tokens, rng, other_document, **kwargs))
    return out


def test_nsp_pairs_fit_and_keep_segment_structure():
    docs = make_corpus(300)
    pairs = examples_for(docs, max_num_tokens=61)
    assert len(pairs) > 500
    random_share = np.mean([ex.is_random_next for _, ex in pairs])
    assert 0.45 < random_share < 0.62  # 50%, plus single-sentence chunks that must take a random B
    for d, ex in pairs:
        a, b = np.asarray(ex.tokens_a), np.asarray(ex.tokens_b)
        assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= 61
        assert np.all(a // 100000 == d) and np.all(np.diff(a) == 1)  # A: one run of its own document
        assert np.all(np.diff(b) == 1) and len(set(b // 100000)) == 1
        if ex.is_random_next:
            assert b[0] // 100000 != d
        else:
            assert b[0] // 100000 == d and b[0] > a[-1]
    truncated = [ex for _, ex in pairs if len(ex.tokens_a) + len(ex.tokens_b) == 61]
    assert len(truncated) > 100


def test_nsp_reads_again_the_sentences_a_random_b_left_unused():
    docs = make_corpus(50, seed=1)
    pairs = examples_for(docs, max_num_tokens=10_000)  # nothing is truncated
    for d, doc in enumerate(docs):
        used = set()
        for dd, ex in pairs:
            if dd == d:
                used.update(np.asarray(ex.tokens_a).tolist())
                if not ex.is_random_next:
                    used.update(np.asarray(ex.tokens_b).tolist())
        assert used == set(np.concatenate(doc).tolist())


def test_nsp_truncation_trims_long_segments_from_both_ends_and_carries_word_starts():
    long_doc = [np.arange(0, 500), np.arange(500, 900)]
    starts = [np.arange(500) % 3 == 0, np.arange(500, 900) % 3 == 0]
    rng = random.Random(0)
    fronts = backs = 0
    pairs = []
    for _ in range(20):
        pairs += nsp_examples(long_doc, 29, rng, lambda r: (long_doc, starts), nsp_prob=0.0, word_starts=starts)
    for ex in pairs:
        assert 1 <= len(ex.tokens_a) and 1 <= len(ex.tokens_b)
        assert len(ex.tokens_a) + len(ex.tokens_b) == 29
        assert np.array_equal(ex.word_starts_a, ex.tokens_a % 3 == 0)
        assert np.array_equal(ex.word_starts_b, ex.tokens_b % 3 == 0)
        fronts += int(ex.tokens_a[0] > 0)
        backs += int(ex.tokens_a[-1] < 499)
    assert fronts > 0 and backs > 0


def test_nsp_short_target_length_and_too_short_sequences():
    docs = make_corpus(100, seed=2)
    short = examples_for(docs, max_num_tokens=125, short_seq_prob=1.0)
    full = examples_for(docs, max_num_tokens=125, short_seq_prob=0.0)
    mean = lambda pairs: np.mean([len(ex.tokens_a) + len(ex.tokens_b) for _, ex in pairs])  # noqa: E731
    assert mean(short) < 0.8 * mean(full)
    from ptmcli.errors import PtmError

    with pytest.raises(PtmError, match="too short"):
        nsp_examples(docs[0], 1, random.Random(0), lambda r: docs[1])


# --- packing ---------------------------------------------------------------------------------


def pack_all(packer, docs, starts=None):
    blocks = []
    for k, doc in enumerate(docs):
        blocks.extend(packer.add_document(doc, None if starts is None else starts[k]))
    return blocks


def test_packing_keeps_every_token_once_in_order_within_the_budget():
    sep = -7
    docs = make_corpus(60, seed=3)
    docs[5] = [np.arange(5 * 100000, 5 * 100000 + 300)]  # one sentence longer than a block
    packer = SentencePacker(126, separator_id=sep)
    blocks = pack_all(packer, docs) + list(packer.flush())
    assert all(1 <= len(b.tokens) <= 126 for b in blocks)
    stream = np.concatenate([b.tokens for b in blocks])
    assert np.array_equal(stream[stream != sep], np.concatenate([np.concatenate(d) for d in docs]))
    for block in blocks:  # separators only between documents, never at a block edge
        tokens = block.tokens
        assert tokens[0] != sep and tokens[-1] != sep
        for k in np.flatnonzero(tokens == sep):
            assert tokens[k - 1] // 100000 != tokens[k + 1] // 100000
    # A sentence that fits is never split: each block starts at a sentence start (or in the long one).
    sentence_starts = {int(s[0]) for d in docs for s in d}
    assert all(int(b.tokens[0]) in sentence_starts or b.tokens[0] // 100000 == 5 for b in blocks)


def test_packing_state_round_trip_resumes_identically():
    docs = make_corpus(40, seed=4)
    starts = [[s % 2 == 0 for s in doc] for doc in docs]
    whole = SentencePacker(50, separator_id=-1, track_word_starts=True)
    expected = pack_all(whole, docs, starts) + list(whole.flush())

    first = SentencePacker(50, separator_id=-1, track_word_starts=True)
    got = pack_all(first, docs[:17], starts[:17])
    saved = json.loads(json.dumps(first.state_dict()))
    assert saved["tokens"], "the carry buffer should hold a partial block here"
    resumed = SentencePacker(50, separator_id=-1, track_word_starts=True)
    resumed.load_state_dict(saved)
    got += pack_all(resumed, docs[17:], starts[17:]) + list(resumed.flush())
    assert len(got) == len(expected)
    for mine, ref in zip(got, expected, strict=True):
        assert np.array_equal(mine.tokens, ref.tokens)
        assert np.array_equal(mine.word_starts, ref.word_starts)
    from ptmcli.errors import PtmError

    with pytest.raises(PtmError, match="seq-len"):
        SentencePacker(60, separator_id=-1, track_word_starts=True).load_state_dict(saved)


# --- collation -------------------------------------------------------------------------------


def test_collate_pairs_layout():
    examples = [
        PairExample(np.array([10, 11]), np.array([12]), False, np.array([True, False]), np.array([True])),
        PairExample(np.array([20]), np.array([21, 22, 23]), True, np.array([True]), np.array([True, False, False])),
    ]
    batch = collate_pairs(examples, CLS, SEP, PAD, seq_len=16)
    assert batch["input_ids"].tolist() == [[CLS, 10, 11, SEP, 12, SEP, PAD], [CLS, 20, SEP, 21, 22, 23, SEP]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1] * 6 + [0], [1] * 7]
    assert batch["special_tokens_mask"].tolist() == [
        [True, False, False, True, False, True, True],
        [True, False, True, False, False, False, True],
    ]
    assert batch["word_starts"].tolist()[0] == [True, True, False, True, True, True, True]
    assert batch["nsp_labels"].tolist() == [0, 1]
    assert collate_pairs(examples, CLS, SEP, PAD, seq_len=16, pad_to_longest=False)["input_ids"].shape == (2, 16)
    with pytest.raises(ValueError, match="seq_len 5"):
        collate_pairs(examples, CLS, SEP, PAD, seq_len=5)


def test_collate_blocks_marks_document_separators_special():
    sep = SEP
    packer = SentencePacker(8, separator_id=sep)
    blocks = pack_all(packer, [[np.array([10, 11])], [np.array([20, 21, 22])], [np.array([30] * 6)]])
    blocks += list(packer.flush())
    batch = collate_blocks(blocks, CLS, SEP, PAD, seq_len=10)
    assert batch["input_ids"].tolist() == [[CLS, 10, 11, SEP, 20, 21, 22, SEP], [CLS] + [30] * 6 + [SEP]]
    assert batch["special_tokens_mask"][0].tolist() == [True, False, False, True, False, False, False, True]
    assert "word_starts" not in batch and "nsp_labels" not in batch
    assert batch["token_type_ids"].sum() == 0
