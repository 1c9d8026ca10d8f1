"""UniLM (`--objective unilm`): the four attention patterns, the encoder under them, the regime draw, the CLI run."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.models.bert import BertConfig, BertModel
from ptmcli.pretraining.unified_lm import (
    BIDIRECTIONAL,
    LEFT_TO_RIGHT,
    REGIMES,
    RIGHT_TO_LEFT,
    SEQ2SEQ,
    attention_pattern,
    draw_regime,
    parse_mix,
)

# [CLS] a1 a2 [SEP] b1 b2 [SEP] [PAD]: segment 0 is [CLS] A [SEP], segment 1 is B [SEP].
PADDING = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
SEGMENTS = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])


def _rows(text: str) -> list[list[bool]]:
    return [[c == "x" for c in row] for row in text.split()]


@pytest.mark.parametrize("regime,expected", [
    (BIDIRECTIONAL, "xxxxxxx. xxxxxxx. xxxxxxx. xxxxxxx. xxxxxxx. xxxxxxx. xxxxxxx. xxxxxxxx"),
    (LEFT_TO_RIGHT, "x....... xx...... xxx..... xxxx.... xxxxx... xxxxxx.. xxxxxxx. xxxxxxxx"),
    (RIGHT_TO_LEFT, "xxxxxxx. .xxxxxx. ..xxxxx. ...xxxx. ....xxx. .....xx. ......x. .......x"),
    # A (rows 0-3) sees A alone; B (rows 4-6) sees A and its own left.
    (SEQ2SEQ, "xxxx.... xxxx.... xxxx.... xxxx.... xxxxx... xxxxxx.. xxxxxxx. xxxxxxxx"),
])
def test_each_regimes_mask_position_by_position(regime, expected):
    mask = attention_pattern(regime, PADDING, SEGMENTS)
    assert mask.dtype == torch.bool and mask.shape == (1, 8, 8)
    # Rows are queries, columns keys; the padded key is hidden from every real query, and the padded
    # query sees itself at least, so no row is empty.
    assert mask[0].tolist() == _rows(expected)


def test_patterns_are_per_row():
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    segments = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])
    mask = attention_pattern(SEQ2SEQ, padding, segments)
    assert mask[0].tolist() == _rows("xx... xx... xxx.. xxxx. xxxxx")
    assert mask[1].tolist() == _rows("xx... xx... xxx.. xxxx. xxx.x")
    assert attention_pattern(LEFT_TO_RIGHT, padding)[1].tolist() == _rows("x.... xx... xxx.. xxxx. xxx.x")


def _encoder(**overrides) -> BertModel:
    torch.manual_seed(0)
    values = {"vocab_size": 50, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
              "hidden_dropout": 0.0, "attention_dropout": 0.0, **overrides}
    return BertModel(BertConfig(**values)).eval()


def _changed(model, ids, changed, regime, padding=None, segments=None):
    """Per position, whether the output moved when ``ids`` became ``changed``."""
    padding = torch.ones_like(ids) if padding is None else padding
    segments = torch.zeros_like(ids) if segments is None else segments
    mask = attention_pattern(regime, padding, segments)
    with torch.no_grad():
        before, after = model(ids, segments, mask), model(changed, segments, mask)
    return ~torch.isclose(before, after, atol=1e-6, rtol=0).all(-1)[0]


def test_a_token_never_sees_the_side_its_regime_hides():
    model = _encoder()
    ids = torch.randint(5, 50, (1, 10), generator=torch.Generator().manual_seed(1))
    later = ids.clone()
    later[0, 7:] = (later[0, 7:] + 1) % 45 + 5
    earlier = ids.clone()
    earlier[0, :3] = (earlier[0, :3] + 1) % 45 + 5
    assert not _changed(model, ids, later, LEFT_TO_RIGHT)[:7].any()
    assert _changed(model, ids, later, LEFT_TO_RIGHT)[7:].all()
    assert _changed(model, ids, later, BIDIRECTIONAL).all()
    assert not _changed(model, ids, earlier, RIGHT_TO_LEFT)[3:].any()
    assert _changed(model, ids, earlier, RIGHT_TO_LEFT)[:3].all()
    assert _changed(model, ids, earlier, BIDIRECTIONAL).all()


def test_seq2seq_source_does_not_see_the_target_which_sees_the_source_and_its_left():
    model = _encoder()
    ids = torch.randint(5, 50, (1, 10), generator=torch.Generator().manual_seed(2))
    segments = torch.tensor([[0] * 4 + [1] * 6])
    in_b = ids.clone()
    in_b[0, 7] = (in_b[0, 7] + 1) % 45 + 5
    moved = _changed(model, ids, in_b, SEQ2SEQ, segments=segments)
    assert not moved[:7].any() and moved[7:].all(), moved  # A and B's left part unmoved; B from there on moved
    in_a = ids.clone()
    in_a[0, 2] = (in_a[0, 2] + 1) % 45 + 5
    assert _changed(model, ids, in_a, SEQ2SEQ, segments=segments).all()  # all of A and all of B see A


def test_padding_in_a_pattern_matches_the_padding_mask_and_additive_matches_boolean():
    model = _encoder()
    ids = torch.randint(5, 50, (2, 9), generator=torch.Generator().manual_seed(3))
    padding = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    real = padding.bool()
    pattern = attention_pattern(BIDIRECTIONAL, padding)
    additive = torch.zeros(pattern.shape).masked_fill(~pattern, float("-inf"))
    with torch.no_grad():
        plain, patterned, added = model(ids, None, padding), model(ids, None, pattern), model(ids, None, additive[:, None])
    assert torch.allclose(plain[real], patterned[real], atol=1e-6) and torch.isfinite(patterned).all()
    assert torch.allclose(patterned, added, atol=1e-6)
    # The written-out CPU path of training with attention dropout takes both kinds alike.
    model = _encoder(attention_dropout=0.2).train()
    torch.manual_seed(4)
    first = model(ids, None, attention_pattern(LEFT_TO_RIGHT, padding))
    torch.manual_seed(4)
    pattern = attention_pattern(LEFT_TO_RIGHT, padding)
    second = model(ids, None, torch.zeros(pattern.shape).masked_fill(~pattern, -1e9))
    assert torch.allclose(first, second, atol=1e-5) and torch.isfinite(first).all()


def test_regime_shares_follow_the_mix_and_draws_are_keyed():
    mix = parse_mix("1/3,1/6,1/6,1/3")
    draws = np.array([draw_regime(mix, 7, first) for first in range(0, 12000 * 4, 4)])
    shares = np.bincount(draws, minlength=4) / len(draws)
    assert np.allclose(shares, mix, atol=0.015), shares
    assert all(draw_regime(mix, 7, first) == draws[first // 4] for first in range(0, 400, 4))
    only = np.array([draw_regime((0.0, 0.0, 0.0, 1.0), 1, first) for first in range(500)])
    assert (only == SEQ2SEQ).all()
    half = np.array([draw_regime(parse_mix("0.5, 0, 0.5, 0"), 3, first) for first in range(4000)])
    assert set(half.tolist()) == {BIDIRECTIONAL, RIGHT_TO_LEFT} and abs((half == 0).mean() - 0.5) < 0.03


@pytest.mark.parametrize("text,why", [("1/3,1/3,1/3", "four shares"), ("0.5,0.5,0.5,0", "must sum to 1"),
                                      ("1/2,x,0,1/2", "fraction"), ("1,-1,0.5,0.5", "negative")])
def test_bad_mixes_are_refused(text, why):
    from ptmcli.errors import PtmError

    with pytest.raises(PtmError, match=why):
        parse_mix(text)


@pytest.fixture(scope="module")
def sample():
    from ptmcli.pretraining.sample import sample_data

    return sample_data()


def _task(sample, batch_size: int, mix: str = "1/4,1/4,1/4,1/4"):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok = sample
    cfg = SimpleNamespace(objective="unilm", seq_len=48, seed=3, short_seq_prob=0.1, whole_word_mask=False, batch_size=batch_size,
                          mask_prob=0.15, eval_batches=1, compile=False, unilm_mix=mix)
    dataset = ShardDataset.open(shards)
    rows = np.arange(len(dataset))
    return OBJECTIVES["unilm"].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:], [("heldout", dataset, rows[:2])],
                                                     get_family("bert")))


def test_batches_take_each_regimes_layout_and_mask_15_percent(sample):
    task = _task(sample, 8)
    cls, sep = task.specials.cls_id, task.specials.sep_id
    seen, masked, maskable = set(), 0, 0
    for batch in task.next_micro_batches(24):
        regime = batch["regime"]
        assert isinstance(regime, int)  # the host chooses the attention pattern without reading the device
        seen.add(regime)
        ids, labels, types, padding = batch["input_ids"], batch["mlm_labels"], batch["token_type_ids"], batch["attention_mask"]
        original = torch.where(labels != -100, labels, ids)
        assert (original[:, 0] == cls).all()
        seps = ((original == sep) & padding.bool()).sum(1)
        if regime in (LEFT_TO_RIGHT, RIGHT_TO_LEFT):
            assert (seps == 1).all() and (types == 0).all(), REGIMES[regime]  # [CLS] A B [SEP]: one segment
        else:
            assert (seps == 2).all() and (types.sum(1) > 0).all(), REGIMES[regime]  # [CLS] A [SEP] B [SEP]
        special = (original == cls) | (original == sep) | ~padding.bool()
        assert not (labels != -100)[special].any()
        masked += int((labels != -100).sum())
        maskable += int((~special).sum())
    assert seen == {0, 1, 2, 3}
    assert abs(masked / maskable - 0.15) < 0.03


def test_each_rank_builds_exactly_its_slice_of_the_global_batch(sample):
    from ptmcli.training.distributed import GlobalBatchShare, share_of, slice_batch
    from ptmcli.training.launch import Distributed

    whole = _task(sample, 9)
    ranks = [Distributed(rank=r, world_size=3) for r in range(3)]
    parts = [GlobalBatchShare(_task(sample, 9), rank) for rank in ranks]
    for _step in range(4):
        full = whole.next_micro_batches(2)
        shares = [part.next_micro_batches(2) for part in parts]
        for index, batch in enumerate(full):
            for rank, share in zip(ranks, shares):
                expected = slice_batch(batch, share_of(9, rank), 9)
                assert all(torch.equal(share[index][key], value) if isinstance(value, torch.Tensor) else share[index][key] == value
                           for key, value in expected.items())
        assert all(part.state_dict() == whole.state_dict() for part in parts)


TINY = ["--arch", "bert", "--preset", "bert-tiny", "--objective", "unilm", "--hidden-size", "32", "--num-heads", "2",
        "--intermediate-size", "64", "--seq-len", "48", "--batch-size", "4", "--grad-accum", "2", "--eval-rows", "4",
        "--eval-batches", "4", "--log-every", "2", "--no-progress", "--peak-tflops", "1", "--seed", "5", "--lr", "3e-3"]


def test_pretrain_unilm_runs_and_resumes_bit_for_bit(tmp_path, capsys):
    common = ["pretrain", *TINY, "--max-steps", "4", "--unilm-mix", "1/4,1/4,1/4,1/4"]
    code, err = ptm(capsys, *common, "-o", tmp_path / "full")
    assert code == 0, err
    assert "objective unilm" in err
    assert read_config(list_step_checkpoints(tmp_path / "full")[-1])["objective"] == "unilm"
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--save-every", "2", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0, err
    full = load_file(str(list_step_checkpoints(tmp_path / "full")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


@pytest.mark.parametrize("args,expected", [
    (["--objective", "unilm", "--unilm-mix", "1/2,1/2,1/2,0"], "--unilm-mix 1/2,1/2,1/2,0: the shares"),
    (["--objective", "unilm", "--unilm-mix", "1/2,1/2"], "four shares are needed"),
    (["--unilm-mix", "1/4,1/4,1/4,1/4"], "--objective mlm+nsp does not use it; it applies to --objective unilm"),
])
def test_bad_proportions_exit_2_with_one_line(tmp_path, capsys, args, expected):
    code, err = ptm(capsys, "pretrain", "--arch", "bert", "--preset", "bert-tiny", *args, "--max-steps", "1", "--no-progress",
                    "--eval-rows", "0", "--peak-tflops", "1", "-o", tmp_path / "run")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
