"""Property tests: tokenizer round trips, shards read back what was written, the row order's guarantees."""

from __future__ import annotations

import json
import unicodedata
from itertools import islice

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptmcli.data.encode_workers import EncodedChunk
from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shard_writer import ShardWriter
from ptmcli.data.shards import ShardDataset
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.tokenization.train import train_tokenizer

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sample_lines(n: int) -> list[str]:
    with open(SAMPLE, encoding="utf-8") as handle:
        return [line.strip() for line in islice(handle, n) if line.strip() and not line.startswith("<")]


@pytest.fixture(scope="module")
def bytelevel():
    return train_tokenizer(_sample_lines(800), "bytelevel", 400)


@pytest.fixture(scope="module")
def wordpiece():
    tok = train_tokenizer(_sample_lines(800), "wordpiece", 400)
    alphabet = sorted({c for line in _sample_lines(800) for c in line.lower() if c.isalnum() and c.isascii()})
    return tok, "".join(alphabet)


@SETTINGS
@given(text=st.text(max_size=60))
def test_bytelevel_round_trips_any_unicode(bytelevel, text):
    assert bytelevel.decode(bytelevel.encode_batch([text])[0]) == text


@SETTINGS
@given(data=st.data())
def test_wordpiece_decodes_to_its_normalised_text(wordpiece, data):
    tok, alphabet = wordpiece
    words = data.draw(st.lists(st.text(alphabet=alphabet + alphabet.upper(), min_size=1, max_size=8), min_size=1, max_size=8))
    text = " ".join(words)
    # The normalisation of a lowercasing, accent-stripping WordPiece tokenizer on ASCII words.
    expected = " ".join(unicodedata.normalize("NFD", w.lower()) for w in words)
    assert tok.decode(tok.encode_batch([text])[0]) == expected


documents = st.lists(st.lists(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6), min_size=1, max_size=4),
                     min_size=1, max_size=25)


def _write(directory, docs: list[list[list[int]]], batch_rows: int) -> None:
    writer = ShardWriter(str(directory), shard_size_bytes=512, batch_rows=batch_rows, word_starts=False)
    flat = [[t for sentence in doc for t in sentence] for doc in docs]
    ends = [list(np.cumsum([len(s) for s in doc])) for doc in docs]
    writer.add(EncodedChunk(token_ids=np.array([t for d in flat for t in d], dtype=np.int32),
                            doc_lengths=np.array([len(d) for d in flat], dtype=np.int64),
                            sentence_ends=np.array([e for d in ends for e in d], dtype=np.int32),
                            doc_sentences=np.array([len(d) for d in ends], dtype=np.int64), word_starts=None))
    writer.close()
    manifest = writer.manifest({"sha256": "x", "vocab_size": 2**31}, ["memory"])
    (directory / "manifest.json").write_text(json.dumps(manifest))


@SETTINGS
@given(docs=documents, batch_rows=st.integers(1, 7))
def test_shards_read_back_what_was_written(tmp_path_factory, docs, batch_rows):
    directory = tmp_path_factory.mktemp("shards")
    _write(directory, docs, batch_rows)
    dataset = ShardDataset.open(directory, verify=True)
    assert len(dataset) == len(docs)
    for row, doc in zip(dataset, docs):
        assert row.input_ids.tolist() == [t for sentence in doc for t in sentence]
        assert row.sentence_ends.tolist() == list(np.cumsum([len(s) for s in doc]))


@SETTINGS
@given(num_rows=st.integers(1, 60), world_size=st.integers(1, 4), seed=st.integers(0, 99), cut=st.integers(0, 200))
def test_order_visits_every_row_once_disjoint_across_ranks_and_resumes(num_rows, world_size, seed, cut):
    if num_rows < world_size:
        return
    per_rank = (num_rows // world_size)
    epochs = [[] for _ in range(world_size)]
    for rank in range(world_size):
        order = iter(ShuffledOrder(num_rows, seed, rank, world_size))
        epochs[rank] = [next(order) for _ in range(2 * per_rank)]
    first = [set(rows[:per_rank]) for rows in epochs]
    union = set().union(*first)
    assert sum(len(s) for s in first) == len(union) == per_rank * world_size  # disjoint, no repeats
    if world_size == 1:
        assert union == set(range(num_rows))
    # Resume from a saved cursor at any point: the continuation matches an uninterrupted run.
    cut = cut % (2 * per_rank)
    for rank in range(world_size):
        order = ShuffledOrder(num_rows, seed, rank, world_size)
        walk = iter(order)
        head = [next(walk) for _ in range(cut)]
        resumed = ShuffledOrder(num_rows, seed, rank, world_size)
        resumed.load_state_dict(json.loads(json.dumps(order.state_dict())))
        tail = list(islice(iter(resumed), 2 * per_rank - cut))
        assert head + tail == epochs[rank]
