"""Shard files (writer and reader) and the shuffled, rank-split, resumable row order."""

from __future__ import annotations

import copy
import json
import os
from itertools import islice
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptmcli.data.encode_workers import EncodedChunk
from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shard_writer import ShardWriter
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError

TOKENIZER = {"sha256": "ab" * 32, "vocab_size": 1000, "kind": "wordpiece"}


def random_documents(count: int, seed: int = 0, max_length: int = 300) -> list[dict]:
    rng = np.random.default_rng(seed)
    documents = []
    for _ in range(count):
        length = int(rng.integers(1, max_length))
        cuts = np.sort(rng.choice(np.arange(1, length), size=min(length - 1, int(rng.integers(0, 6))), replace=False))
        documents.append({
            "input_ids": rng.integers(0, 1000, size=length).astype(np.int32),
            "sentence_ends": np.append(cuts, length).astype(np.int32),
            "word_starts": rng.random(length) < 0.7,
        })
    return documents


def as_chunk(documents: list[dict], word_starts: bool) -> EncodedChunk:
    return EncodedChunk(
        token_ids=np.concatenate([d["input_ids"] for d in documents]),
        doc_lengths=np.array([len(d["input_ids"]) for d in documents], dtype=np.int64),
        sentence_ends=np.concatenate([d["sentence_ends"] for d in documents]),
        doc_sentences=np.array([len(d["sentence_ends"]) for d in documents], dtype=np.int64),
        word_starts=np.concatenate([d["word_starts"] for d in documents]) if word_starts else None,
    )


def write_corpus(directory, documents, word_starts=True, shard_size=16 << 10, batch_rows=7, chunk=5) -> dict:
    os.makedirs(directory, exist_ok=True)
    writer = ShardWriter(str(directory), shard_size_bytes=shard_size, word_starts=word_starts, batch_rows=batch_rows)
    for start in range(0, len(documents), chunk):
        writer.add(as_chunk(documents[start:start + chunk], word_starts))
    writer.close()
    manifest = writer.manifest(TOKENIZER, ["synthetic"])
    with open(os.path.join(directory, "manifest.json"), "w") as file:
        json.dump(manifest, file)
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards") / "corpus"
    documents = random_documents(120)
    manifest = write_corpus(directory, documents)
    return directory, documents, manifest


def test_random_access_equals_what_was_written(corpus):
    directory, documents, manifest = corpus
    assert len(manifest["shards"]) >= 3  # rolled over by size
    dataset = ShardDataset.open(directory, verify=True)
    assert len(dataset) == dataset.num_rows == len(documents)
    assert dataset.num_tokens == sum(len(d["input_ids"]) for d in documents)
    assert dataset.vocab_size == 1000 and dataset.tokenizer_sha256 == TOKENIZER["sha256"]
    for i in np.random.default_rng(1).permutation(len(documents)):
        row = dataset[i]
        assert row.input_ids.dtype == np.int32 and row.sentence_ends.dtype == np.int32
        np.testing.assert_array_equal(row.input_ids, documents[i]["input_ids"])
        np.testing.assert_array_equal(row.sentence_ends, documents[i]["sentence_ends"])
        np.testing.assert_array_equal(row.word_starts, documents[i]["word_starts"])
    np.testing.assert_array_equal(dataset[-1].input_ids, documents[-1]["input_ids"])
    with pytest.raises(IndexError):
        dataset[len(documents)]


def test_shards_respect_the_size_limit_and_manifest_counts(corpus):
    directory, documents, manifest = corpus
    for shard in manifest["shards"]:
        size = os.path.getsize(directory / shard["file"])
        assert size == shard["bytes"]
        assert size <= 16 << 10 or shard["rows"] <= 10  # only a single oversized batch may exceed it
    assert sum(s["rows"] for s in manifest["shards"]) == manifest["rows"] == len(documents)
    assert sum(s["tokens"] for s in manifest["shards"]) == manifest["tokens"]


