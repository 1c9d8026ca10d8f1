"""The checkpoint directory: atomic writes, strict reads, optimizer state as named tensors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ptmcli import checkpoint as ck
from ptmcli.errors import PtmError
from ptmcli.training.optim import build_adamw, load_optimizer_state, optimizer_state_tensors


class Tied(nn.Module):
    def __init__(self, vocab=11, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)
        self.out.weight = self.emb.weight

    def tied_weights(self):
        return {"out.weight": "emb.weight"}

    def tie_weights(self):
        self.out.weight = self.emb.weight

    def forward(self, ids):
        return self.out(self.norm(self.emb(ids)))


def _save(target, model, **kw):
    return ck.save_checkpoint(target, config={"arch": "toy", "model": {"vocab": 11}}, weights=ck.state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=None, **kw)


def test_round_trip_stores_tied_weights_once(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    path = _save(tmp_path / "ckpt", model)
    from safetensors.torch import load_file

    stored = load_file(str(path / "model.safetensors"))
    assert "out.weight" not in stored and "emb.weight" in stored
    config = ck.read_config(path)
    assert config["format"] == "ptm-checkpoint" and config["version"] == 1 and config["arch"] == "toy"
    fresh = Tied()
    ck.load_weights(path, fresh, fresh.tied_weights())
    assert fresh.out.weight is fresh.emb.weight
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(fresh(ids), model(ids))


def test_strict_reads(tmp_path):
    model = Tied()
    path = _save(tmp_path / "ckpt", model)
    wrong = Tied(vocab=12)
    with pytest.raises(PtmError, match="shape"):
        ck.load_weights(path, wrong, wrong.tied_weights())
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(cfg, version=99)))
    with pytest.raises(PtmError, match="version 99"):
        ck.read_config(path)
    (path / "config.json").write_text(json.dumps(dict(cfg, format="other")))
    with pytest.raises(PtmError, match="unknown format"):
        ck.read_config(path)
    (path / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(PtmError, match="unreadable"):
        ck.load_weights(path, model, model.tied_weights())


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    model = Tied()
    target = _save(tmp_path / "ckpt", model)
    before = (target / "model.safetensors").read_bytes()

    class Boom(dict):
        def items(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ck.save_checkpoint(target, config={"arch": "toy", "model": {}}, weights=ck.state_dict_for_saving(model, {}), tokenizer_dir=None, trainer_state=Boom())
    assert (target / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "temporary directory left behind"


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = Tied()
    opt = build_adamw(model, 1e-2, 0.01)
    for _ in range(3):
        model(torch.tensor([[1, 2, 3]])).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, groups = optimizer_state_tensors(opt)
    assert any(k.endswith(".exp_avg") for k in tensors)
    groups = json.loads(json.dumps(groups))  # what state.json will hold
    decay = {g["weight_decay"]: g["names"] for g in groups}
    assert "norm.weight" in decay[0.0] and "out.bias" in decay[0.0] and "emb.weight" in decay[0.01]
    clone = Tied()
    clone.load_state_dict(model.state_dict())
    opt2 = build_adamw(clone, 1e-2, 0.01)
    load_optimizer_state(opt2, tensors, groups, "test")
    for m, o in ((model, opt), (clone, opt2)):
        m(torch.tensor([[4, 5]])).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_resolve_and_prune(tmp_path):
    model = Tied()
    for step in (1, 2, 3):
        _save(tmp_path / "run" / "checkpoints" / ck.step_dir_name(step), model)
    assert ck.resolve_checkpoint(tmp_path / "run").name == ck.step_dir_name(3)
    ck.prune_checkpoints(tmp_path / "run", 2)
    assert [p.name for p in ck.list_step_checkpoints(tmp_path / "run")] == [ck.step_dir_name(2), ck.step_dir_name(3)]
    with pytest.raises(PtmError):
        ck.resolve_checkpoint(tmp_path / "nothing")


def test_a_kill_between_the_renames_of_a_replacement_is_undone(tmp_path):
    from ptmcli.textio.atomic import leftovers, restore_retired

    model = Tied()
    best = _save(tmp_path / "run" / "best", model)
    kept = {p.name: p.read_bytes() for p in best.iterdir() if p.is_file()}
    # What the kill leaves: the old best/ aside, the new one unnamed, and an empty aside of an earlier kill.
    (tmp_path / "run" / ".best.old-1").mkdir()
    (tmp_path / "run" / ".best.old-2").mkdir()
    best.rename(tmp_path / "run" / ".best.old-2" / "best")
    _save(tmp_path / "run" / ".best.tmp-3", model)
    assert restore_retired(tmp_path / "run") == [best]
    assert {p.name: p.read_bytes() for p in best.iterdir() if p.is_file()} == kept
    assert not (tmp_path / "run" / ".best.old-2").exists()
    # With best/ in place the rest are ordinary leftovers: nothing to put back, and the next save removes them.
    assert restore_retired(tmp_path / "run", "best") == []
    _save(best, model)
    assert leftovers(tmp_path / "run", name="best") == []


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import errno
    import os

    from ptmcli.textio import atomic

    target = tmp_path / "run.json"
    atomic.atomic_write_text(target, "old\n")
    atomic.atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["run.json"]

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(PtmError, match=rf"could not write {target}: disk full \(.*\); {target} was left as it was"):
        atomic.atomic_write_text(target, "newer\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["run.json"]
