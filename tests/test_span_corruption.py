"""T5's span corruption: tokenizers with sentinels, the corruption's statistics on real text, the batches,
and `ptm pretrain --arch bart --objective span-corruption` end to end (resume is exact, bad settings refused)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.pretraining.span_corruption import (
    SpanSettings,
    corrupt,
    random_segmentation,
    restore,
    tokenizer_sentinels,
)
from ptmcli.training.distributed import Distributed, GlobalBatchShare, share_of, slice_batch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WIKITEXT = SHARED_DATA / "wikitext-2-raw" / "wiki.valid.raw"
SENTINELS = np.arange(20_000, 20_100)  # ids no tokenizer here has, so every sentinel in a row was put there
TINY = ["--arch", "bart", "--preset", "bart-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
        "--num-layers", "1", "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "1",
        "--log-every", "2", "--no-progress", "--threads", "1"]


def sentinel_corpus(root: Path, text: Path, special: str = "roberta-sentinels", max_lines: int | None = None,
                    vocab_size: int = 1500) -> tuple[Path, Path]:
    """(shards, tokenizer) of ``text`` with a unigram tokenizer trained through `ptm tokenize train`'s request."""
    from ptmcli.commands.tokenize_train import TrainRequest, run
    from ptmcli.data.encode import encode_to_shards

    root.mkdir(parents=True, exist_ok=True)
    if max_lines is not None:
        with open(text, encoding="utf-8") as handle:
            (root / "text.txt").write_text("".join(islice(handle, max_lines)), encoding="utf-8")
        text = root / "text.txt"
    run(TrainRequest(inputs=(str(text),), output=str(root / "tok"), model="unigram", vocab_size=vocab_size,
                     special_tokens=special))
    encode_to_shards([str(text)], str(root / "tok"), str(root / "shards"), workers=1, progress=False)
    return root / "shards", root / "tok"


