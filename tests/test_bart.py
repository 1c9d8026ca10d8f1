"""ptm's BART against transformers on tiny random configs: hidden states, logits, loss, greedy decoding,
parameter counts, and ``ptm convert`` both ways with BART's byte-level BPE tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from foreign_tokenizers import sample_paragraphs
from safetensors.torch import load_file, save_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.convert.hf_bart import state_dict_from_hf, state_dict_to_hf
from ptmcli.convert.ptm_model import load_model
from ptmcli.errors import PtmError
from ptmcli.models.bart import (
    PRESETS,
    BartConfig,
    BartForConditionalGeneration,
    preset_config,
    shift_right,
)
from ptmcli.models.generation import generate
from ptmcli.models.registry import find_preset, get_family
from ptmcli.tokenization.tokenizer import PtmTokenizer

transformers = pytest.importorskip("transformers")

PAD, BOS, EOS = 1, 0, 2
TINY = {"vocab_size": 97, "hidden_size": 32, "num_layers": 2, "num_decoder_layers": 3, "num_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 40}
ATOL = 1e-5
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's order: <pad> is id 1, </s> id 2
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said hello to na\u00efve visitors!",
         "  Leading and trailing   spaces  "]


def hf_config(scale_embedding: bool = False, **values) -> transformers.BartConfig:
    values = {**TINY, **values}
    decoder_layers = values["num_decoder_layers"] or values["num_layers"]
    return transformers.BartConfig(
        vocab_size=values["vocab_size"], d_model=values["hidden_size"], encoder_layers=values["num_layers"],
        decoder_layers=decoder_layers, encoder_attention_heads=values["num_heads"],
        decoder_attention_heads=values["num_heads"], encoder_ffn_dim=values["intermediate_size"],
        decoder_ffn_dim=values["intermediate_size"], max_position_embeddings=values["max_position_embeddings"],
        scale_embedding=scale_embedding, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        decoder_start_token_id=EOS, forced_bos_token_id=None, forced_eos_token_id=None,
    )


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random, LayerNorms and biases too (and the logits bias), so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=gen))
    return model.eval()


def random_pair(seed: int = 0, scale_embedding: bool = False):
    """A transformers BartForConditionalGeneration with every weight random and ptm's copy of it."""
    torch.manual_seed(seed)
    hf = randomise(transformers.BartForConditionalGeneration(hf_config(scale_embedding)), seed)
    ours = BartForConditionalGeneration(BartConfig(**TINY, scale_embedding=scale_embedding))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


