"""The bundled-sample cache: builders racing for the same entry (torchrun ranks) all get one whole result."""

from __future__ import annotations

import json
import threading

import pytest

import ptmcli.data.encode
import ptmcli.tokenization.train
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError
from ptmcli.pretraining import sample
from ptmcli.tokenization.tokenizer import PtmTokenizer


def test_concurrent_builders_share_one_complete_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path))
    real_train = ptmcli.tokenization.train.train_tokenizer
    both_building = threading.Barrier(2, timeout=120)
    builds = []

    def train_in_step(*args, **kwargs):
        # Hold each builder until the other has started too, so both really build at once.
        builds.append(threading.get_ident())
        both_building.wait()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ptmcli.tokenization.train, "train_tokenizer", train_in_step)
    results, errors = [None, None], []

    def build(i: int) -> None:
        try:
            results[i] = sample.sample_data()
        except BaseException as err:  # reported by the assertion below
            errors.append(err)
            both_building.abort()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(builds) == 2
    assert results[0] == results[1]
    shard_dir, tok_dir = results[0]
    entries = list((tmp_path / "sample").iterdir())
    assert entries == [shard_dir.parent], entries  # one published entry, no private build directory left
    tokenizer = PtmTokenizer.load(tok_dir)
    data = ShardDataset.open(shard_dir, verify=True)
    data.check_tokenizer(tokenizer)
    assert len(data) > 0 and data.has_word_starts
    manifest = json.loads((shard_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tokenizer"]["path"] == str(tok_dir)  # not the builder's private directory

    # Once published, the entry is reused as it is.
    before = (shard_dir / "manifest.json").stat().st_mtime_ns
    assert sample.sample_data() == results[0]
    assert len(builds) == 2
    assert (shard_dir / "manifest.json").stat().st_mtime_ns == before


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path))

    def fail(*args, **kwargs):
        raise PtmError("disk full")

    monkeypatch.setattr(ptmcli.data.encode, "encode_to_shards", fail)
    with pytest.raises(PtmError, match="disk full"):
        sample.sample_data()
    assert list((tmp_path / "sample").iterdir()) == []