def sample_text(root: Path, articles: int = 12) -> Path:
    """The first ``articles`` of ptm's bundled Wikipedia sample."""
    from ptmcli.pretraining.sample import SAMPLE

    lines, docs = [], 0
    with open(SAMPLE, encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            docs += line.startswith("</doc>")
            if docs == articles:
                break
    root.mkdir(parents=True, exist_ok=True)
    (root / "wiki.txt").write_text("".join(lines), encoding="utf-8")
    return root / "wiki.txt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """The bundled sample with a roberta-sentinels tokenizer: what the CLI runs train on."""
    root = tmp_path_factory.mktemp("sample")
    return sentinel_corpus(root, sample_text(root))


@pytest.fixture(scope="module", params=["wikitext-2", "sample"])
def blocks(request, tmp_path_factory, corpus):
    """Packed 128-token blocks of real text: WikiText-2 (validation split) and the bundled sample."""
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


def test_special_sets_t5_and_roberta_sentinels_carry_100_sentinels(tmp_path, capsys):
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    text = sample_text(tmp_path, articles=3)
    code, err = ptm(capsys, "tokenize", "train", text, "-o", tmp_path / "t5", "--model", "unigram", "--special-tokens", "t5",
                    "--vocab-size", "800")
    assert code == 0, err
    tok = PtmTokenizer.load(tmp_path / "t5")
    # T5's layout of the roles: pad 0, eos 1, unk 2; the sentinels follow, in order.
    assert (tok.pad_id, tok.eos_id, tok.unk_id, tok.bos_id, tok.mask_id) == (0, 1, 2, None, None)
    assert tokenizer_sentinels(tok) == list(range(3, 103))
    assert tok.token_to_id("<extra_id_100>") is None
    # A sentinel in text is one token, as the other special tokens are.
    ids = tok.encode_batch(["one <extra_id_7> two"])[0]
    assert tok.token_to_id("<extra_id_7>") in ids
    code, err = ptm(capsys, "tokenize", "train", text, "-o", tmp_path / "rs", "--model", "bpe", "--special-tokens",
                    "roberta-sentinels", "--vocab-size", "800")
    assert code == 0, err
    tok = PtmTokenizer.load(tmp_path / "rs")
    assert None not in (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.mask_id)
    assert len(tokenizer_sentinels(tok)) == 100


def test_random_segmentation_cuts_every_way_equally_often():
    # 6 items in 3 non-empty runs: C(5, 2) = 10 cuttings, each about 1/10 of the time.
    seen: dict[tuple, int] = {}
    for number in range(5000):
        lengths = random_segmentation(6, 3, 11, 301, number)
        assert lengths.sum() == 6 and (lengths > 0).all() and len(lengths) == 3
        seen[tuple(lengths)] = seen.get(tuple(lengths), 0) + 1
    assert len(seen) == 10
    assert all(abs(count / 5000 - 0.1) < 0.02 for count in seen.values()), seen


def _corrupt_all(blocks, **settings):
    chosen = SpanSettings(**settings)
    return chosen, [(tokens, corrupt(tokens, SENTINELS, chosen, 7, number)) for number, tokens in enumerate(blocks)]


def test_corrupts_its_share_in_spans_of_mean_length_3(blocks):
    settings, done = _corrupt_all(blocks)
    total = sum(len(tokens) for tokens, _ in done)
    noise = sum(int(c.noise.sum()) for _, c in done)
    assert total > 50_000
    assert abs(noise / total - 0.15) < 0.01, noise / total
    spans = np.concatenate([c.span_lengths for _, c in done])
    # The mean is exactly what the counts make: round(n * 0.15) tokens in round(that / 3) spans. Rounding the
    # number of spans (about 6 a block) moves a block's mean by at most 3 * 0.5 / 5.5 = 0.27, and the blocks'
    # lengths vary, so the errors partly cancel: 0.15 bounds the overall mean's distance from 3.
    assert spans.sum() == noise
    assert abs(spans.mean() - 3.0) < 0.15, spans.mean()
    # Every cutting of a block's noise into its spans equally likely: a span is one token long with
    # probability (S - 1) / (N - 1) for N > 1 noise tokens in S spans (always, for N = 1).
    expected_ones = sum(len(c.span_lengths) * ((len(c.span_lengths) - 1) / (c.noise.sum() - 1) if c.noise.sum() > 1 else 1)
                        for _, c in done)
    assert abs((spans == 1).sum() / expected_ones - 1) < 0.1
    for tokens, c in done:
        n, k = settings.counts(len(tokens))
        assert (int(c.noise.sum()), len(c.span_lengths)) == (n, k)
        # T5's placement: kept tokens first, a noise span last.
        assert not c.noise[0] and c.noise[-1]


def test_source_and_target_interleave_back_to_the_text(blocks):
    _, done = _corrupt_all(blocks)
    for tokens, c in done:
        k = len(c.span_lengths)
        in_source = c.source[c.source >= SENTINELS[0]]
        in_target = c.target[c.target >= SENTINELS[0]]
        # Sentinels in order: one per span in the source; in the target, one before each span and one closing.
        assert np.array_equal(in_source, SENTINELS[:k]) and np.array_equal(in_target, SENTINELS[:k + 1])
        assert c.target[0] == SENTINELS[0] and c.target[-1] == SENTINELS[k]
        assert len(c.source) == len(tokens) - int(c.noise.sum()) + k
        assert len(c.target) == int(c.noise.sum()) + k + 1
        assert np.array_equal(restore(c.source, c.target, SENTINELS), tokens)
        # The kept tokens are the source's, in order; the noise tokens the target's.
        assert np.array_equal(tokens[~c.noise], c.source[c.source < SENTINELS[0]])
        assert np.array_equal(tokens[c.noise], c.target[c.target < SENTINELS[0]])


def test_draws_are_keyed_by_seed_and_example_number(blocks):
    tokens, settings = blocks[3], SpanSettings()
    first = corrupt(tokens, SENTINELS, settings, 7, 3).source
    assert np.array_equal(first, corrupt(tokens, SENTINELS, settings, 7, 3).source)
    assert not np.array_equal(first, corrupt(tokens, SENTINELS, settings, 7, 4).source)
    assert not np.array_equal(first, corrupt(tokens, SENTINELS, settings, 8, 3).source)


def test_other_densities_and_span_lengths(blocks):
    for density, mean in ((0.3, 5.0), (0.05, 1.0)):
        _, done = _corrupt_all(blocks, noise_density=density, mean_span_length=mean)
        noise = sum(int(c.noise.sum()) for _, c in done)
        assert abs(noise / sum(len(t) for t, _ in done) - density) < 0.01
        spans = np.concatenate([c.span_lengths for _, c in done])
        assert abs(spans.mean() - mean) < 0.05 * mean + 0.02
        assert all(np.array_equal(restore(c.source, c.target, SENTINELS), t) for t, c in done)


def _task(corpus, batch_size: int = 10, seq_len: int = 64):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok = corpus
    dataset = ShardDataset.open(str(shards))
    cfg = SimpleNamespace(objective="span-corruption", seq_len=seq_len, batch_size=batch_size, seed=3, eval_batches=1,
                          compile=False, preset="bart-tiny", noise_density=0.15, mean_span_length=3.0)
    rows = np.arange(len(dataset))
    return OBJECTIVES["span-corruption"].build(ObjectiveContext(cfg, PtmTokenizer.load(tok), dataset, rows[2:],
                                                                [("heldout", dataset, rows[:2])], get_family("bart")))


def test_batches_frame_the_source_and_shift_the_target_behind_the_decoder_start(corpus):
    task = _task(corpus)
    assert task.stream.seq_len - 2 > 64
    batch = task.next_micro_batches(1)[0]
    labels, decoder, source = batch["labels"], batch["decoder_input_ids"], batch["input_ids"]
    assert source.shape[1] <= 64 and labels.shape[1] <= 64
    assert task.decoder_start_id == task.end_id  # BART's decoder starts from </s>
    assert (decoder[:, 0] == task.decoder_start_id).all()
    real = labels != -100
    assert torch.equal(decoder[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])
    assert (decoder[~real] == task.pad_id).all() and torch.equal(real.sum(1), batch["target_lengths"])
    again = _task(corpus)
    drawn = again.stream.take(10)
    sentinels = task.sentinels
    for row, block in enumerate(drawn.examples):
        framed = source[row][batch["attention_mask"][row].bool()].numpy()
        target = labels[row][real[row]].numpy()
        assert framed[0] == task.prefix[0] and framed[-1] == task.end_id and target[-1] == task.end_id
        # A block may hold more than --seq-len tokens: as many as fit corrupted (T5 sizes its inputs so).
        assert len(block.tokens) <= task.stream.seq_len - 2
        assert np.array_equal(restore(framed[1:-1], target[:-1], sentinels), block.tokens)
    assert task.normalizers(task.next_micro_batches(2))["lm"] > 0


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
        assert all(part.state_dict() == whole.state_dict() for part in parts)


def test_pretrain_span_corruption_resumes_exactly(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["pretrain", "--data", shards, "--tokenizer", tok, *TINY, "--objective", "span-corruption", "--lr", "3e-3",
              "--noise-density", "0.2"]
    code, err = ptm(capsys, *common, "-o", tmp_path / "whole", "--max-steps", "4")
    assert code == 0, err
    assert "objective span-corruption" in err
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut", "--max-steps", "4")
    assert code == 0, err
    last = list_step_checkpoints(tmp_path / "whole")[-1]
    assert read_config(last)["objective"] == "span-corruption"
    whole = load_file(str(last / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_a_tokenizer_without_sentinels_is_refused_naming_the_fix(tmp_path, capsys):
    from conftest import sample_corpus

    (tmp_path / "plain").mkdir()
    shards, tok = sample_corpus(tmp_path / "plain", articles=3, vocab_size=600, tokenizer_lines=1000)
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *TINY,
                    "--objective", "span-corruption", "--max-steps", "1", "--eval-rows", "0")
    assert code == 2 and "the tokenizer has none" in err and "--special-tokens t5" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,expected", [
    (["--arch", "bert", "--objective", "span-corruption"], "--objective 'span-corruption' is not available for --arch bert"),
    (["--arch", "bart", "--objective", "span-corruption", "--noise-density", "0"], "--noise-density 0.0: must be between 0 and 1"),
    (["--arch", "bart", "--objective", "span-corruption", "--noise-density", "1.5"], "--noise-density 1.5: must be between 0 and 1"),
    (["--arch", "bart", "--objective", "span-corruption", "--mean-span-length", "0.5"], "--mean-span-length 0.5: must be at least 1"),
    (["--arch", "bart", "--noise-density", "0.3"], "--noise-density 0.3: --objective denoise does not use it; it applies to "
                                                   "--objective span-corruption"),
    (["--arch", "bart", "--objective", "span-corruption", "--infill-ratio", "0.5"], "it applies to --objective denoise"),
])
def test_bad_settings_are_refused(corpus, tmp_path, capsys, args, expected):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *args, "--max-steps", "1",
                    "--no-progress", "--eval-rows", "0")
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_t5_family_is_listed_before_it_exists_without_breaking(corpus, tmp_path, capsys):
    from ptmcli.models.registry import FAMILIES
    from ptmcli.pretraining.objective_table import OBJECTIVES

    assert "t5" in OBJECTIVES["span-corruption"].families and "t5" in OBJECTIVES["mass"].families
    if "t5" in FAMILIES:
        pytest.skip("the t5 family is registered: its own tests train it")
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", "--arch", "t5",
                    "--max-steps", "1", "--no-progress")
    assert code == 2 and "unknown architecture 't5'" in err and len(err.strip().splitlines()) == 1, err


def test_sentinel_count_limits_the_spans(corpus, tmp_path, capsys):
    # 100 sentinels at 15% in spans of 1: a --seq-len of 1024 makes some 180 spans.
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", "--arch", "bart",
                    "--objective", "span-corruption", "--mean-span-length", "1", "--seq-len", "1024", "--max-position-embeddings",
                    "1024", "--max-steps", "1",
                    "--no-progress", "--eval-rows", "0")
    assert code == 2 and "sentinels" in err and len(err.strip().splitlines()) == 1, err
