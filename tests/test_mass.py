"""MASS: the fragment's size and place on real text, the aligned decoder rows, the loss positions, and
`ptm pretrain --arch bart --objective mass` end to end (resume is exact, bad settings refused)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli_err as ptm
from safetensors.torch import load_file
from test_span_corruption import SHARED_DATA, TINY, WIKITEXT, sample_text, sentinel_corpus

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.pretraining.mass import fragment_length, mass_example
from ptmcli.training.distributed import Distributed, GlobalBatchShare, share_of, slice_batch

MASK = 30_000  # not an id of the tokenizers here, so every mask in a row was put there
PREFIX, SUFFIX = (7,), (8,)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sample")
    return sentinel_corpus(root, sample_text(root))


@pytest.fixture(scope="module", params=["wikitext-2", "sample"])
def blocks(request, tmp_path_factory, corpus):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.examples import ExampleStream

    if request.param == "wikitext-2":
        if not SHARED_DATA.is_dir():
            pytest.skip(f"{SHARED_DATA} is absent: WikiText-2 statistics need the shared data sets")
        shards, _ = sentinel_corpus(tmp_path_factory.mktemp("wikitext"), WIKITEXT, max_lines=1500)
    else:
        shards = corpus[0]
    dataset = ShardDataset.open(str(shards))
    stream = ExampleStream(dataset, np.arange(len(dataset)), "mlm", 130, 5, separator_id=3)
    return [block.tokens for _ in range(10) for block in stream.take(60).examples]


def _examples(blocks, ratio=0.5):
    return [(tokens, mass_example(tokens, MASK, ratio, 7, number, PREFIX, SUFFIX)) for number, tokens in enumerate(blocks)]


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_one_contiguous_fragment_of_its_share_placed_uniformly(blocks, ratio):
    masked = total = 0
    places = []
    for tokens, ex in _examples(blocks, ratio):
        n = len(tokens)
        assert ex.size == fragment_length(n, ratio) and abs(ex.size - ratio * n) <= 0.5 + (n < 3)
        chosen = np.flatnonzero(ex.source == MASK)
        # Contiguous, inside the text (never the framing), where the example says.
        assert np.array_equal(chosen, np.arange(ex.start, ex.start + ex.size))
        assert len(PREFIX) <= ex.start and ex.start + ex.size <= len(PREFIX) + n
        framed = np.concatenate([PREFIX, tokens, SUFFIX])
        assert np.array_equal(np.delete(ex.source, chosen), np.delete(framed, chosen))
        masked, total = masked + ex.size, total + n
        if n - ex.size > 0:
            places.append((ex.start - len(PREFIX)) / (n - ex.size))
    assert abs(masked / total - ratio) < 0.01
    # A uniform start: its place among the possible ones averages a half, a quarter of them in each quarter.
    places = np.array(places)
    assert abs(places.mean() - 0.5) < 0.04 and all(abs(((places >= q) & (places < q + 0.25)).mean() - 0.25) < 0.06
                                                   for q in (0.0, 0.25, 0.5))


def test_the_decoder_predicts_exactly_the_fragment_at_its_own_positions(blocks):
    for tokens, ex in _examples(blocks):
        framed = np.concatenate([PREFIX, tokens, SUFFIX])
        assert len(ex.source) == len(ex.decoder_input) == len(ex.labels) == len(framed)
        fragment = np.arange(ex.start, ex.start + ex.size)
        # Loss positions: exactly the fragment's, each labelled with the token the encoder lost there.
        assert np.array_equal(np.flatnonzero(ex.labels != -100), fragment)
        assert np.array_equal(ex.labels[fragment], framed[fragment])
        # The decoder reads the fragment shifted right by one; everything else is masked.
        assert np.array_equal(ex.decoder_input[fragment[1:]], framed[fragment[:-1]])
        outside = np.ones(len(framed), dtype=bool)
        outside[fragment[1:]] = False
        assert (ex.decoder_input[outside] == MASK).all()


def test_draws_are_keyed_by_seed_and_example_number(blocks):
    starts = {mass_example(blocks[3], MASK, 0.5, 7, number).start for number in range(20)}
    assert len(starts) > 3
    assert mass_example(blocks[3], MASK, 0.5, 7, 3).start == mass_example(blocks[3], MASK, 0.5, 7, 3).start
    assert fragment_length(1, 0.5) == 1 and fragment_length(2, 0.9) == 1 and fragment_length(0, 0.5) == 0


def _task(corpus, batch_size: int = 10, seq_len: int = 64):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok = corpus
    dataset = ShardDataset.open(str(shards))
    cfg = SimpleNamespace(objective="mass", seq_len=seq_len, batch_size=batch_size, seed=3, eval_batches=1, compile=False,
                          preset="bart-tiny", mass_ratio=0.5)
    rows = np.arange(len(dataset))
    return OBJECTIVES["mass"].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:],
                                                     [("heldout", dataset, rows[:2])], get_family("bart")))


def test_batches_and_the_models_loss_count_only_the_fragment(corpus):
    from ptmcli.models.registry import get_family
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    task = _task(corpus)
    batch = task.next_micro_batches(1)[0]
    assert batch["input_ids"].shape == batch["decoder_input_ids"].shape == batch["labels"].shape
    assert batch["input_ids"].shape[1] <= 64
    real = batch["labels"] != -100
    masked = (batch["input_ids"] == task.mask_id) & batch["attention_mask"].bool()
    assert torch.equal(real, masked) and torch.equal(real.sum(1), batch["target_lengths"])
    lengths = batch["attention_mask"].sum(1)
    assert ((real.sum(1).float() / (lengths - 2).float() - 0.5).abs() <= 0.5 / (lengths - 2).float() + 1e-6).all()
    again = _task(corpus)
    for row, block in enumerate(again.stream.take(10).examples):
        source = batch["input_ids"][row][:lengths[row]]
        assert source[0] == task.prefix[0] and source[-1] == task.suffix[0]
        assert torch.equal(batch["labels"][row][real[row]], torch.from_numpy(block.tokens)[real[row][1:lengths[row] - 1]])
    tokenizer = PtmTokenizer.load(corpus[1])
    family = get_family("bart")
    torch.manual_seed(0)
    config = family.model_config("bart-tiny", tokenizer, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1)
    model = family.build(config, tokenizer)
    out = task._forward(model, batch)
    assert int(out["lm_count"]) == int(real.sum()) == task.normalizers([batch])["lm"]


def test_each_rank_builds_exactly_its_slice_of_the_global_batch(corpus):
    whole = _task(corpus)
    ranks = [Distributed(rank=r, world_size=3) for r in range(3)]
    parts = [GlobalBatchShare(_task(corpus), rank) for rank in ranks]
    for _step in range(3):
        full = whole.next_micro_batches(2)
        shares = [part.next_micro_batches(2) for part in parts]
        for index, batch in enumerate(full):
            for rank, share in zip(ranks, shares):
                expected = slice_batch(batch, share_of(10, rank), 10)
                assert all(torch.equal(share[index][key], value) for key, value in expected.items())


def test_pretrain_mass_resumes_exactly(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--objective", "mass", "--lr", "3e-3",
              "--mass-ratio", "0.4"]
    code, err = ptm(capsys, *common, "-o", tmp_path / "whole", "--max-steps", "4")
    assert code == 0, err
    assert "objective mass" in err
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut", "--max-steps", "4")
    assert code == 0, err
    last = list_step_checkpoints(tmp_path / "whole")[-1]
    assert read_config(last)["objective"] == "mass"
    whole = load_file(str(last / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


@pytest.mark.parametrize("args,expected", [
    (["--arch", "bert", "--objective", "mass"], "--objective 'mass' is not available for --arch bert"),
    (["--arch", "gpt", "--objective", "mass"], "--objective 'mass' is not available for --arch gpt"),
    (["--arch", "bart", "--objective", "mass", "--mass-ratio", "0"], "--mass-ratio 0.0: must be between 0 and 1"),
    (["--arch", "bart", "--objective", "mass", "--mass-ratio", "1"], "--mass-ratio 1.0: must be between 0 and 1"),
    (["--arch", "bart", "--mass-ratio", "0.3"], "--mass-ratio 0.3: --objective denoise does not use it; it applies to "
                                                "--objective mass"),
    (["--arch", "bart", "--objective", "mass", "--noise-density", "0.3"], "it applies to --objective span-corruption"),
])
def test_bad_settings_are_refused(corpus, tmp_path, capsys, args, expected):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *args, "--max-steps", "1",
                    "--no-progress", "--eval-rows", "0")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
