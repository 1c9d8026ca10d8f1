"""ptm's T5 against transformers on tiny random configs (ReLU tied v1.0 and gated-GELU untied v1.1): hidden
states, logits, loss, gradients, greedy and beam decoding, parameter counts at the published shapes, and
``ptm convert`` both ways with T5's sentencepiece tokenizer and its sentinels."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from foreign_tokenizers import sample_paragraphs
from safetensors.torch import load_file

from ptmcli.convert.hf_t5 import state_dict_from_hf, state_dict_to_hf
from ptmcli.convert.ptm_model import load_model
from ptmcli.errors import PtmError
from ptmcli.models.bart import shift_right
from ptmcli.models.generation import Settings, decode
from ptmcli.models.registry import find_preset, get_family
from ptmcli.models.t5 import (
    PRESETS,
    T5Config,
    T5ForConditionalGeneration,
    preset_config,
    relative_buckets,
)
from ptmcli.tokenization.tokenizer import PtmTokenizer

transformers = pytest.importorskip("transformers")

PAD, EOS = 0, 1
ATOL = 1e-5
TINY = {"vocab_size": 97, "hidden_size": 32, "num_layers": 2, "num_decoder_layers": 3, "num_heads": 3, "head_size": 12,
        "intermediate_size": 48, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20}
VARIANTS = {"v1.0": {"feed_forward": "relu", "tie_word_embeddings": True},
            "v1.1": {"feed_forward": "gated-gelu", "tie_word_embeddings": False},
            "tied-unscaled": {"feed_forward": "gated-gelu", "tie_word_embeddings": True, "scale_decoder_outputs": False}}


def hf_config(variant: str = "v1.0", **values) -> transformers.T5Config:
    v = {**TINY, **VARIANTS[variant], **values}
    config = transformers.T5Config(
        vocab_size=v["vocab_size"], d_model=v["hidden_size"], d_kv=v["head_size"], d_ff=v["intermediate_size"],
        num_layers=v["num_layers"], num_decoder_layers=v["num_decoder_layers"] or v["num_layers"], num_heads=v["num_heads"],
        relative_attention_num_buckets=v["relative_attention_num_buckets"],
        relative_attention_max_distance=v["relative_attention_max_distance"], feed_forward_proj=v["feed_forward"],
        tie_word_embeddings=v["tie_word_embeddings"], pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    config.scale_decoder_outputs = v.get("scale_decoder_outputs", v["tie_word_embeddings"])
    return config


def ptm_config(variant: str = "v1.0", **values) -> T5Config:
    return T5Config(**{**TINY, **VARIANTS[variant], **values})


def hf_model(variant: str, cls: str = "T5ForConditionalGeneration", seed: int = 0, std: float = 0.3, **values):
    """A transformers model with every weight random (norms around 1); v1.1 gets its own lm_head, which
    transformers 5 ties unless a file says otherwise."""
    torch.manual_seed(seed)
    model = getattr(transformers, cls)(hf_config(variant, **values))
    gen = torch.Generator().manual_seed(seed)
    if cls == "T5ForConditionalGeneration" and not VARIANTS[variant]["tie_word_embeddings"]:
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * std
            param.copy_(1.0 + noise if "layer_norm" in name else noise)
    return model.eval()


def random_pair(variant: str = "v1.0", seed: int = 0, std: float = 0.3):
    hf = hf_model(variant, seed=seed, std=std)
    ours = T5ForConditionalGeneration(ptm_config(variant))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


def source_batch(seed: int = 1, vocab: int = TINY["vocab_size"], batch: int = 3, length: int = 26):
    """Right-padded sources longer than the buckets' exact range, no padding ids among the real tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 17:] = 0
    mask[batch - 1, 5:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def target_batch(seed: int = 2, vocab: int = TINY["vocab_size"], batch: int = 3, length: int = 23):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, vocab, (batch, length), generator=gen)
    labels[0, 15:] = -100
    labels[2, 3:] = -100
    return labels


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