def source_batch(seed: int = 1, vocab: int = TINY["vocab_size"], batch: int = 3, length: int = 11):
    """Right-padded sources without padding ids among the real tokens, as ptm's collator makes them."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[batch - 1, 4:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def target_batch(seed: int = 2, vocab: int = TINY["vocab_size"], batch: int = 3, length: int = 9):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, vocab, (batch, length), generator=gen)
    labels[0, 6:] = -100
    labels[2, 3:] = -100
    return labels


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


# -- the model against transformers --------------------------------------------------------------


@pytest.mark.parametrize("scale_embedding", [False, True])
def test_hidden_states_logits_and_loss_match_transformers(scale_embedding):
    hf, ours = random_pair(scale_embedding=scale_embedding)
    ids, mask = source_batch()
    labels = target_batch()
    decoder_mask = (labels != -100).long()
    decoder_ids = shift_right(labels, EOS, PAD)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids,
                 decoder_attention_mask=decoder_mask, labels=labels, output_hidden_states=True)
        trunk = ours.bart(ids, mask, decoder_ids, decoder_mask, output_hidden_states=True)
        out = ours(ids, mask, decoder_ids, decoder_mask, labels=labels)
    assert len(trunk["encoder_hidden_states"]) == TINY["num_layers"] + 1
    assert len(trunk["decoder_hidden_states"]) == TINY["num_decoder_layers"] + 1
    assert worst(zip(trunk["encoder_hidden_states"], ref.encoder_hidden_states, strict=True)) < ATOL
    assert worst(zip(trunk["decoder_hidden_states"], ref.decoder_hidden_states, strict=True)) < ATOL
    assert worst([(out["logits"], ref.logits)]) < ATOL
    assert abs(float(out["lm_loss_sum"] / out["lm_count"] - ref.loss)) < ATOL
    assert int(out["lm_count"]) == int(decoder_mask.sum())
    hits = (ref.logits.argmax(-1) == labels)[labels != -100].sum()
    assert int(out["lm_correct"]) == int(hits)
    # Labels alone: both shift them right behind the decoder-start token; the decoder reads no padding mask.
    with torch.no_grad():
        plain = hf(input_ids=ids, attention_mask=mask, labels=labels)
        mine = ours(ids, mask, labels=labels)
    assert abs(float(mine["lm_loss_sum"] / mine["lm_count"] - plain.loss)) < ATOL
    assert worst([(mine["logits"], plain.logits)]) < ATOL


def test_bart_model_outputs_match_transformers():
    torch.manual_seed(0)
    hf = randomise(transformers.BartModel(hf_config()), 5)
    ours = BartForConditionalGeneration(BartConfig(**TINY))
    missing = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False).missing_keys
    assert missing == ["final_logits_bias"]
    ours.eval()
    ids, mask = source_batch(seed=6)
    decoder_ids = shift_right(target_batch(seed=7), EOS, PAD)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
        trunk = ours.bart(ids, mask, decoder_ids)
    assert worst([(trunk["hidden"], ref.last_hidden_state), (trunk["encoder_hidden"], ref.encoder_last_hidden_state)]) < ATOL


def test_training_loss_and_gradients_match_transformers():
    hf, ours = random_pair(seed=3)
    hf.train(), ours.train()
    for module in (hf, ours):  # dropout off: the two would draw different masks
        for sub in module.modules():
            for name in ("p", "dropout", "attention_dropout", "activation_dropout"):
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
    theirs = {name: p.grad for name, p in hf.named_parameters()}
    theirs["final_logits_bias"] = torch.zeros_like(hf.final_logits_bias)
    hf_grads = state_dict_from_hf(theirs)
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_positions_start_two_rows_into_the_table_and_stop_at_its_end():
    config = BartConfig(**TINY)
    model = BartForConditionalGeneration(config).eval()
    assert model.bart.encoder.position_embeddings.num_embeddings == config.position_rows == 42
    assert get_family("bart").position_limit(config) == 40
    with torch.no_grad():
        model(torch.full((1, 40), 5), decoder_input_ids=torch.full((1, 40), 5))
        with pytest.raises(PtmError, match="sequence of 41 tokens is longer than max_position_embeddings 40"):
            model(torch.full((1, 41), 5), decoder_input_ids=torch.full((1, 3), 5))
        with pytest.raises(PtmError, match="needs decoder_input_ids"):
            model.bart(torch.full((1, 4), 5))


# -- incremental decoding --------------------------------------------------------------------------


def test_cached_steps_give_the_full_forward_logits():
    _, ours = random_pair(seed=8)
    ids, mask = source_batch(seed=9)
    labels = target_batch(seed=10).clamp(min=3)
    decoder_ids = shift_right(labels, EOS, PAD)
    with torch.no_grad():
        full = ours(ids, mask, decoder_ids)["logits"]
    decoder = ours.incremental_decoder()
    logits, state = decoder.start(ids)  # padding found by the pad id
    steps = [logits]
    for t in range(1, 5):
        logits, state = decoder.step(state, decoder_ids[:, t : t + 1])
        steps.append(logits)
    logits, state = decoder.step(state, decoder_ids[:, 5:8])  # several tokens at once
    assert worst([(torch.stack(steps, 1), full[:, :5]), (logits, full[:, 7])]) < ATOL
    assert state.cache.length == 8 and len(state.memory) == TINY["num_decoder_layers"]


def hf_greedy(hf, ids, mask, steps: int) -> list[list[int]]:
    """transformers' greedy output without the decoder-start token, cut after the first </s>."""
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, num_beams=1, do_sample=False, max_new_tokens=steps,
                          min_length=0, no_repeat_ngram_size=0, repetition_penalty=1.0)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def decoding_pair(seed: int, eos_bias: float):
    """A model whose greedy output depends on its source: weights of std 1 with the LayerNorms left at
    1 and 0 (``randomise``'s random LayerNorm offsets make every row decode alike), and ``eos_bias``
    on the end token's logit to choose how often rows stop."""
    torch.manual_seed(seed)
    hf = transformers.BartForConditionalGeneration(hf_config()).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=gen))
        hf.final_logits_bias[0, EOS] = eos_bias
    ours = BartForConditionalGeneration(BartConfig(**TINY))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours.eval()


