"""Two-sequence examples: collation, the global-batch token normaliser, pair shards and pair corpora."""

from __future__ import annotations

import copy
import gzip
import json
import os
from itertools import islice

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.data.encode import encode_to_shards, summary_line
from ptmcli.data.pairs import encode_pairs, iter_pairs
from ptmcli.data.seq2seq import (
    IGNORE_INDEX,
    Seq2SeqCollator,
    fit_sequence,
    global_target_tokens,
    target_tokens,
    token_normalised_loss,
)
from ptmcli.data.shard_writer import PAIRS, PairChunk, ShardWriter
from ptmcli.data.shards import PairRow, ShardDataset
from ptmcli.errors import PtmError
from ptmcli.textio.records import ReadStats

PAD, START, EOS = 0, 1, 2
VOCAB = 50
TOKENIZER = {"sha256": "ab" * 32, "vocab_size": 1000, "kind": "wordpiece"}


# -- collation --------------------------------------------------------------------------------


def test_each_side_pads_to_its_own_longest_and_the_target_shifts_right():
    collate = Seq2SeqCollator(pad_id=PAD, decoder_start_id=START, eos_id=EOS)
    batch = collate([([10, 11, 12, 13, 14], [20]), ([10], [20, 21, 22])])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 14, EOS], [10, EOS, PAD, PAD, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[20, EOS, IGNORE_INDEX, IGNORE_INDEX], [20, 21, 22, EOS]]
    assert batch["decoder_input_ids"].tolist() == [[START, 20, PAD, PAD], [START, 20, 21, 22]]
    assert batch["target_lengths"].tolist() == [2, 4]
    assert target_tokens(batch) == 6
    assert all(t.dtype == torch.int64 for t in batch.values())
    # Each decoder position is followed by its label: the decoder input is the label row shifted right.
    labels, inputs = batch["labels"], batch["decoder_input_ids"]
    real = labels != IGNORE_INDEX
    assert torch.equal(inputs[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])


def test_padding_to_a_multiple_of_8_and_rows_without_an_eos():
    collate = Seq2SeqCollator(pad_id=PAD, decoder_start_id=START, pad_to_multiple_of=8)
    batch = collate([(list(range(3, 12)), [5, 6, 7])])
    assert batch["input_ids"].shape == (1, 16) and batch["labels"].shape == (1, 8)
    assert batch["labels"][0, :3].tolist() == [5, 6, 7] and batch["target_lengths"].tolist() == [3]
    assert batch["decoder_input_ids"][0, :3].tolist() == [START, 5, 6]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_truncation_keeps_the_end_of_sequence_token():
    assert fit_sequence([5, 6, 7, 8, 9], 3, EOS).tolist() == [5, 6, EOS]
    assert fit_sequence([5, 6, EOS], 3, EOS).tolist() == [5, 6, EOS], "a framed row gets no second eos"
    assert fit_sequence([5, 6, 7, 8, EOS], 3, EOS).tolist() == [5, 6, EOS]
    assert fit_sequence([5, 6, 7], None, EOS).tolist() == [5, 6, 7, EOS]
    assert fit_sequence([5, 6, 7], 2, None).tolist() == [5, 6]
    assert fit_sequence([], 4, EOS).tolist() == [EOS]
    with pytest.raises(ValueError, match="no room"):
        fit_sequence([5], 0, EOS)
    collate = Seq2SeqCollator(PAD, START, EOS, max_source_length=4, max_target_length=2)
    batch = collate([(np.arange(3, 20, dtype=np.int32), np.arange(30, 40, dtype=np.int32))])
    assert batch["input_ids"].tolist() == [[3, 4, 5, EOS]] and batch["labels"].tolist() == [[30, EOS]]


# -- the loss over a global batch ----------------------------------------------------------------