# -- the model against transformers --------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hidden_states_logits_and_loss_match_transformers(variant):
    hf, ours = random_pair(variant)
    ids, mask = source_batch()
    labels = target_batch()
    decoder_mask = (labels != -100).long()
    decoder_ids = shift_right(labels, PAD, PAD)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask,
                 labels=labels, output_hidden_states=True)
        trunk = ours.t5(ids, mask, decoder_ids, decoder_mask, output_hidden_states=True)
        out = ours(ids, mask, decoder_ids, decoder_mask, labels=labels)
        plain_ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        plain = ours(ids, mask, labels=labels)  # labels alone: shifted right behind <pad>
    assert len(trunk["encoder_hidden_states"]) == TINY["num_layers"] + 1
    assert len(trunk["decoder_hidden_states"]) == TINY["num_decoder_layers"] + 1
    assert worst(zip(trunk["encoder_hidden_states"], ref.encoder_hidden_states, strict=True)) < ATOL
    assert worst(zip(trunk["decoder_hidden_states"], ref.decoder_hidden_states, strict=True)) < ATOL
    assert worst([(out["logits"], ref.logits), (plain["logits"], plain_ref.logits)]) < ATOL
    assert abs(float(out["lm_loss_sum"] / out["lm_count"] - ref.loss)) < ATOL
    assert abs(float(plain["lm_loss_sum"] / plain["lm_count"] - plain_ref.loss)) < ATOL
    hits = (ref.logits.argmax(-1) == labels)[labels != -100].sum()
    assert int(out["lm_correct"]) == int(hits) and int(out["lm_count"]) == int(decoder_mask.sum())


@pytest.mark.parametrize("cls", ["T5Model", "T5EncoderModel"])
def test_bare_classes_match_transformers(cls):
    hf = hf_model("v1.1", cls, seed=5)
    ours = T5ForConditionalGeneration(ptm_config("v1.1"))
    missing = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False).missing_keys
    assert all(k == "lm_head.weight" or k.startswith("t5.decoder.") for k in missing)
    ours.eval()
    ids, mask = source_batch(seed=6)
    with torch.no_grad():
        encoded, _ = ours.t5.encode(ids, mask)
        if cls == "T5EncoderModel":
            assert worst([(encoded, hf(input_ids=ids, attention_mask=mask).last_hidden_state)]) < ATOL
            return
        decoder_ids = shift_right(target_batch(seed=7), PAD, PAD)
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        trunk = ours.t5(ids, mask, decoder_ids)
    assert worst([(trunk["hidden"], ref.last_hidden_state), (trunk["encoder_hidden"], ref.encoder_last_hidden_state)]) < ATOL


def test_training_loss_and_gradients_match_transformers():
    hf, ours = random_pair("v1.1", seed=3)
    hf.config.dropout_rate = 0.0
    for module in (hf, ours):  # dropout off: the two would draw different masks
        module.train()
        for sub in module.modules():
            for name in ("p", "dropout", "attention_dropout"):
                if isinstance(getattr(sub, name, None), float):
                    setattr(sub, name, 0.0)
    ids, mask = source_batch(seed=4)
    labels = target_batch(seed=5)
    ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
    out = ours(ids, mask, labels=labels)
    assert "logits" not in out  # the fused loss never builds them
    loss = out["lm_loss_sum"] / out["lm_count"]
    assert abs(float((loss - ref.loss).detach())) < ATOL
    loss.backward()
    ref.loss.backward()
    hf_grads = state_dict_from_hf({name: p.grad for name, p in hf.named_parameters()})
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    offsets = torch.arange(-40, 41)
    both = relative_buckets(offsets, True, 8, 20)
    assert both[40].item() == 0 and both[41].item() == 5 and both[39].item() == 1  # 0, +1 (the upper half), -1
    assert both.max().item() == 7 and both[0].item() == 3  # far offsets share the last bucket of their half
    causal = relative_buckets(offsets, False, 8, 20)
    assert (causal[40:] == 0).all() and causal[:40].min().item() > 0


