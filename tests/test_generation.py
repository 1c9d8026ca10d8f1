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
    Settings,
    decode,
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


# -- batched greedy and beam search against transformers' generate() --------------------------------

HF_PAD = 0
PROMPTS = [[7, 8, 9, 10, 11, 12], [20, 21, 22], [30, 40, 50, 60, 70, 80, 90, 3, 4]]
BEAM_CASES = [
    {"num_beams": 1},
    {"num_beams": 4, "length_penalty": 0.7, "early_stopping": True, "num_return_sequences": 2},
    {"num_beams": 4, "length_penalty": 0.7, "early_stopping": False, "num_return_sequences": 2},
    {"num_beams": 3, "length_penalty": 1.5, "early_stopping": True},
    {"num_beams": 3, "length_penalty": 1.5, "early_stopping": False},
]


def gpt_pair(eos: int, seed: int = 0):
    """A GPT2LMHeadModel with weights of std 0.5 (LayerNorms left at 1 and 0, so the prompt matters) and
    ptm's copy of it."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos,
                                     eos_token_id=eos, pad_token_id=HF_PAD)
    hf = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "ln" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    ours = tiny_gpt(positions=64)
    ours.load_state_dict(gpt.state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours


def hf_rows(out: torch.Tensor, skip: int, eos: int, per_input: int) -> list[list[list[int]]]:
    """transformers' output without the prompt (or decoder start), each row cut after its first eos."""
    rows = [row[: row.index(eos) + 1] if eos in row else row for row in out[:, skip:].tolist()]
    return [rows[i : i + per_input] for i in range(0, len(rows), per_input)]


def ptm_rows(model, inputs, eos: int, pad: int, **settings) -> list[list[list[int]]]:
    results = decode(model, inputs, Settings(stop_ids=(eos,), pad_id=pad, **settings))
    return [[c.ids + [eos] * (c.stopped == "eos") for c in row] for row in results]


@pytest.mark.parametrize("eos", [56, 12])
@pytest.mark.parametrize("case", BEAM_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gpt_batched_greedy_and_beam_equal_transformers_generate(eos, case):
    hf, ours = gpt_pair(eos)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[HF_PAD] * (width - len(p)) + p for p in PROMPTS])
    mask = (ids != HF_PAD).long()
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=15, **case)
    expected = hf_rows(out, width, eos, case.get("num_return_sequences", 1))
    assert ptm_rows(ours, PROMPTS, eos, HF_PAD, max_new_tokens=15, **case) == expected
    if case.get("early_stopping") is not False:  # (a length penalty > 1 without it keeps beams going)
        assert any(len(row[0]) < 15 for row in expected)  # some rows stop at eos


def test_early_stopping_changes_gpt_beams_as_it_changes_transformers():
    hf, ours = gpt_pair(12)
    both = [ptm_rows(ours, PROMPTS, 12, HF_PAD, max_new_tokens=15, num_beams=3, length_penalty=1.5, early_stopping=flag)
            for flag in (True, False)]
    assert both[0] != both[1]  # so the parity cases above exercise both rules


def test_gpt_min_new_tokens_and_left_padding_equal_transformers():
    hf, ours = gpt_pair(56)
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[HF_PAD] * (width - len(p)) + p for p in PROMPTS])
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=(ids != HF_PAD).long(), do_sample=False, max_new_tokens=10,
                          min_new_tokens=4, num_beams=1)
    expected = hf_rows(out, width, 56, 1)
    assert ptm_rows(ours, PROMPTS, 56, HF_PAD, max_new_tokens=10, min_new_tokens=4) == expected
    assert all(len(row[0]) > 4 for row in expected)
    # Padding changes nothing: each prompt alone decodes as in the batch.
    alone = [ptm_rows(ours, [p], 56, HF_PAD, max_new_tokens=10, min_new_tokens=4)[0] for p in PROMPTS]
    assert alone == expected


