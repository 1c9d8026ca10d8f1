"""GPT: parity with transformers GPT-2, causality, the chunked LM loss, the block stream, and `ptm pretrain --arch gpt`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.models import gpt, layers
from ptmcli.pretraining.clm_task import BlockStream
from tests.test_pretrain import _weights, corpus, ptm  # noqa: F401  (corpus is a fixture)

GPT_TINY = ["--arch", "gpt", "--preset", "gpt-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
            "--num-layers", "2", "--seq-len", "32", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "2", "--log-every", "2", "--no-progress"]


def _tiny_config(**overrides) -> gpt.GPTConfig:
    values = dict(vocab_size=97, max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
    values.update(overrides)
    return gpt.preset_config("gpt-tiny", **values)


def test_matches_transformers_gpt2_and_round_trips_its_weights():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=128, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = gpt.GPTForCausalLM(_tiny_config()).eval()
    ours.load_state_dict(gpt.state_dict_from_hf(hf.state_dict()), strict=True)
    ids = torch.randint(0, 97, (3, 20))
    with torch.no_grad():
        ref = hf(ids, labels=ids, output_hidden_states=True)
        last, states = ours.gpt(ids, output_hidden_states=True)
        torch.testing.assert_close(ours.logits(last), ref.logits, atol=1e-5, rtol=0)
        for mine, theirs in zip(states, ref.hidden_states[:-1]):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
        labels = torch.cat([ids[:, 1:], torch.full((3, 1), -100)], dim=1)
        out = ours(ids, labels)
        torch.testing.assert_close(out["lm_loss_sum"] / out["lm_count"], ref.loss, atol=1e-5, rtol=0)
    back = gpt.state_dict_to_hf(ours.state_dict())
    theirs = hf.state_dict()
    assert set(back) == set(theirs)
    for key, tensor in back.items():
        assert torch.equal(tensor, theirs[key]), key


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_position_never_sees_the_future(norm):
    torch.manual_seed(1)
    model = gpt.GPTForCausalLM(_tiny_config(norm=norm)).eval()
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 97
    with torch.no_grad():
        a, b = model.gpt(ids), model.gpt(changed)
    assert torch.equal(a[0, :9], b[0, :9])
    assert not torch.allclose(a[0, 9:], b[0, 9:])


def test_causal_attention_with_dropout_matches_sdpa_without_it():
    # The CPU training path writes causal attention out by hand; with p -> 0 it must equal SDPA's.
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mine = layers.attention_with_dropout(q, k, v, None, 1e-9, causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_linear_cross_entropy_equals_the_plain_loss(monkeypatch, with_bias):
    # Budgets small enough that 101 rows take several chunks and several cache slices per chunk.
    monkeypatch.setitem(layers._CHUNK_BYTES, "cpu", 4 * 50 * 37)
    monkeypatch.setattr(layers, "_CACHE_BYTES", 4 * 50 * 8)
    torch.manual_seed(3)
    hidden = torch.randn(101, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 50, (101,))
    targets[::7] = -100
    loss, correct = layers.linear_cross_entropy(hidden, weight, bias, targets)
    (3 * loss).backward()
    grads = [t.grad.clone() for t in (hidden, weight, bias) if t is not None]
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    ref = F.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
    (3 * ref).backward()
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-6)
    assert int(correct) == int(((logits.argmax(-1) == targets) & (targets >= 0)).sum())
    for mine, param in zip(grads, [t for t in (hidden, weight, bias) if t is not None]):
        torch.testing.assert_close(mine, param.grad, atol=1e-5, rtol=1e-5)


class _Docs:
    """A stand-in for ShardDataset: rows with given token ids."""

    def __init__(self, docs):
        self.docs = docs

    def __getitem__(self, i):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=np.array(self.docs[i]))


def test_block_stream_predicts_every_token_once_and_resumes_exactly():
    docs = [[10 + i] * (3 + i) for i in range(7)]  # documents of different lengths, distinct tokens
    make = lambda: BlockStream(_Docs(docs), np.arange(len(docs)), seq_len=5, seed=4, eos_id=1, shuffle=False)  # noqa: E731
    stream = make()
    blocks = stream.take(3)
    assert blocks.shape == (3, 6)
    assert np.array_equal(blocks[0, -1], blocks[1, 0]), "consecutive blocks share one token"
    stream_tokens = np.concatenate([np.array(d + [1]) for d in docs])
    targets = np.concatenate([b[1:] for b in blocks])
    assert np.array_equal(targets, stream_tokens[1 : 1 + len(targets)]), "targets are the stream, each token once, in order"
    state = json.loads(json.dumps(stream.state_dict()))
    after = stream.take(4)
    resumed = make()
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.take(4), after)


def test_pretrain_gpt_learns_and_resumes_bit_for_bit(corpus, tmp_path, capsys):  # noqa: F811
    shards, tok = corpus
    common = ["--data", shards, "--tokenizer", tok, *GPT_TINY, "--seed", "5", "--lr", "3e-3"]
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "full", "--max-steps", "30", "--eval-every", "15")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["lm_loss"] for r in records if "lm_loss" in r]
    assert losses[-1] < losses[0] - 0.4, losses
    assert any("eval_lm_ppl" in r for r in records)
    config = read_config(list_step_checkpoints(tmp_path / "full")[-1])
    assert config["arch"] == "gpt" and config["objective"] == "clm" and config["model"]["norm"] == "pre"

    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "cut", "--max-steps", "30", "--eval-every", "15",
               "--save-every", "10", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0, err
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_gpt_rejects_bert_objectives(corpus, tmp_path, capsys):  # noqa: F811
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *GPT_TINY, "--objective", "mlm")
    assert code == 2 and "--objective 'mlm' is not available for --arch gpt" in err and err.count("\n") == 1