# -- incremental decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_cached_steps_give_the_full_forward_logits(variant):
    _, ours = random_pair(variant, seed=8)
    ids, mask = source_batch(seed=9)
    decoder_ids = shift_right(target_batch(seed=10).clamp(min=2), PAD, PAD)
    with torch.no_grad():
        full = ours(ids, mask, decoder_ids)["logits"]
    decoder = ours.incremental_decoder()
    logits, state = decoder.start(ids)  # padding found by the pad id
    steps = [logits]
    for t in range(1, 14):  # past the buckets' exact range: each step reads its own bias row
        logits, state = decoder.step(state, decoder_ids[:, t : t + 1])
        steps.append(logits)
    logits, state = decoder.step(state, decoder_ids[:, 14:18])  # several tokens at once
    # Other kernel shapes, so float rounding only: relative to the logits' size.
    assert worst([(torch.stack(steps, 1), full[:, :14]), (logits, full[:, 17])]) < ATOL * float(full.abs().max())
    assert state.cache.length == 18


def decoding_pair(variant: str, eos_bias: float, seed: int = 12):
    """A model whose greedy output depends on its source (weights of std 1, norms at 1) and stops sometimes:
    </s>'s row of the projection reads one hidden unit only, weighted ``eos_bias``, so it wins when that
    unit is high."""
    # One depth for both stacks: transformers' generate() sizes its cache by the encoder's.
    hf = hf_model(variant, seed=seed, std=1.0, num_decoder_layers=TINY["num_layers"])
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "layer_norm" in name:
                param.fill_(1.0)
        head = hf.lm_head.weight if not VARIANTS[variant]["tie_word_embeddings"] else hf.shared.weight
        head[EOS] = 0.0
        head[EOS, 0] = eos_bias
    ours = T5ForConditionalGeneration(ptm_config(variant, num_decoder_layers=None))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


def hf_rows(out: torch.Tensor, copies: int) -> list[list[list[int]]]:
    """transformers' outputs without the decoder-start token, cut after </s> and the </s> dropped."""
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS)] if EOS in row else row)
    return [rows[i : i + copies] for i in range(0, len(rows), copies)]


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
@pytest.mark.parametrize("case", [{"num_beams": 1}, {"num_beams": 3, "length_penalty": 1.0, "early_stopping": True},
                                  {"num_beams": 3, "length_penalty": 0.7, "num_return_sequences": 2}],
                         ids=["greedy", "beam3", "beam3-returns2"])
def test_greedy_and_beam_decoding_are_token_identical_to_transformers_generate(variant, case):
    hf, ours = decoding_pair(variant, 10.0)
    ids, mask = source_batch(seed=12, batch=4)
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=14, min_length=0,
                          no_repeat_ngram_size=0, repetition_penalty=1.0, **case)
    expected = hf_rows(out, case.get("num_return_sequences", 1))
    sources = [ids[row, : int(mask[row].sum())].tolist() for row in range(ids.shape[0])]
    settings = Settings(max_new_tokens=14, stop_ids=(EOS,), pad_id=PAD, **case)
    got = [[c.ids for c in row] for row in decode(ours, sources, settings)]
    assert got == expected
    firsts = [row[0] for row in expected]
    assert len({tuple(row) for row in firsts}) > 1  # the source matters
    assert any(len(row) < 14 for row in firsts)  # and some rows stop early


def test_decoding_past_the_cache_is_an_error():
    _, ours = random_pair()
    decoder = ours.incremental_decoder(context=2)
    _, state = decoder.start(torch.tensor([[5, 6, 7]]))
    _, state = decoder.step(state, torch.tensor([[4]]))
    with pytest.raises(PtmError, match="decoder's 2 positions are used up"):
        decoder.step(state, torch.tensor([[4]]))


# -- presets, config, family -----------------------------------------------------------------------


def hf_count(config: T5Config) -> int:
    """transformers' parameter count of the same shape, built on the meta device from its config alone;
    an untied lm_head counted apart (transformers 5 ties it unless loading a file that has one)."""
    hf = transformers.T5Config(vocab_size=config.vocab_size, d_model=config.hidden_size, d_kv=config.head_size,
                               d_ff=config.intermediate_size, num_layers=config.num_layers,
                               num_decoder_layers=config.decoder_layers, num_heads=config.num_heads,
                               feed_forward_proj=config.feed_forward, tie_word_embeddings=config.tie_word_embeddings)
    with torch.device("meta"):
        model = transformers.T5ForConditionalGeneration(hf)
    count = sum(p.numel() for p in model.parameters())
    return count + (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)