@pytest.mark.parametrize("eos_bias", [6.0, 8.0])
@pytest.mark.parametrize("case", BEAM_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_bart_batched_greedy_and_beam_equal_transformers_generate(eos_bias, case):
    pytest.importorskip("transformers")
    from test_bart import EOS, PAD, decoding_pair, source_batch

    hf, ours = decoding_pair(12, eos_bias)
    ids, mask = source_batch(seed=12, batch=3)
    sources = [ids[row, : int(mask[row].sum())].tolist() for row in range(ids.shape[0])]
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_length=0,
                          no_repeat_ngram_size=0, repetition_penalty=1.0, **case)
    expected = hf_rows(out, 1, EOS, case.get("num_return_sequences", 1))
    assert ptm_rows(ours, sources, EOS, PAD, max_new_tokens=12, **case) == expected
    assert len({len(s) for s in sources}) == 3  # sources of three lengths, right-padded


def test_bart_beam_state_is_encoded_once_and_reordered():
    pytest.importorskip("transformers")
    from test_bart import EOS, decoding_pair, source_batch

    _, ours = decoding_pair(12, 8.0)
    ids, mask = source_batch(seed=12, batch=2)
    decoder = ours.incremental_decoder()
    logits, state = decoder.start(ids, mask)
    rows = torch.tensor([1, 1, 0])
    state = decoder.reorder(state, rows)
    assert state.memory[0][0].shape[0] == 3 and state.memory_mask.shape[0] == 3
    step_logits, _ = decoder.step(state, torch.tensor([[EOS + 5]] * 3))
    fresh_logits, fresh = decoder.start(ids[rows], mask[rows])
    torch.testing.assert_close(step_logits, decoder.step(fresh, torch.tensor([[EOS + 5]] * 3))[0], rtol=0, atol=1e-5)


def test_gpt_reorder_follows_rows_of_a_padded_batch():
    model = tiny_gpt(positions=64)
    decoder = model.incremental_decoder()
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    _, state = decoder.start(ids, mask)
    state = decoder.reorder(state, torch.tensor([0, 0, 1]))
    logits, _ = decoder.step(state, torch.tensor([[3], [4], [3]]))
    for row, (prompt, token) in enumerate([([5, 6], 3), ([5, 6], 4), ([7, 8, 9, 10], 3)]):
        torch.testing.assert_close(logits[row], full_logits(model, torch.tensor([prompt + [token]]))[0], rtol=0, atol=1e-5)


# -- sampling -----------------------------------------------------------------------------------------


def test_batched_sampling_is_seeded_and_top_k_one_is_greedy():
    model = tiny_gpt(positions=64)
    sample = Settings(max_new_tokens=8, temperature=0.9, top_k=20, top_p=0.9, num_return_sequences=3)
    draws = [decode(model, PROMPTS, sample, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    as_ids = [[[c.ids for c in row] for row in d] for d in draws]
    assert as_ids[0] == as_ids[1] and len(as_ids[0]) == 3 and all(len(row) == 3 for row in as_ids[0])
    other = decode(model, PROMPTS, sample, generator=torch.Generator().manual_seed(8))
    assert [[c.ids for c in row] for row in other] != as_ids[0]
    greedy = decode(model, PROMPTS, Settings(max_new_tokens=8))
    top1 = decode(model, PROMPTS, Settings(max_new_tokens=8, temperature=1.3, top_k=1),
                  generator=torch.Generator().manual_seed(1))
    assert [[c.ids for c in row] for row in top1] == [[c.ids for c in row] for row in greedy]


def test_top_p_sampling_draws_only_the_nucleus_in_proportion():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])).repeat(20000, 1)
    draws = next_tokens(logits, 1.0, 0, 0.75, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).float() / draws.numel()
    # 0.5 + 0.3 reaches 0.75: only the first two tokens, renormalised to 5/8 and 3/8.
    assert counts[2:].sum() == 0
    assert abs(float(counts[0]) - 0.625) < 0.02 and abs(float(counts[1]) - 0.375) < 0.02


