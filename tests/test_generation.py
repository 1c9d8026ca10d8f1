"""Generation: GPT's cached decoding against full recomputation, the family-free decoding loop, the
sampling filters, and `ptm eval --sample`."""

from __future__ import annotations

import io
import json
from itertools import islice
from pathlib import Path

import pytest
import torch
from conftest import run_cli as ptm

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.models import gpt
from ptmcli.models.generation import (
    filter_top_k,
    filter_top_p,
    generate,
    next_tokens,
)
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.textio.inputs import iter_texts
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

VOCAB = 97


def tiny_gpt(norm: str = "pre", vocab: int = VOCAB, positions: int = 48, seed: int = 0) -> gpt.GPTForCausalLM:
    torch.manual_seed(seed)
    config = gpt.preset_config("gpt-tiny", vocab_size=vocab, hidden_size=32, num_heads=4, intermediate_size=64, num_layers=2,
                               max_position_embeddings=positions, norm=norm, hidden_dropout=0.1, attention_dropout=0.1)
    return gpt.GPTForCausalLM(config).eval()


def full_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model.gpt(ids))[:, -1]


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_decoding_equals_a_full_forward_at_every_step(norm):
    model = tiny_gpt(norm)
    decoder = model.incremental_decoder()
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    sequence = prompt
    logits, state = decoder.start(prompt)
    for _ in range(20):
        torch.testing.assert_close(logits, full_logits(model, sequence), rtol=0, atol=1e-5)
        token = logits.argmax(dim=-1)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        logits, state = decoder.step(state, token[:, None])
    # Several new tokens after a cached prefix see the prefix and each other causally.
    extra = torch.randint(0, VOCAB, (3, 4), generator=torch.Generator().manual_seed(2))
    logits, state = decoder.step(state, extra)
    torch.testing.assert_close(logits, full_logits(model, torch.cat([sequence, extra], dim=1)), rtol=0, atol=1e-5)
    assert state.cache.length == sequence.shape[1] + 4
    # generate() greedy: the same tokens as argmax over full recomputation, one step at a time.
    out = generate(model, prompt[0].tolist(), num_samples=2, max_new_tokens=15, temperature=0.0)
    naive = prompt[:1]
    for _ in range(15):
        naive = torch.cat([naive, full_logits(model, naive).argmax(dim=-1, keepdim=True)], dim=1)
    for continuation in out:
        assert continuation.ids == naive[0, 5:].tolist() and continuation.stopped == "length"


def test_a_full_cache_goes_on_from_its_recent_half():
    model = tiny_gpt()
    decoder = model.incremental_decoder(context=8)
    sequence = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    logits, state = decoder.start(sequence)
    window = sequence[:, -7:]  # a prompt keeps its last context - 1 tokens
    for _ in range(12):
        torch.testing.assert_close(logits, full_logits(model, window), rtol=0, atol=1e-5)
        token = logits.argmax(dim=-1, keepdim=True)
        # Out of positions, the window restarts from the last half of what was seen.
        window = torch.cat([window if window.shape[1] < 8 else window[:, -3:], token], dim=1)
        logits, state = decoder.step(state, token)
        assert torch.equal(state.tokens, window)


def test_the_decoding_loop_needs_only_the_decoder_interface():
    class CountingDecoder:
        """Always predicts the last token + 1: a stand-in for any family's decoder."""

        device = torch.device("cpu")

        def start(self, prompt_ids):
            return self.step(prompt_ids[:, :0], prompt_ids)

        def step(self, state, next_ids):
            return torch.nn.functional.one_hot(next_ids[:, -1] + 1, VOCAB).float(), next_ids

    class Model:
        def incremental_decoder(self, context):
            return CountingDecoder()

    out = generate(Model(), [3, 4], num_samples=2, max_new_tokens=6, temperature=0.0, stop_ids=[9])
    assert [(c.ids, c.stopped) for c in out] == [([5, 6, 7, 8], "eos")] * 2
    assert generate(Model(), [3], max_new_tokens=3, temperature=0.0)[0].ids == [4, 5, 6]


def test_generation_goes_past_the_context_by_reencoding():
    model = tiny_gpt(positions=16)
    out = generate(model, list(range(1, 11)), max_new_tokens=30, temperature=0.0, context=8)
    assert len(out[0].ids) == 30
    # The first tokens, produced before the cache filled, match full recomputation on the last 7 prompt tokens.
    naive = torch.tensor([list(range(4, 11))])
    naive = torch.cat([naive, full_logits(model, naive).argmax(dim=-1, keepdim=True)], dim=1)
    assert out[0].ids[0] == naive[0, -1].item()