@pytest.mark.parametrize("name", ["t5-tiny", "t5-small", "t5-v1_1-small"])
def test_parameter_counts_equal_transformers(name):
    config = preset_config(name)
    with torch.device("meta"):
        ours = T5ForConditionalGeneration(config)
    assert ours.num_parameters() == hf_count(config)
    published = {"t5-small": 60_506_624, "t5-v1_1-small": 76_961_152}  # google-t5/t5-small, google/t5-v1_1-small
    if name in published:
        assert ours.num_parameters() == published[name]
    if name == "t5-tiny":
        assert ours.num_parameters() < 5_000_000
    tables = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2)
    assert ours.num_parameters(exclude_embeddings=True) == ours.num_parameters() - tables
    assert ours.flops_per_token(128) > 6 * ours.num_parameters(exclude_embeddings=True)


def test_config_round_trip_errors_and_presets():
    config = preset_config("t5-mini", vocab_size=1000, num_decoder_layers=2)
    assert T5Config.from_dict(config.to_dict()) == config
    assert (config.num_layers, config.decoder_layers, config.scales_output) == (4, 2, True)
    assert not preset_config("t5-v1_1-small").scales_output
    with pytest.raises(PtmError, match="t5 config: unknown keys colour"):
        T5Config.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="t5 config: missing keys num_heads"):
        T5Config.from_dict({k: v for k, v in config.to_dict().items() if k != "num_heads"})
    with pytest.raises(PtmError, match="feed_forward 'gated-silu' is not one of relu, gated-gelu"):
        preset_config("t5-tiny", feed_forward="gated-silu")
    with pytest.raises(PtmError, match="scale_decoder_outputs applies to a tied projection only"):
        preset_config("t5-v1_1-small", scale_decoder_outputs=True)
    with pytest.raises(PtmError, match="t5-tiny.*t5-base"):
        preset_config("t5-huge")
    assert find_preset("t5-base").name == "t5" and set(PRESETS) >= {"t5-tiny", "t5-mini", "t5-small", "t5-base"}


class _Tokenizer:
    cls_id = bos_id = sep_id = mask_id = None
    pad_id, eos_id, unk_id, vocab_size = 0, 1, 2, 97


def test_family_answers_for_an_encoder_decoder():
    family = get_family("t5")
    assert family.is_encoder_decoder and not family.generates and family.position_limit(ptm_config()) is None
    framing = family.framing(_Tokenizer())
    assert (framing.prefix, framing.middle, framing.suffix, framing.segments, framing.pad_id) == ((), (1,), (1,), False, 0)
    config = family.model_config("t5-tiny", type("Pad3", (_Tokenizer,), {"pad_id": 3})())
    assert (config.vocab_size, config.pad_token_id, config.decoder_start_token_id) == (97, 3, 3)
    model = family.build(family.model_config("t5-tiny", _Tokenizer())).eval()
    ids, mask = source_batch(vocab=97)
    with torch.no_grad():
        top, stack = family.stack(model, ids, None, mask)
        assert len(stack) == family.num_layers(model.config) + 1 == 3
        assert torch.equal(top, model.t5.encode(ids, mask)[0]) and torch.equal(stack[-1], top)
        assert torch.equal(family.top(model, ids, None, mask), top)
        _, raw = family.stack(model, ids, None, mask, normed_top=False)
        assert torch.equal(raw[1], stack[1]) and not torch.equal(raw[-1], top)
    assert family.input_embeddings(model) is model.t5.word_embeddings.weight
    assert len(family.fsdp_units(model)) == 4 and family.unused_by_features(set()) == ("decoder.",)
    with pytest.raises(PtmError, match="no pad token, which T5 needs"):
        family.check_tokenizer(type("NoPad", (_Tokenizer,), {"pad_id": None})(), "shards")


# -- the key map -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["v1.0", "v1.1"])
def test_state_dict_round_trips_through_transformers_keys(variant):
    hf, ours = random_pair(variant)
    tied = VARIANTS[variant]["tie_word_embeddings"]
    theirs = {k: v for k, v in hf.state_dict().items() if "embed_tokens" not in k and not (tied and k == "lm_head.weight")}
    back = state_dict_to_hf(ours.state_dict())
    assert set(back) == set(theirs) and all(torch.equal(back[k], theirs[k]) for k in theirs)
    copies = dict(hf.state_dict())
    copies["decoder.embed_tokens.weight"] = copies["decoder.embed_tokens.weight"] + 1
    with pytest.raises(PtmError, match="differs from"):
        state_dict_from_hf(copies)