@pytest.mark.parametrize("eos_bias", [4.0, 8.0])
def test_greedy_decoding_is_token_identical_to_transformers_generate(eos_bias):
    hf, ours = decoding_pair(12, eos_bias)
    ids, mask = source_batch(seed=12, batch=4)
    steps = 12
    expected = hf_greedy(hf, ids, mask, steps)
    # One source at a time through ptm's generate (its stop token left out of the ids).
    for row in range(ids.shape[0]):
        source = ids[row, : int(mask[row].sum())].tolist()
        (result,) = generate(ours, source, max_new_tokens=steps, temperature=0.0, stop_ids=[EOS])
        assert result.ids + [EOS] * (result.stopped == "eos") == expected[row]
    # The padded batch through the decoder directly.
    decoder = ours.incremental_decoder()
    logits, state = decoder.start(ids, mask)
    tokens = []
    for _ in range(steps):
        token = logits.argmax(-1)
        tokens.append(token)
        logits, state = decoder.step(state, token[:, None]) if len(tokens) < steps else (logits, state)
    greedy = torch.stack(tokens, 1).tolist()
    assert [row[: len(want)] for row, want in zip(greedy, expected, strict=True)] == expected
    assert len({tuple(row) for row in expected}) > 1  # the source matters
    assert any(EOS in row for row in expected) == (eos_bias > 4)  # and some rows stop early


def test_decoding_past_the_decoder_positions_is_an_error():
    _, ours = random_pair()
    decoder = ours.incremental_decoder(context=3)
    _, state = decoder.start(torch.tensor([[5, 6, 7]]))
    _, state = decoder.step(state, torch.tensor([[4]]))
    _, state = decoder.step(state, torch.tensor([[4]]))
    with pytest.raises(PtmError, match="decoder's 3 positions are used up"):
        decoder.step(state, torch.tensor([[4]]))


# -- presets, config, family -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    config = preset_config(name)
    hf = transformers.BartConfig(
        vocab_size=config.vocab_size, d_model=config.hidden_size, encoder_layers=config.num_layers,
        decoder_layers=config.decoder_layers, encoder_attention_heads=config.num_heads,
        decoder_attention_heads=config.num_heads, encoder_ffn_dim=config.intermediate_size,
        decoder_ffn_dim=config.intermediate_size, max_position_embeddings=config.max_position_embeddings)
    with torch.device("meta"):
        ours = BartForConditionalGeneration(config)
        trunk, full = transformers.BartModel(hf), transformers.BartForConditionalGeneration(hf)
    count = sum(p.numel() for p in full.parameters())
    assert ours.num_parameters() == count == sum(p.numel() for p in trunk.parameters())
    if name == "bart-base":
        assert count == 139_420_416  # facebook/bart-base
    if name == "bart-large":
        assert count == 406_291_456  # facebook/bart-large
    tables = config.vocab_size * config.hidden_size + 2 * config.position_rows * config.hidden_size
    assert ours.num_parameters(exclude_embeddings=True) == count - tables
    assert ours.flops_per_token(128) > 6 * ours.num_parameters(exclude_embeddings=True)


def test_config_round_trip_errors_and_presets():
    config = preset_config("bart-mini", vocab_size=1000, num_decoder_layers=2)
    assert BartConfig.from_dict(config.to_dict()) == config
    assert (config.num_layers, config.decoder_layers) == (4, 2)
    assert preset_config("bart-tiny").decoder_layers == 2
    with pytest.raises(PtmError, match="bart config: unknown keys colour"):
        BartConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="bart config: missing keys num_heads"):
        BartConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "num_heads"})
    with pytest.raises(PtmError, match="not a multiple of num_heads"):
        preset_config("bart-tiny", num_heads=3)
    with pytest.raises(PtmError, match="bart-tiny.*bart-large"):
        preset_config("bart-huge")
    assert find_preset("bart-base").name == "bart"


class _Tokenizer:
    cls_id, bos_id, pad_id, sep_id, eos_id, unk_id, mask_id, vocab_size = 0, 0, 1, 2, 2, 3, 4, 97