def test_files_are_plain_arrow_ipc_streams(corpus):
    directory, documents, manifest = corpus
    batches = []
    for shard in manifest["shards"]:
        with pa.ipc.open_stream(str(directory / shard["file"])) as reader:
            batches.extend(reader)
    table = pa.Table.from_batches(batches)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("sentence_ends").type == pa.list_(pa.int32())
    assert table.schema.field("word_starts").type == pa.list_(pa.bool_())
    assert table.num_rows == len(documents)
    assert table.column("input_ids")[5].as_py() == documents[5]["input_ids"].tolist()
    assert table.column("word_starts")[9].as_py() == documents[9]["word_starts"].tolist()
    # Batches hold batch_rows=7 rows, or fewer when the next row would pass 16KB / 32 = 512 -> 1024 tokens.
    row = 0
    for batch in batches[:-1]:
        tokens = sum(len(documents[i]["input_ids"]) for i in range(row, row + batch.num_rows))
        next_tokens = len(documents[row + batch.num_rows]["input_ids"])
        assert batch.num_rows == 7 or tokens + next_tokens > 1024 or batch.num_rows == 1
        assert tokens <= 1024 or batch.num_rows == 1
        row += batch.num_rows


def test_without_word_starts(tmp_path):
    documents = random_documents(10, seed=3)
    write_corpus(tmp_path / "c", documents, word_starts=False)
    dataset = ShardDataset.open(tmp_path / "c")
    assert not dataset.has_word_starts and dataset[3].word_starts is None
    np.testing.assert_array_equal(dataset[3].input_ids, documents[3]["input_ids"])


def test_reopens_when_copied(corpus):
    dataset = ShardDataset.open(corpus[0])
    clone = copy.deepcopy(dataset)  # what a spawned data-loader worker receives
    np.testing.assert_array_equal(clone[7].input_ids, dataset[7].input_ids)