# -- ptm convert -----------------------------------------------------------------------------------

SENTINELS = 10
SP_VOCAB = 600
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said hello to na\u00efve visitors!",
         "  Leading and trailing   spaces  "]


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code, _out, err = run_cli(capsys, "convert", *args)
    return code, err


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A T5 tokenizer directory as published: a unigram spiece.model (<pad> 0, </s> 1, <unk> 2) learned here,
    and a tokenizer_config.json with extra_ids, whose sentinels T5Tokenizer puts after the model's pieces."""
    import sentencepiece

    directory = tmp_path_factory.mktemp("t5-tokenizer")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_paragraphs(300)), model_writer=model, model_type="unigram", vocab_size=SP_VOCAB,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "extra_ids": SENTINELS, "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "model_max_length": 512,
        "additional_special_tokens": [f"<extra_id_{i}>" for i in range(SENTINELS)]}))
    return directory


def hf_t5_dir(root: Path, cls: str, variant: str, tokenizer: Path | None, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    model = hf_model(variant, cls, seed=seed, vocab_size=SP_VOCAB + SENTINELS)
    if cls == "T5ForConditionalGeneration" and not VARIANTS[variant]["tie_word_embeddings"]:
        model.config.tie_word_embeddings = False  # what published v1.1 files say
    directory = root / f"hf-{cls}-{variant}"
    model.save_pretrained(directory)
    if tokenizer is not None:
        for path in tokenizer.iterdir():
            shutil.copy(path, directory / path.name)
    return directory, model


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cls,variant", [("T5ForConditionalGeneration", "v1.0"), ("T5ForConditionalGeneration", "v1.1"),
                                         ("T5Model", "v1.1"), ("T5EncoderModel", "v1.0")])
def test_hf_class_parity_and_lossless_round_trip(tmp_path, capsys, published, cls, variant):
    src, hf = hf_t5_dir(tmp_path, cls, variant, published)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    # A tied head is the shared embedding, so only an untied T5Model lacks lm weights.
    untied = not json.loads((src / "config.json").read_text()).get("tie_word_embeddings", True)
    assert ("has no lm" in err) == (cls == "T5Model" and untied), err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "t5" and config["objective"] == ("denoise" if cls == "T5ForConditionalGeneration" else None)
    assert config["model"]["feed_forward"] == VARIANTS[variant]["feed_forward"]
    module, _, initialised = load_model(tmp_path / "ckpt")
    ids, mask = source_batch(vocab=SP_VOCAB)
    with torch.no_grad():
        if cls == "T5EncoderModel":
            assert initialised == ["decoder"]
            assert worst([(module.t5.encode(ids, mask)[0], hf(input_ids=ids, attention_mask=mask).last_hidden_state)]) < ATOL
        else:
            decoder_ids = shift_right(target_batch(vocab=SP_VOCAB), PAD, PAD)
            ref, out = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids), module(ids, mask, decoder_ids)
            mine, theirs = ("logits", "logits") if cls != "T5Model" else ("hidden", "last_hidden_state")
            assert worst([(out[mine], getattr(ref, theirs))]) < ATOL

    extra = ["--hf-class", cls] if cls == "T5EncoderModel" else []
    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back", *extra)
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["architectures"] == [cls] and written["model_type"] == "t5"
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    assert same_tensors(reloaded.state_dict(), hf.state_dict())

    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    assert ours.vocab_size == len(theirs) == SP_VOCAB + SENTINELS
    assert [ours.token_to_id(f"<extra_id_{i}>") for i in (0, 9)] == theirs.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_9>"])
    framing = get_family("t5").framing(ours)
    singles = [[*framing.prefix, *row, *framing.suffix] for row in ours.encode_batch(TEXTS)]
    assert singles == [theirs(t)["input_ids"] for t in TEXTS]
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == singles
    assert len(again) == SP_VOCAB + SENTINELS