def test_family_answers_for_an_encoder_decoder():
    family = get_family("bart")
    assert family.is_encoder_decoder and not family.generates
    assert not get_family("gpt").is_encoder_decoder
    framing = family.framing(_Tokenizer())
    assert (framing.prefix, framing.middle, framing.suffix, framing.segments, framing.pad_id) == ((0,), (2, 2), (2,), False, 1)
    config = family.model_config("bart-tiny", type("Ends", (_Tokenizer,), {"eos_id": 5, "sep_id": 5})())
    assert (config.vocab_size, config.pad_token_id, config.decoder_start_token_id) == (97, 1, 5)
    model = family.build(family.model_config("bart-tiny", _Tokenizer())).eval()
    ids, mask = source_batch(vocab=97)
    with torch.no_grad():
        top, stack = family.stack(model, ids, None, mask)
        assert len(stack) == family.num_layers(model.config) + 1 == 3
        assert torch.equal(top, model.bart.encode(ids, mask)[0])
        assert torch.equal(family.top(model, ids, None, mask), top)
    assert family.input_embeddings(model) is model.bart.word_embeddings.weight
    assert len(family.fsdp_units(model)) == 4
    assert family.unused_by_features(set()) == ("decoder.",)
    with pytest.raises(PtmError, match="no pad token, which BART needs"):
        family.check_tokenizer(type("NoPad", (_Tokenizer,), {"pad_id": None})(), "shards")


# -- the key map -------------------------------------------------------------------------------------


def test_state_dict_round_trips_through_transformers_keys():
    hf, ours = random_pair()
    theirs = {k: v for k, v in hf.state_dict().items() if "embed_tokens" not in k and k != "lm_head.weight"}
    back = state_dict_to_hf(ours.state_dict())
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    trunk = randomise(transformers.BartModel(hf_config()), 2)
    bare = {k: v for k, v in trunk.state_dict().items() if "embed_tokens" not in k}
    mapped = state_dict_from_hf(trunk.state_dict())
    assert "final_logits_bias" not in mapped and all(k.startswith("bart.") for k in mapped)
    again = state_dict_to_hf(mapped, bare=True)
    assert set(again) == set(bare) and all(torch.equal(again[k], bare[k]) for k in bare)
    # An older spelling: the embedding only under embed_tokens; copies that differ are refused.
    old = {k: v for k, v in trunk.state_dict().items() if k != "shared.weight"}
    assert torch.equal(state_dict_from_hf(old)["bart.word_embeddings.weight"], trunk.shared.weight)
    old["decoder.embed_tokens.weight"] = old["decoder.embed_tokens.weight"] + 1
    with pytest.raises(PtmError, match="differs from"):
        state_dict_from_hf(old)


# -- ptm convert -----------------------------------------------------------------------------------

HF_SMALL = {"d_model": 16, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 24, "decoder_ffn_dim": 24, "max_position_embeddings": 32}
BART_CLASSES = ["BartModel", "BartForConditionalGeneration"]


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code, _out, err = run_cli(capsys, "convert", *args)
    return code, err


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A BART tokenizer directory as published: byte-level BPE learned here, saved by transformers'
    BartTokenizer, with vocab.json + merges.txt beside tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("bart-tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sample_paragraphs(), trainer)
    files = root / "files"
    files.mkdir()
    tokenizer.model.save(str(files))
    directory = root / "published"
    transformers.BartTokenizer.from_pretrained(files).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files / name, directory / name)
    return directory