def _rewrite_manifest(directory, change) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _copy_corpus(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_verify_detects_a_modified_shard(corpus, tmp_path):
    directory = _copy_corpus(corpus[0], tmp_path / "c")
    victim = directory / corpus[2]["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(PtmError, match=rf"{victim.name}.*sha256"):
        ShardDataset.open(directory, verify=True)


@pytest.mark.parametrize("problem,match", [
    (lambda m: m.update(format="something-else"), "format is 'something-else'"),
    (lambda m: m.update(version=2), "unsupported ptm-shards version 2"),
    (lambda m: m.update(kind="labeled"), "kind is 'labeled'"),
    (lambda m: m.update(rows=m["rows"] + 1), "totals say"),
    (lambda m: m["shards"][0].update(rows=m["shards"][0]["rows"] - 1), "part-00000.arrow: shard holds"),
    (lambda m: m["shards"][1].update(file="part-09999.arrow"), "part-09999.arrow: shard file listed in manifest.json is missing"),
])
def test_bad_manifests_are_one_line_errors(corpus, tmp_path, problem, match):
    directory = _copy_corpus(corpus[0], tmp_path / "c")
    _rewrite_manifest(directory, problem)
    with pytest.raises(PtmError, match=match) as caught:
        ShardDataset.open(directory)
    assert "\n" not in str(caught.value)


def test_missing_and_truncated_files(corpus, tmp_path):
    with pytest.raises(PtmError, match="does not exist"):
        ShardDataset.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PtmError, match="no manifest.json"):
        ShardDataset.open(tmp_path / "empty")
    directory = _copy_corpus(corpus[0], tmp_path / "c")
    shard = directory / "part-00002.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(PtmError, match="part-00002.arrow: shard file has"):
        ShardDataset.open(directory)


def test_check_tokenizer(corpus):
    dataset = ShardDataset.open(corpus[0])
    dataset.check_tokenizer(SimpleNamespace(sha256=TOKENIZER["sha256"], vocab_size=1000))
    with pytest.raises(PtmError, match="vocabulary size 1000"):
        dataset.check_tokenizer(SimpleNamespace(sha256=TOKENIZER["sha256"], vocab_size=999))
    with pytest.raises(PtmError, match="re-encode"):
        dataset.check_tokenizer(SimpleNamespace(sha256="cd" * 32, vocab_size=1000))


# -- row order ------------------------------------------------------------------------------


def take(order: ShuffledOrder, count: int) -> list[int]:
    return list(islice(iter(order), count))


def test_each_epoch_is_a_fresh_permutation():
    order = ShuffledOrder(50, seed=7)
    first, second = take(order, 50), take(order, 50)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second
    assert take(ShuffledOrder(50, seed=7), 50) == first  # seeded
    assert take(ShuffledOrder(50, seed=8), 50) != first
    assert take(ShuffledOrder(50, seed=7, shuffle=False), 50) == list(range(50))
    assert order.state_dict()["epoch"] == 2 and order.state_dict()["position"] == 0


def test_ranks_are_disjoint_and_cover_the_epoch():
    rows, world = 103, 4
    per_rank = [take(ShuffledOrder(rows, seed=1, rank=r, world_size=world), rows // world) for r in range(world)]
    seen = [i for part in per_rank for i in part]
    assert len(seen) == len(set(seen)) == rows // world * world
    # all ranks walk the same permutation in lockstep
    permutation = ShuffledOrder(rows, seed=1).permutation(0)
    assert [part[0] for part in per_rank] == permutation[:world].tolist()


def test_resume_mid_epoch_gives_exactly_the_rest():
    full = take(ShuffledOrder(37, seed=3), 37 * 3)
    order = ShuffledOrder(37, seed=3)
    head = take(order, 50)  # into the second epoch
    state = json.loads(json.dumps(order.state_dict()))
    assert state["epoch"] == 1 and state["position"] == 13
    resumed = ShuffledOrder(37, seed=3)
    resumed.load_state_dict(state)
    assert head + take(resumed, 37 * 3 - 50) == full


def test_resume_with_another_world_size():
    rows = 60
    old = [ShuffledOrder(rows, seed=5, rank=r, world_size=4) for r in range(4)]
    consumed = [i for o in old for i in take(o, 6)]
    state = old[0].state_dict()
    assert all(o.state_dict() == state for o in old) and state["position"] == 24
    new = [ShuffledOrder(rows, seed=5, rank=r, world_size=3) for r in range(3)]
    for o in new:
        o.load_state_dict(state)
    rest = [i for o in new for i in take(o, (rows - 24) // 3)]
    assert sorted(consumed + rest) == list(range(rows))
    assert all(o.state_dict() == {**state, "epoch": 1, "position": 0} for o in new)


def test_cursor_errors():
    with pytest.raises(PtmError, match="fewer than the 4"):
        ShuffledOrder(3, seed=0, world_size=4)
    order = ShuffledOrder(10, seed=0)
    with pytest.raises(PtmError, match="saved for 11 rows"):
        order.load_state_dict({"epoch": 0, "position": 2, "num_rows": 11})
    with pytest.raises(PtmError, match="needs integer"):
        order.load_state_dict({"position": 2})


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 40), old_world=st.integers(1, 4), new_world=st.integers(1, 4),
       steps=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_order_properties(rows, old_world, new_world, steps, seed):
    if rows < max(old_world, new_world):
        return
    # One epoch across old_world ranks is a disjoint cover of all but < old_world rows.
    epoch = [take(ShuffledOrder(rows, seed, r, old_world), rows // old_world) for r in range(old_world)]
    flat = [i for part in epoch for i in part]
    assert len(set(flat)) == len(flat) == rows - rows % old_world
    # Stop after `steps` rows per rank, resume on new_world ranks: the rest of the
    # epoch is covered exactly once and nothing read before is read again.
    steps = min(steps, rows // old_world)
    old = [ShuffledOrder(rows, seed, r, old_world) for r in range(old_world)]
    before = [i for o in old for i in take(o, steps)]
    state = old[0].state_dict()
    new = [ShuffledOrder(rows, seed, r, new_world) for r in range(new_world)]
    for o in new:
        o.load_state_dict(state)
    if state["epoch"] == 1:  # the old ranks finished the epoch (but for < old_world rows)
        assert state["position"] == 0 and rows - len(before) < old_world
        return
    after = [i for o in new for i in take(o, (rows - state["position"]) // new_world)]
    assert not set(before) & set(after)
    assert len(set(after)) == len(after)
    assert rows - len(before) - len(after) < new_world
    assert all(o.state_dict()["epoch"] == 1 and o.state_dict()["position"] == 0 for o in new)


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(1, 40), batch_rows=st.integers(1, 9), word_starts=st.booleans(), seed=st.integers(0, 1000))
def test_reader_property(tmp_path_factory, count, batch_rows, word_starts, seed):
    documents = random_documents(count, seed=seed, max_length=40)
    directory = tmp_path_factory.mktemp("prop") / "c"
    write_corpus(directory, documents, word_starts=word_starts, shard_size=2 << 10, batch_rows=batch_rows, chunk=3)
    dataset = ShardDataset.open(directory, verify=True)
    assert len(dataset) == count
    for i, document in enumerate(documents):
        row = dataset[i]
        assert row.input_ids.tolist() == document["input_ids"].tolist()
        assert row.sentence_ends.tolist() == document["sentence_ends"].tolist()
        if word_starts:
            assert row.word_starts.tolist() == document["word_starts"].tolist()