def test_settings_refuse_what_cannot_decode():
    with pytest.raises(ValueError, match="num_beams 0"):
        Settings(num_beams=0)
    with pytest.raises(ValueError, match="num_return_sequences 3"):
        Settings(num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="at least one input token"):
        decode(tiny_gpt(), [[1], []], Settings())


# -- ptm generate ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bart_checkpoint(tmp_path_factory, checkpoint) -> Path:
    from ptmcli.models.registry import get_family

    root = tmp_path_factory.mktemp("gen-bart")
    tok_dir = Path(checkpoint)
    tokenizer = PtmTokenizer.load(tok_dir)
    family = get_family("bart")
    torch.manual_seed(0)
    config = family.model_config("bart-tiny", tokenizer, hidden_size=32, num_heads=4, intermediate_size=64,
                                 max_position_embeddings=24)
    model = family.build(config)
    config_json = {"arch": "bart", "model": config.to_dict(), "objective": "denoise", "task": None}
    return save_checkpoint(root / "ckpt", config=config_json, weights=state_dict_for_saving(model, {}), tokenizer_dir=tok_dir)


def test_cli_generate_gpt_greedy_beam_and_sampling(checkpoint, capsys, monkeypatch, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the history of\n\nin the year\na b c d e f g h\n", encoding="utf-8")
    base = ["generate", "-c", checkpoint, "-i", prompts, "--max-new-tokens", "8", "--batch-size", "2"]
    code, out, err = ptm(capsys, *base)
    assert code == 0, err
    assert len(out.split("\n")) == 5 and out.endswith("\n")  # one line per input, the empty one included
    assert "4 inputs" in err
    # Greedy in batches of 2 equals greedy one input at a time.
    assert ptm(capsys, *base[:-1], "1")[1] == out
    code, beams, err = ptm(capsys, *base, "--num-beams", "3", "--length-penalty", "0.8", "--early-stopping")
    assert code == 0 and len(beams.splitlines()) == 4, err
    sampled = [ptm(capsys, *base, "--top-p", "0.9", "--top-k", "30", "--seed", str(seed))[1] for seed in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"the history of\n")))
    code, piped, err = ptm(capsys, "generate", "-c", checkpoint, "--max-new-tokens", "8")
    assert code == 0 and piped == out.split("\n")[0] + "\n", err


def test_cli_generate_bart_and_the_position_cap(bart_checkpoint, capsys, tmp_path):
    sources = tmp_path / "sources.txt"
    sources.write_text("the history of\nin the year one thousand\n", encoding="utf-8")
    code, out, err = ptm(capsys, "generate", "-c", bart_checkpoint, "-i", sources, "--max-new-tokens", "500",
                         "--num-beams", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert "--max-new-tokens 500 capped at 23: the model has 24 positions" in err


def test_cli_generate_refusals(checkpoint, capsys, tmp_path):
    from ptmcli.models.registry import get_family

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n", encoding="utf-8")
    cases = [(["--num-beams", "0"], "--num-beams 0"), (["--top-p", "0"], "--top-p"),
             (["--max-new-tokens", "0"], "--max-new-tokens"), (["--num-beams", "2", "--temperature", "0.7"], "deterministic")]
    for flags, expected in cases:
        code, out, err = ptm(capsys, "generate", "-c", checkpoint, "-i", prompts, *flags)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1 and out == "", (flags, err)
    bert = get_family("bert")
    tokenizer = PtmTokenizer.load(Path(checkpoint))
    model = bert.build(bert.model_config("bert-tiny", tokenizer, max_position_embeddings=32))
    saved = save_checkpoint(tmp_path / "bert", config={"arch": "bert", "model": model.config.to_dict(), "task": None},
                            weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=Path(checkpoint))
    code, out, err = ptm(capsys, "generate", "-c", saved, "-i", prompts)
    assert code == 2 and "does not generate text" in err and len(err.strip().splitlines()) == 1 and out == ""


def test_escaped_outputs_stay_on_one_line():
    from ptmcli.commands.generate import escape

    assert escape("a\nb\\n\rc") == "a\\nb\\\\n\\rc"