class ToySeq2Seq(nn.Module):
    """Enough of an encoder-decoder to have gradients: mean source embedding added to each decoder input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 16)
        self.out = nn.Linear(16, VOCAB)

    def forward(self, batch) -> torch.Tensor:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        source = (self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1)
        hidden = torch.tanh(self.embed(batch["decoder_input_ids"]) + source[:, None])
        logits = self.out(hidden)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def examples(count: int = 12) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(5)
    # Targets from 1 to 30 tokens: micro-batches differ a lot in how many target tokens they hold.
    return [(rng.integers(3, VOCAB, rng.integers(2, 12)).tolist(), rng.integers(3, VOCAB, 1 + (i * 7) % 30).tolist())
            for i in range(count)]


def gradients(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def accumulate(model: nn.Module, micro_batches, norm: float) -> list[torch.Tensor]:
    for batch in micro_batches:
        token_normalised_loss(model(batch), norm).backward()
    return gradients(model)


def test_accumulating_unequal_micro_batches_gives_the_one_batch_gradient():
    model = ToySeq2Seq()
    collate = Seq2SeqCollator(PAD, START, EOS, pad_to_multiple_of=8)
    data = examples()
    whole = collate(data)
    expected = accumulate(model, [whole], global_target_tokens([whole]))
    # Micro-batches of unequal sizes, each padded to its own lengths.
    micro = [collate(data[a:b]) for a, b in ((0, 1), (1, 4), (4, 5), (5, 12))]
    assert len({target_tokens(b) for b in micro}) == 4
    norm = global_target_tokens(micro)
    assert norm == target_tokens(whole)
    for got, want in zip(accumulate(model, micro, norm), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # Averaging each micro-batch on its own weights short targets' tokens more: a different gradient.
    for batch in micro:
        (model(batch) / target_tokens(batch) / len(micro)).backward()
    assert any(not torch.allclose(got, want, rtol=1e-3, atol=1e-5) for got, want in zip(gradients(model), expected))


def test_ranks_summing_their_shares_give_the_one_batch_gradient():
    model = ToySeq2Seq()
    collate = Seq2SeqCollator(PAD, START, EOS)
    data = examples(10)
    expected = accumulate(model, [collate(data)], target_tokens(collate(data)))
    # Two ranks, two micro-batches each, every one of another size; the count is over all four.
    shares = [[collate(data[0:1]), collate(data[1:5])], [collate(data[5:7]), collate(data[7:10])]]
    norm = global_target_tokens([b for share in shares for b in share])
    per_rank = [accumulate(model, share, norm) for share in shares]
    # DDP averages the ranks' gradients of world_size * loss: their sum.
    world = len(shares)
    averaged = [sum(world * rank[i] for rank in per_rank) / world for i in range(len(expected))]
    for got, want in zip(averaged, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _count_on_rank(rank: int, world_size: int, store_path: str, counts: list[int], results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        labels = torch.full((1, counts[rank] + 2), IGNORE_INDEX)
        labels[0, : counts[rank]] = 7
        results.put((rank, global_target_tokens([{"labels": labels}], across_ranks=True)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_the_count_is_summed_across_ranks_that_collate_their_own_batches(tmp_path):
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    counts = [3, 11]
    processes = [context.Process(target=_count_on_rank, args=(r, 2, str(tmp_path / "store"), counts, results))
                 for r in range(2)]
    for process in processes:
        process.start()
    got = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert got == {0: 14.0, 1: 14.0}
    assert global_target_tokens([{"labels": torch.full((2, 3), IGNORE_INDEX)}]) == 1.0  # no NaN from an empty batch


# -- pair shards --------------------------------------------------------------------------------


def random_pairs(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 1000, int(rng.integers(1, 60))).astype(np.int32),
             rng.integers(0, 1000, int(rng.integers(1, 40))).astype(np.int32)) for _ in range(count)]


def as_pair_chunk(pairs) -> PairChunk:
    return PairChunk(
        source_ids=np.concatenate([s for s, _ in pairs]),
        source_lengths=np.array([len(s) for s, _ in pairs], dtype=np.int64),
        target_ids=np.concatenate([t for _, t in pairs]),
        target_lengths=np.array([len(t) for _, t in pairs], dtype=np.int64),
    )


def write_pairs(directory, pairs, shard_size: int = 4 << 10, batch_rows: int = 5, chunk: int = 7) -> dict:
    os.makedirs(directory, exist_ok=True)
    writer = ShardWriter(str(directory), shard_size_bytes=shard_size, batch_rows=batch_rows, kind=PAIRS)
    for start in range(0, len(pairs), chunk):
        writer.add(as_pair_chunk(pairs[start:start + chunk]))
    writer.close()
    manifest = writer.manifest(TOKENIZER, ["synthetic"])
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def pair_corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pairs") / "corpus"
    pairs = random_pairs(90)
    return directory, pairs, write_pairs(directory, pairs)


def test_pair_shards_give_back_what_was_written(pair_corpus):
    directory, pairs, manifest = pair_corpus
    assert manifest["kind"] == "pairs" and len(manifest["shards"]) >= 3
    assert manifest["tokens"] == sum(len(s) for s, _ in pairs)
    assert manifest["target_tokens"] == sum(len(t) for _, t in pairs)
    assert all({"rows", "tokens", "target_tokens", "bytes", "sha256"} <= set(entry) for entry in manifest["shards"])
    dataset = ShardDataset.open(directory, verify=True, kind="pairs")
    assert len(dataset) == 90 and dataset.kind == "pairs" and not dataset.has_word_starts
    assert (dataset.num_tokens, dataset.num_target_tokens) == (manifest["tokens"], manifest["target_tokens"])
    for i in np.random.default_rng(1).permutation(90):
        row = dataset[i]
        assert isinstance(row, PairRow) and row.source_ids.dtype == np.int32
        np.testing.assert_array_equal(row.source_ids, pairs[i][0])
        np.testing.assert_array_equal(row.target_ids, pairs[i][1])
    assert copy.deepcopy(dataset)[5].target_ids.tolist() == pairs[5][1].tolist()  # a spawned worker's copy
    batch = Seq2SeqCollator(PAD, START, EOS)([dataset[0], dataset[1]])  # rows unpack as (source, target)
    assert batch["labels"][0, : len(pairs[0][1])].tolist() == pairs[0][1].tolist()
    with pa.ipc.open_stream(directory / manifest["shards"][0]["file"]) as reader:
        table = reader.read_all()
    assert table.schema.names == ["input_ids", "target_ids"]
    assert table.column("target_ids")[0].as_py() == pairs[0][1].tolist()


def test_each_kind_is_opened_only_as_itself(pair_corpus, tmp_path):
    directory = pair_corpus[0]
    with pytest.raises(PtmError, match="kind is 'pairs'; language-model shards"):
        ShardDataset.open(directory)
    lm = tmp_path / "lm"
    lm.mkdir()
    writer = ShardWriter(str(lm))
    writer.close()
    (lm / "manifest.json").write_text(json.dumps(writer.manifest(TOKENIZER, [])))
    with pytest.raises(PtmError, match="kind is 'lm'; source/target pair shards"):
        ShardDataset.open(lm, kind="pairs")
    with pytest.raises(TypeError, match="PairChunk"):
        ShardWriter(str(tmp_path)).add(as_pair_chunk(random_pairs(2)))


@pytest.mark.parametrize("problem,match", [
    (lambda m: m["shards"][0].update(target_tokens=m["shards"][0]["target_tokens"] + 1), "shard holds .* target tokens"),
    (lambda m: m.update(target_tokens=m["target_tokens"] - 1), "totals say .* target tokens"),
    (lambda m: m.pop("target_tokens"), "no 'target_tokens'"),
])
def test_pair_counts_are_checked(pair_corpus, tmp_path, problem, match):
    import shutil

    directory = tmp_path / "c"
    shutil.copytree(pair_corpus[0], directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    problem(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PtmError, match=match) as caught:
        ShardDataset.open(directory, kind="pairs")
    assert "\n" not in str(caught.value)


# -- pair corpora ------------------------------------------------------------------------------


def test_tsv_and_jsonl_pairs(tmp_path):
    (tmp_path / "a.tsv").write_text("source\ttarget\nhello world\tbonjour le monde\n\nthank you\tmerci\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as file:
        file.write('{"src": "one", "tgt": "un"}\n{"src": "two", "tgt": "deux", "id": 2}\n')
    got = [(p.source, p.target, p.line) for p in iter_pairs([str(tmp_path / "a.tsv")])]
    assert got == [("hello world", "bonjour le monde", 2), ("thank you", "merci", 4)]
    got = [(p.source, p.target) for p in iter_pairs([str(tmp_path / "b.jsonl.gz")], fields=("src", "tgt"))]
    assert got == [("one", "un"), ("two", "deux")]


@pytest.mark.parametrize("content,fmt,match", [
    ("a\tb\nno tab here\n", "auto", r"x:2: expected source<TAB>target, found 1"),
    ("a\tb\tc\n", "tsv", r"x:1: expected source<TAB>target, found 3"),
    ('{"source": "a", "target": "b"}\n{"source": "a"}\n', "auto", r"x:2: no field 'target' \(fields: source\)"),
    ('{"source": "a", "target": null}\n', "jsonl", r"x:1: field 'target' holds null, not text"),
    ('{"source": "a", "target": "b"}\n{"source": \n', "jsonl", r"x:2: not valid JSON"),
])
def test_bad_pair_lines_are_named(tmp_path, content, fmt, match):
    path = tmp_path / "x"
    path.write_text(content)
    with pytest.raises(PtmError, match=match):
        list(iter_pairs([str(path)], fmt))
    stats = ReadStats()
    assert len(list(iter_pairs([str(path)], fmt, errors="skip", stats=stats))) == content.count("\n") - 1
    assert stats.skipped_lines == 1


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.tokenization.train import train_tokenizer

    directory = tmp_path_factory.mktemp("tok") / "tok"
    train_tokenizer(islice(iter_texts([str(SAMPLE)]), 300), "wordpiece", 400).save(directory)
    return directory, PtmTokenizer.load(directory)


def test_encoding_pairs_into_shards(tokenizer, tmp_path):
    directory, tok = tokenizer
    lines = ["the history of\tthe city", "  \t the river", "a new world\tis born", "one\ttwo"]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    manifest = encode_to_shards([str(tmp_path / "pairs.tsv")], str(directory), str(tmp_path / "shards"),
                                pairs=True, progress=False)
    assert manifest["kind"] == "pairs" and manifest["rows"] == 3
    assert manifest["input"]["pairs"] == 4 and manifest["input"]["empty_pairs"] == 1
    assert manifest["options"]["pairs"] is True
    dataset = ShardDataset.open(tmp_path / "shards", verify=True, kind="pairs")
    dataset.check_tokenizer(tok)
    kept = [line.split("\t") for line in lines if line.split("\t")[0].strip()]
    for row, (source, target) in zip(dataset, kept):
        assert row.source_ids.tolist() == tok.encode_batch([source])[0]
        assert row.target_ids.tolist() == tok.encode_batch([target])[0]
    assert summary_line(manifest, 1.0).startswith(f"encoded 3 pairs ({manifest['tokens']} source and "
                                                  f"{manifest['target_tokens']} target tokens)")
    assert "1 pairs with an empty side dropped" in summary_line(manifest, 1.0)
    with pytest.raises(PtmError, match="pairs are read as"):
        encode_to_shards([str(tmp_path / "pairs.tsv")], str(directory), str(tmp_path / "other"), pairs=True,
                         fmt="wikiextractor", progress=False)
    assert not (tmp_path / "other").exists()
    chunk = encode_pairs(tok, ["", "a b"], ["x", ""])
    assert chunk.rows == 0 and chunk.empty_pairs == 2


def test_ranks_encode_their_share_of_pairs(tokenizer, tmp_path, monkeypatch):
    directory = tokenizer[0]
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    records = [{"source": f"the history of the city {i}", "target": f"new world {i}"} for i in range(25)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    inputs = [str(tmp_path / "pairs.jsonl")]
    single = encode_to_shards(inputs, str(directory), str(tmp_path / "single"), pairs=True)
    out = tmp_path / "ranked"
    encode_to_shards(inputs, str(directory), str(out), pairs=True, rank=1, world_size=2)
    merged = encode_to_shards(inputs, str(directory), str(out), pairs=True, rank=0, world_size=2)
    dataset = ShardDataset.open(out, verify=True, kind="pairs")
    assert merged["rows"] == len(dataset) == single["rows"] == 25 and merged["world_size"] == 2
    assert (merged["tokens"], merged["target_tokens"]) == (single["tokens"], single["target_tokens"])
    assert merged["input"]["pairs"] == 25


def test_tokenize_encode_pairs_through_the_cli(tokenizer, tmp_path, capsys):
    from conftest import run_cli_err

    directory, tok = tokenizer
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"en": f"the cat sat {i}", "de": f"die katze sass {i} mal"}) + "\n" for i in range(5)),
                    encoding="utf-8")
    code, err = run_cli_err(capsys, "tokenize", "encode", data, "--pairs", "--pair-fields", "en,de", "-t", directory,
                            "-o", tmp_path / "shards", "--no-progress")
    assert code == 0, err
    dataset = ShardDataset.open(tmp_path / "shards", kind="pairs")
    source, target = dataset[0]
    assert [source.tolist(), target.tolist()] == [list(ids) for ids in tok.encode_batch(["the cat sat 0", "die katze sass 0 mal"])]
    code, err = run_cli_err(capsys, "tokenize", "encode", data, "--pairs", "--pair-fields", "en", "-t", directory,
                            "-o", tmp_path / "other", "--no-progress")
    assert code == 2 and "--pair-fields 'en'" in err and not (tmp_path / "other").exists()