def hf_bart_dir(root: Path, cls: str, tokenizer: Path | None, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    config = transformers.BartConfig(vocab_size=1000, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                                     decoder_start_token_id=EOS, **HF_SMALL)
    torch.manual_seed(seed)
    model = randomise(getattr(transformers, cls)(config), seed)
    directory = root / f"hf-{cls}"
    model.save_pretrained(directory)
    if tokenizer is not None:
        for path in tokenizer.iterdir():
            shutil.copy(path, directory / path.name)
    return directory, model


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def hf_outputs(model, ids, mask, decoder_ids) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
    hidden = ref.last_hidden_state if hasattr(ref, "last_hidden_state") else None
    return {"logits": getattr(ref, "logits", None), "encoder": ref.encoder_last_hidden_state, "hidden": hidden}


def ptm_outputs(module, ids, mask, decoder_ids) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = module(ids, mask, decoder_ids)
    return {"logits": out["logits"], "encoder": out["encoder_hidden"], "hidden": out["hidden"]}


def max_error(mine: dict, theirs: dict) -> float:
    return worst([(mine[k], theirs[k]) for k in mine if theirs.get(k) is not None])


@pytest.mark.parametrize("cls", BART_CLASSES)
def test_hf_class_parity_and_lossless_round_trip(tmp_path, capsys, published, cls):
    src, hf_model = hf_bart_dir(tmp_path, cls, published)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "bart" and config["objective"] == ("denoise" if cls != "BartModel" else None)
    assert (config["model"]["num_layers"], config["model"]["num_decoder_layers"]) == (2, 1)
    module, _, initialised = load_model(tmp_path / "ckpt")
    assert initialised == (["lm"] if cls == "BartModel" else [])
    ids, mask = source_batch(vocab=1000)
    decoder_ids = shift_right(target_batch(vocab=1000), EOS, PAD)
    assert max_error(ptm_outputs(module, ids, mask, decoder_ids), hf_outputs(hf_model, ids, mask, decoder_ids)) < ATOL

    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["architectures"] == [cls] and written["model_type"] == "bart"
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    assert max_error(hf_outputs(reloaded, ids, mask, decoder_ids), hf_outputs(hf_model, ids, mask, decoder_ids)) == 0.0

    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    framing = get_family("bart").framing(ours)
    singles = [[*framing.prefix, *row, *framing.suffix] for row in ours.encode_batch(TEXTS)]
    assert singles == [theirs(t)["input_ids"] for t in TEXTS]
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == singles


def test_older_files_with_tied_copies_convert_and_untied_ones_are_refused(tmp_path, capsys, published):
    src, hf_model = hf_bart_dir(tmp_path, "BartForConditionalGeneration", published)
    saved = tensors(src)
    shared = saved.pop("model.shared.weight")
    copies = {"model.encoder.embed_tokens.weight": shared.clone(), "model.decoder.embed_tokens.weight": shared.clone(),
              "lm_head.weight": shared.clone()}
    save_file({**saved, **copies}, str(src / "model.safetensors"), metadata={"format": "pt"})
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    assert torch.equal(tensors(tmp_path / "ckpt")["bart.word_embeddings.weight"], shared)
    save_file({**saved, **copies, "lm_head.weight": shared + 1}, str(src / "model.safetensors"), metadata={"format": "pt"})
    code, err = cli(capsys, src, tmp_path / "out")
    assert code == 2 and "'lm_head.weight' differs from 'model.shared.weight'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_unrepresentable_configs_are_refused_in_one_line(tmp_path, capsys, published):
    src, _ = hf_bart_dir(tmp_path, "BartModel", published)
    config = json.loads((src / "config.json").read_text())
    for key, value, pattern in (("activation_function", "relu", "activation_function 'relu'"),
                                ("decoder_ffn_dim", 32, "decoder_ffn_dim 32 unlike encoder_ffn_dim 24"),
                                ("encoder_layerdrop", 0.1, "encoder_layerdrop"),
                                ("pad_token_id", 0, "the tokenizer has padding id 1 but config.json's pad_token_id is 0")):
        (src / "config.json").write_text(json.dumps({**config, key: value}))
        code, err = cli(capsys, src, tmp_path / "out")
        assert code == 2 and pattern in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_ptm_checkpoint_loads_in_transformers_and_comes_back_equal(tmp_path, capsys):
    from ptmcli.tokenization.train import train_tokenizer

    tokenizer = train_tokenizer(iter(sample_paragraphs()), "bytelevel", 600, special="roberta")
    tokenizer.save(tmp_path / "tok")
    family = get_family("bart")
    config = family.model_config("bart-tiny", tokenizer, hidden_size=16, num_heads=2, intermediate_size=24,
                                 max_position_embeddings=40, scale_embedding=True)
    assert config.decoder_start_token_id == tokenizer.eos_id
    model = randomise(BartForConditionalGeneration(config), 3)
    meta = {"arch": "bart", "model": config.to_dict(), "objective": "denoise", "task": None}
    ckpt = save_checkpoint(tmp_path / "ckpt", config=meta, weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=tmp_path / "tok")
    code, err = cli(capsys, ckpt, tmp_path / "hf")
    assert code == 0, err
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == ["BartForConditionalGeneration"] and written["scale_embedding"] is True
    assert (written["pad_token_id"], written["eos_token_id"], written["decoder_start_token_id"]) == (
        tokenizer.pad_id, tokenizer.eos_id, tokenizer.eos_id)
    full = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    module, _, _ = load_model(ckpt)
    ids, mask = source_batch(vocab=600)
    ids = ids.masked_fill(mask == 0, tokenizer.pad_id)
    decoder_ids = shift_right(target_batch(vocab=600), tokenizer.eos_id, tokenizer.pad_id)
    assert max_error(ptm_outputs(module, ids, mask, decoder_ids), hf_outputs(full, ids, mask, decoder_ids)) < ATOL
    code, err = cli(capsys, tmp_path / "hf", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(ckpt), tensors(tmp_path / "back"))
