"""BART's denoising: the corruptions' statistics on real text, the batches' framing, the rows each rank
builds, and `ptm pretrain --arch bart --objective denoise` end to end (loss falls, resume is exact)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli_err as ptm
from conftest import sample_corpus
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.pretraining.denoise_task import SentenceBlockStream, sentence_lengths
from ptmcli.pretraining.denoising import Denoiser, NoiseSettings, word_starts_of
from ptmcli.training.distributed import Distributed, GlobalBatchShare, share_of, slice_batch

MASK = 10_000  # not an id of the corpus' tokenizer, so every mask in a source was put there
POOL = np.arange(5, 900)
TINY = ["--arch", "bart", "--preset", "bart-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
        "--num-layers", "1", "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "1",
        "--log-every", "2", "--no-progress", "--threads", "1"]
NOTHING = {"infill_ratio": 0.0, "permute_sentences": 0.0, "mask_random": 0.0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=12, vocab_size=1500, tokenizer_lines=3000)


@pytest.fixture(scope="module")
def blocks(corpus):
    """400 packed blocks of real text: (tokens, word starts, sentence lengths)."""
    from ptmcli.data.shards import ShardDataset

    dataset = ShardDataset.open(str(corpus[0]))
    assert dataset.has_word_starts
    stream = SentenceBlockStream(dataset, np.arange(len(dataset)), 128, 5, separator_id=3)
    out = []
    for _ in range(10):
        drawn, lengths = stream.take(40)
        out += [(b.tokens, b.word_starts, n) for b, n in zip(drawn.examples, lengths)]
    return out


def corrupt(blocks, **settings):
    denoiser = Denoiser(NoiseSettings(**settings), MASK, POOL)
    return [(tokens, starts, denoiser(tokens, starts, lengths, 7, number)) for number, (tokens, starts, lengths) in enumerate(blocks)]


def corrupt_with_sentences(blocks, **settings):
    denoiser = Denoiser(NoiseSettings(**settings), MASK, POOL)
    return [(tokens, lengths, denoiser(tokens, starts, lengths, 7, number)) for number, (tokens, starts, lengths) in enumerate(blocks)]


def test_blocks_record_their_sentences():
    assert sentence_lengths([[4, 0, 9], [4, 9, 20], [-1, 0, 1], [7, 0, 5]]) == [9, 12, 5]
    assert sentence_lengths([[4, 30, 40]]) == [10]


def test_infilling_covers_its_share_in_poisson_spans_each_one_mask(blocks):
    done = corrupt(blocks, permute_sentences=0.0, mask_random=0.0)
    covered = sum(int(c.span_tokens.sum()) for _, _, c in done)
    total = sum(len(t) for t, _, _ in done)
    assert abs(covered / total - 0.3) < 0.02, covered / total
    # Whole words, exactly the budget of each example.
    for (tokens, starts, c), (_, _, lengths) in zip(done, blocks):
        assert int(c.span_words.sum()) == round(0.3 * int(word_starts_of(len(tokens), starts, lengths).sum()))
    # An example's first draws are plain Poisson(3.5) draws: with ~25 words to cover, three draws almost
    # never reach the budget (later ones are biased short: the draw that crosses it tends to be long).
    draws = np.concatenate([c.span_words[:3] for _, _, c in done if len(c.span_words) > 3])
    assert len(draws) > 1000
    assert abs(draws.mean() - 3.5) < 0.2, draws.mean()
    assert abs((draws == 0).mean() - math.exp(-3.5)) < 0.015  # zero-length spans are kept: they insert a mask
    nonzero = draws[draws > 0]
    assert abs(nonzero.mean() - 3.5 / (1 - math.exp(-3.5))) < 0.2
    for tokens, _, c in done:
        # One mask per span, zero-length ones included; what no span covers is kept, in order.
        assert int((c.source == MASK).sum()) == len(c.span_words) == len(c.span_tokens)
        assert len(c.source) == len(tokens) - int(c.span_tokens.sum()) + len(c.span_words)
        # Between masks stand the original's tokens, each mask skipping its span's.
        at = 0
        for index, piece in enumerate(np.split(c.source, np.flatnonzero(c.source == MASK))):
            if index:
                at, piece = at + int(c.span_tokens[index - 1]), piece[1:]
            assert np.array_equal(tokens[at:at + len(piece)], piece)
            at += len(piece)
        assert at == len(tokens)


def test_random_replacement_takes_its_share_of_the_masks(blocks):
    done = corrupt(blocks, permute_sentences=0.0, mask_random=0.1)
    masks = sum(len(c.span_words) for _, _, c in done)
    kept = sum(int((c.source == MASK).sum()) for _, _, c in done)
    assert abs(1 - kept / masks - 0.1) < 0.03


def test_token_masking_replaces_whole_words_token_for_token(blocks):
    for tokens, starts, c in corrupt(blocks, **NOTHING, mask_ratio=0.2):
        assert len(c.source) == len(tokens)
        assert (c.source[c.masked] == MASK).all()
        assert np.array_equal(np.delete(c.source, c.masked), np.delete(tokens, c.masked))
        chosen = np.zeros(len(tokens), dtype=bool)
        chosen[c.masked] = True
        # Whole words: a chosen token's word is chosen from its start on.
        inside = ~starts & np.r_[False, np.ones(len(tokens) - 1, dtype=bool)]
        assert np.array_equal(chosen[1:][inside[1:]], chosen[:-1][inside[1:]])


def test_deletion_removes_exactly_the_chosen_tokens(blocks):
    total = deleted = 0
    for tokens, _, c in corrupt(blocks, **NOTHING, delete_ratio=0.2):
        assert (MASK not in c.source) and np.array_equal(c.source, np.delete(tokens, c.deleted))
        total, deleted = total + len(tokens), deleted + len(c.deleted)
    assert abs(deleted / total - 0.2) < 0.03


def test_permutation_keeps_the_multiset_of_sentences(blocks):
    moved = 0
    for tokens, lengths, c in corrupt_with_sentences(blocks, infill_ratio=0.0, mask_random=0.0):
        bounds = np.cumsum([0, *lengths])
        sentences = [tuple(tokens[bounds[i]:bounds[i + 1]]) for i in range(len(lengths))]
        assert sorted(c.order.tolist()) == list(range(len(lengths)))
        assert np.array_equal(c.source, np.concatenate([sentences[i] for i in c.order]))
        moved += bool((c.order != np.arange(len(lengths))).any())
    assert moved > len(blocks) // 2


def test_rotation_is_a_rotation(blocks):
    rotated = 0
    for tokens, _, c in corrupt(blocks, **NOTHING, rotate_ratio=0.5):
        assert np.array_equal(c.source, np.roll(tokens, -c.rotation))
        assert 0 <= c.rotation < len(tokens)
        rotated += c.rotation > 0
    assert abs(rotated / len(blocks) - 0.5) < 0.1


def test_draws_are_keyed_by_seed_and_example_number(blocks):
    tokens, starts, lengths = blocks[3]
    denoiser = Denoiser(NoiseSettings(mask_ratio=0.1, delete_ratio=0.1, rotate_ratio=0.5), MASK, POOL)
    first = denoiser(tokens, starts, lengths, 7, 3).source
    assert np.array_equal(first, denoiser(tokens, starts, lengths, 7, 3).source)
    assert not np.array_equal(first, denoiser(tokens, starts, lengths, 7, 4).source)
    assert not np.array_equal(first, denoiser(tokens, starts, lengths, 8, 3).source)


def _task(corpus, batch_size: int = 10, seq_len: int = 64):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok = corpus
    dataset = ShardDataset.open(str(shards))
    cfg = SimpleNamespace(objective="denoise", preset="bart-tiny", seq_len=seq_len, batch_size=batch_size, seed=3, eval_batches=1, compile=False,
                          **{**NoiseSettings().__dict__, "rotate_ratio": 0.2, "mask_ratio": 0.05, "delete_ratio": 0.05})
    rows = np.arange(len(dataset))
    return OBJECTIVES["denoise"].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:],
                                                        [("heldout", dataset, rows[:2])], get_family("bart")))


def test_batches_frame_source_and_target_and_shift_the_decoder_input(corpus):
    task = _task(corpus)
    batch = task.next_micro_batches(1)[0]
    start, end, pad = task.start_id, task.end_id, task.pad_id
    labels, decoder = batch["labels"], batch["decoder_input_ids"]
    assert task.decoder_start_id == end  # BART's decoder starts from </s>
    assert (decoder[:, 0] == end).all()
    real = labels != -100
    assert torch.equal(decoder[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])
    assert (decoder[~real] == pad).all() and torch.equal(real.sum(1), batch["target_lengths"])
    for row in range(labels.shape[0]):
        target = labels[row][real[row]]
        source = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        assert target[0] == start and target[-1] == end and source[0] == start and source[-1] == end
    # The target is the original text: the example stream's own blocks, framed.
    again = _task(corpus)
    drawn, _ = again.stream.take(10)
    for row, block in enumerate(drawn.examples):
        assert labels[row][real[row]].tolist() == [start, *block.tokens.tolist(), end]
    assert task.normalizers(task.next_micro_batches(2))["lm"] > 0


def test_each_rank_builds_exactly_its_slice_of_the_global_batch(corpus):
    whole = _task(corpus)
    ranks = [Distributed(rank=r, world_size=3) for r in range(3)]
    parts = [GlobalBatchShare(_task(corpus), rank) for rank in ranks]
    assert all(part.in_part for part in parts)
    for _step in range(4):
        full = whole.next_micro_batches(2)
        shares = [part.next_micro_batches(2) for part in parts]
        for index, batch in enumerate(full):
            for rank, share in zip(ranks, shares):
                expected = slice_batch(batch, share_of(10, rank), 10)
                assert all(torch.equal(share[index][key], value) for key, value in expected.items())
        counts = [part.shared_counts(share) for part, share in zip(parts, shares)]
        assert sum(c["lm"] for c in counts) == whole.normalizer_counts(full)["lm"]
        assert all(part.state_dict() == whole.state_dict() for part in parts)


def test_pretrain_bart_denoise_loss_falls_and_is_recorded(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "run"
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "30",
                    "--lr", "5e-3", "--warmup-steps", "2")
    assert code == 0, err
    assert "objective denoise" in err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["lm_loss"] for r in records if "lm_loss" in r]
    assert {"lm_loss", "lm_acc"} <= set(records[0])
    assert losses[-1] < losses[0] - 0.8, losses
    config = read_config(list_step_checkpoints(run)[-1])
    assert config["objective"] == "denoise" and config["arch"] == "bart"


def test_resume_is_exact(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--lr", "3e-3", "--rotate-ratio", "0.3",
              "--delete-ratio", "0.1"]
    assert ptm(capsys, *common, "-o", tmp_path / "whole", "--max-steps", "4")[0] == 0
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut", "--max-steps", "4")
    assert code == 0, err
    whole = load_file(str(list_step_checkpoints(tmp_path / "whole")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


@pytest.mark.parametrize("args,expected", [
    (["--arch", "bert", "--objective", "denoise"], "--objective 'denoise' is not available for --arch bert"),
    (["--arch", "gpt", "--infill-ratio", "0.5"], "--infill-ratio 0.5: --objective clm does not use it; it applies to --objective denoise"),
    (["--arch", "bart", "--poisson-lambda", "0"], "--poisson-lambda 0.0: must be positive"),
    (["--arch", "bart", "--mask-ratio", "0.5", "--delete-ratio", "0.4"], "together they exceed every word"),
])
def test_bad_settings_are_refused(corpus, tmp_path, capsys, args, expected):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *args, "--max-steps", "1",
                    "--no-progress")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