def test_stop_tokens_end_a_sample():
    model = tiny_gpt()
    greedy = generate(model, [5, 6, 7], max_new_tokens=12, temperature=0.0)[0].ids
    stop = greedy[4]
    first = greedy.index(stop)
    out = generate(model, [5, 6, 7], max_new_tokens=12, temperature=0.0, stop_ids=[stop])[0]
    assert out.ids == greedy[:first] and out.stopped == "eos"
    everything = generate(model, [5], num_samples=2, max_new_tokens=5, temperature=1.0, stop_ids=range(VOCAB),
                          generator=torch.Generator().manual_seed(0))
    assert [(c.ids, c.stopped) for c in everything] == [([], "eos"), ([], "eos")]


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    logits[0, :10] = 3.0  # ties: still exactly k kept
    for k in (1, 5, 20):
        kept = torch.isfinite(filter_top_k(logits, k))
        assert kept.sum(dim=-1).tolist() == [k] * 4
        for row in range(4):
            assert logits[row][kept[row]].min() >= logits[row][~kept[row]].max()
        assert torch.equal(filter_top_k(logits, k)[kept], logits[kept])
    assert torch.equal(filter_top_k(logits, 0), logits) and torch.equal(filter_top_k(logits, 50), logits)


def test_top_p_keeps_the_smallest_nucleus():
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        logits = torch.randn(1, 30, generator=gen) * 2
        p = [0.01, 0.3, 0.5, 0.9, 0.999][trial % 5]
        kept = torch.isfinite(filter_top_p(logits, p))[0]
        probs = logits[0].softmax(-1)
        order = probs.argsort(descending=True)
        total, expected = 0.0, set()
        for index in order.tolist():  # the smallest set of most likely tokens reaching p
            expected.add(index)
            total += float(probs[index])
            if total >= p:
                break
        assert set(kept.nonzero().flatten().tolist()) == expected
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.equal(filter_top_p(logits, 1.0), logits)


def test_sampling_is_seeded_and_greedy_at_temperature_zero():
    model = tiny_gpt()

    def draw(seed: int, **kwargs):
        out = generate(model, [3, 4], num_samples=3, max_new_tokens=10, temperature=1.5,
                       generator=torch.Generator().manual_seed(seed), **kwargs)
        return [c.ids for c in out]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    rows = draw(7)
    assert len({tuple(r) for r in rows}) > 1, "samples of one batch differ"
    greedy = generate(model, [3, 4], max_new_tokens=10, temperature=0.0)[0].ids
    assert draw(7, top_k=1)[0] == greedy
    logits = torch.randn(2, VOCAB)
    assert torch.equal(next_tokens(logits, 0.0, 5, 0.5, None), logits.argmax(-1))
    picks = torch.stack([next_tokens(logits, 1.0, 3, 1.0, torch.Generator().manual_seed(s)) for s in range(30)])
    allowed = torch.topk(logits, 3).indices
    assert all(bool((allowed[row] == picks[:, row, None]).any(dim=-1).all()) for row in range(2))


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    train_tokenizer(islice(iter_texts([str(SAMPLE)]), 300), "wordpiece", 400).save(root / "tok")
    model = tiny_gpt(vocab=PtmTokenizer.load(root / "tok").vocab_size, positions=64)
    config = {"arch": "gpt", "model": model.config.to_dict(), "objective": "clm", "task": None, "training": {"seq_len": 32}}
    return save_checkpoint(root / "ckpt", config=config, weights=state_dict_for_saving(model, {}), tokenizer_dir=root / "tok")




def test_cli_samples_as_json_and_text(checkpoint, capsys, monkeypatch):
    args = ["eval", "-c", checkpoint, "--sample", "the history of", "--sample", "", "--num-samples", "2",
            "--max-new-tokens", "12", "--top-k", "20", "--top-p", "0.9", "--seed", "5", "--json"]
    code, out, err = ptm(capsys, *args)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["prompt"], r["sample"]) for r in records] == [("the history of", 0), ("the history of", 1), ("", 0), ("", 1)]
    assert all(r["tokens"] <= 12 and r["stopped"] in ("eos", "length") and isinstance(r["text"], str) for r in records)
    assert ptm(capsys, *args)[1] == out, "the same seed gives the same samples"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"first prompt\n\nsecond prompt\n")))
    code, text, err = ptm(capsys, "eval", "-c", checkpoint, "--sample", "-", "--temperature", "0", "--max-new-tokens", "6",
                          "--ignore-eos")
    assert code == 0, err
    assert len(text.splitlines()) == 2


def test_cli_sample_errors(checkpoint, capsys):
    for flags, expected in ((["--top-p", "0"], "--top-p"), (["--temperature", "-1"], "--temperature"),
                            (["--max-new-tokens", "0"], "--max-new-tokens")):
        code, _, err = ptm(capsys, "eval", "-c", checkpoint, "--sample", "x", *flags)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