def test_untied_head_resaved_by_transformers_5_converts_untied(tmp_path, capsys, published):
    """transformers 5 re-saves a v1.1 model as tie_word_embeddings true with its own lm_head, and keeps the head
    untied on load; ptm reads the weights the same way."""
    src, _ = hf_t5_dir(tmp_path, "T5ForConditionalGeneration", "v1.1", published)
    resaved = tmp_path / "resaved"
    transformers.T5ForConditionalGeneration.from_pretrained(src).save_pretrained(resaved)
    for path in published.iterdir():
        shutil.copy(path, resaved / path.name)
    config = json.loads((resaved / "config.json").read_text())
    head = tensors(resaved)["lm_head.weight"]
    if not config.get("tie_word_embeddings") or torch.equal(head, tensors(resaved)["shared.weight"]):
        pytest.skip("this transformers version writes an untied v1.1 model as untied")
    code, err = cli(capsys, resaved, tmp_path / "ckpt")
    assert code == 0, err
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["tie_word_embeddings"] is False
    reference = transformers.T5ForConditionalGeneration.from_pretrained(resaved).eval()
    module, _, _ = load_model(tmp_path / "ckpt")
    ids, mask = source_batch(vocab=SP_VOCAB)
    decoder_ids = shift_right(target_batch(vocab=SP_VOCAB), PAD, PAD)
    with torch.no_grad():
        out = module(ids, mask, decoder_ids)["logits"]
        ref = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    assert worst([(out, ref)]) < ATOL
    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(resaved), tensors(tmp_path / "back"))


def test_unsupported_configs_are_refused_in_one_line(tmp_path, capsys, published):
    src, _ = hf_t5_dir(tmp_path, "T5Model", "v1.0", published)
    config = json.loads((src / "config.json").read_text())
    for key, value, pattern in (("feed_forward_proj", "gated-silu", "feed_forward_proj 'gated-silu'"),
                                ("is_decoder", True, "is_decoder true"),
                                ("pad_token_id", 5, "the tokenizer has padding id 0 but config.json's pad_token_id is 5")):
        (src / "config.json").write_text(json.dumps({**config, key: value}))
        code, err = cli(capsys, src, tmp_path / "out")
        assert code == 2 and pattern in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


# -- ptm pretrain --arch t5 ---------------------------------------------------------------------------


def test_pretrain_t5_denoise_runs_and_generates(tmp_path, capsys):
    from ptmcli.checkpoint import list_step_checkpoints, read_config
    from ptmcli.data.encode import encode_to_shards
    from ptmcli.pretraining.sample import SAMPLE
    from ptmcli.tokenization.train import train_tokenizer

    with open(SAMPLE, encoding="utf-8") as handle:  # the first articles of the bundled sample
        (tmp_path / "wiki.txt").write_text("".join(line for _, line in zip(range(400), handle)), encoding="utf-8")
    train_tokenizer(iter(sample_paragraphs(300)), "bytelevel", 800, special="roberta").save(tmp_path / "tok")
    encode_to_shards([str(tmp_path / "wiki.txt")], str(tmp_path / "tok"), str(tmp_path / "rshards"), workers=1, progress=False)
    run = tmp_path / "run"
    code, _out, err = run_cli(capsys, "pretrain", "--data", tmp_path / "rshards", "--tokenizer", tmp_path / "tok", "-o", run,
                              "--arch", "t5", "--objective", "denoise", "--preset", "t5-tiny", "--hidden-size", "32",
                              "--num-layers", "1", "--seq-len", "32", "--batch-size", "4", "--eval-rows", "4",
                              "--eval-batches", "1", "--log-every", "2", "--no-progress", "--threads", "1",
                              "--max-steps", "4")
    assert code == 0, err
    config = read_config(list_step_checkpoints(run)[-1])
    assert config["arch"] == "t5" and config["objective"] == "denoise"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in records) == 4 and any("lm_loss" in r for r in records)
    sources = tmp_path / "sources.txt"
    sources.write_text("the history of\nin the year one thousand\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "generate", "-c", run, "-i", sources, "--max-new-tokens", "5", "--num-beams", "2")
    assert code == 0 and len(out.splitlines()) == 2, err
