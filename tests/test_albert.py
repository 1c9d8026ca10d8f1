"""ptm's ALBERT against transformers' on tiny random configs, its sharing modes, and ``ptm convert`` both ways."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from foreign_tokenizers import albert_spiece, sample_paragraphs
from safetensors.torch import load_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.convert.ptm_model import load_model
from ptmcli.errors import PtmError
from ptmcli.models.albert import (
    PRESETS,
    SHARING,
    AlbertConfig,
    AlbertForPreTraining,
    preset_config,
    state_dict_from_hf,
    state_dict_to_hf,
)
from ptmcli.models.layers import padding_attention_mask
from ptmcli.models.registry import find_preset, get_family
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 97, "embedding_size": 12, "hidden_size": 32, "num_layers": 3, "num_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 64}
ATOL = 1e-5


def hf_config(groups: int = 1, **values) -> transformers.AlbertConfig:
    values = {**TINY, **values}
    return transformers.AlbertConfig(
        vocab_size=values["vocab_size"], embedding_size=values["embedding_size"], hidden_size=values["hidden_size"],
        num_hidden_layers=values["num_layers"], num_attention_heads=values["num_heads"],
        intermediate_size=values["intermediate_size"], max_position_embeddings=values["max_position_embeddings"],
        num_hidden_groups=groups, classifier_dropout_prob=0.0,
    )


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random, LayerNorms and biases too, so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def random_pair(seed: int = 0, share: str = "all"):
    """A transformers AlbertForPreTraining with every weight random and ptm's copy of it."""
    groups = 1 if share == "all" else TINY["num_layers"]
    torch.manual_seed(seed)
    hf = randomise(transformers.AlbertForPreTraining(hf_config(groups)), seed)
    ours = AlbertForPreTraining(AlbertConfig(**TINY, share=share))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    ours.tie_weights()
    return hf, ours.eval()


def padded_batch(seed: int = 1, vocab: int = TINY["vocab_size"]):
    gen = torch.Generator().manual_seed(seed)
    batch, length = 4, 13
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    types = torch.randint(0, 2, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    chosen = (torch.rand(batch, length, generator=gen) < 0.3) & mask.bool()
    chosen[0, 2] = True
    labels = torch.where(chosen, torch.randint(0, vocab, (batch, length), generator=gen), -100)
    order = torch.tensor([0, 1, 1, 0])
    return ids, types, mask, labels, order


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


# -- the model against transformers --------------------------------------------------------------


@pytest.mark.parametrize("share", ["all", "none"])
def test_forward_and_loss_match_transformers(share):
    hf, ours = random_pair(share=share)
    ids, types, mask, labels, order = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True,
                 labels=labels, sentence_order_label=order)
        ref_pooled = hf.albert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
        last, states = ours.albert(ids, types, mask, output_hidden_states=True)
        out = ours(ids, types, mask, mlm_labels=labels, sop_labels=order)
    assert len(states) == len(ref.hidden_states) == TINY["num_layers"] + 1
    assert worst(zip(states, ref.hidden_states, strict=True)) < ATOL
    assert worst([(ours.albert.pool(last), ref_pooled)]) < ATOL
    assert worst([(out["mlm_logits"], ref.prediction_logits[labels != -100])]) < ATOL
    assert worst([(out["sop_logits"], ref.sop_logits)]) < ATOL
    total = out["mlm_loss_sum"] / out["mlm_count"] + out["sop_loss_sum"] / out["sop_count"]
    assert abs(float(total - ref.loss)) < ATOL
    assert int(out["sop_correct"]) == int((ref.sop_logits.argmax(-1) == order).sum())
    hits = (ref.prediction_logits.argmax(-1) == labels)[labels != -100].sum()
    assert int(out["mlm_correct"]) == int(hits)


def test_training_loss_and_gradients_match_transformers():
    """The fused MLM loss of a training step; every gradient, the shared layer's summed over its depths."""
    hf, ours = random_pair(seed=3)
    ids, types, mask, labels, order = padded_batch(seed=4)
    ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels, sentence_order_label=order)
    out = ours(ids, types, mask, mlm_labels=labels, sop_labels=order)
    assert "mlm_logits" not in out
    loss = out["mlm_loss_sum"] / out["mlm_count"] + out["sop_loss_sum"] / out["sop_count"]
    assert abs(float((loss - ref.loss).detach())) < ATOL
    loss.backward()
    ref.loss.backward()
    hf_grads = state_dict_from_hf({name: p.grad for name, p in hf.named_parameters()})
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_state_dict_round_trips_through_transformers_keys():
    hf, ours = random_pair()
    theirs = hf.state_dict()
    back = state_dict_to_hf(ours.state_dict())
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    # transformers' AlbertModel keys have no "albert." prefix.
    missing = ours.load_state_dict(state_dict_from_hf(hf.albert.state_dict()), strict=False).missing_keys
    assert sorted(missing) == sorted(k for k in ours.state_dict() if not k.startswith("albert."))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    config = preset_config(name)
    hf = transformers.AlbertConfig(
        vocab_size=config.vocab_size, embedding_size=config.embedding_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size)
    with torch.device("meta"):
        ours = AlbertForPreTraining(config)
        encoder, pretraining = transformers.AlbertModel(hf), transformers.AlbertForPreTraining(hf)
    assert sum(p.numel() for p in ours.albert.parameters()) == sum(p.numel() for p in encoder.parameters())
    assert ours.num_parameters() == sum(p.numel() for p in pretraining.parameters())
    tables = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * config.embedding_size
    assert ours.num_parameters(exclude_embeddings=True) == ours.num_parameters() - tables


def test_base_and_large_have_the_papers_sizes():
    """12 M and 18 M in the paper; the figures docs/models.md gives."""
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in AlbertForPreTraining(preset_config(name)).albert.parameters())
                  for name in ("albert-base", "albert-large")}
    assert counts == {"albert-base": 11_683_584, "albert-large": 17_683_968}


# -- sharing ------------------------------------------------------------------------------------


def sublayer_sizes(config: AlbertConfig) -> tuple[int, int]:
    """Parameters of one attention sublayer (QKV, output, LayerNorm) and one feed-forward sublayer."""
    h, i = config.hidden_size, config.intermediate_size
    return 4 * h * h + 4 * h + 2 * h, 2 * h * i + i + h + 2 * h


@pytest.mark.parametrize("share", SHARING)
def test_every_sharing_mode_builds_trains_and_counts_its_weights(share):
    config = AlbertConfig(**TINY, share=share, hidden_dropout=0.1, attention_dropout=0.1)
    torch.manual_seed(0)
    model = AlbertForPreTraining(config).train()
    depth = config.num_layers
    attention, feed_forward = sublayer_sizes(config)
    copies = {"all": (1, 1), "attention": (1, depth), "ffn": (depth, 1), "none": (depth, depth)}[share]
    rest = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("albert.layers."))
    assert model.num_parameters() == rest + copies[0] * attention + copies[1] * feed_forward
    assert len(model.albert.layers) == (1 if share == "all" else depth)

    ids, types, mask, labels, order = padded_batch()
    out = model(ids, types, mask, mlm_labels=labels, sop_labels=order)
    (out["mlm_loss_sum"] / out["mlm_count"] + out["sop_loss_sum"] / out["sop_count"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    family = get_family("albert")
    with torch.no_grad():
        last, stack = family.stack(model.eval(), ids, types, mask)
    assert len(stack) == depth + 1 and torch.equal(stack[-1], last)
    units = family.fsdp_units(model)
    # Layers applied at several depths stay in the root unit; the others shard one by one.
    assert len(units) == {"all": 0, "attention": depth - 1, "ffn": depth - 1, "none": depth}[share]


def test_shared_layer_is_applied_at_every_depth():
    _, ours = random_pair()
    ids, types, mask, _, _ = padded_batch()
    layer = ours.albert.layers[0]
    with torch.no_grad():
        _, states = ours.albert(ids, types, mask, output_hidden_states=True)
        for before, after in zip(states, states[1:]):
            torch.testing.assert_close(layer(before, padding_attention_mask(mask)), after, atol=0, rtol=0)


def test_flops_per_token_do_not_depend_on_sharing():
    flops = {share: AlbertForPreTraining(AlbertConfig(**TINY, share=share)).flops_per_token(64) for share in SHARING}
    assert len(set(flops.values())) == 1
    config = AlbertConfig(**TINY)
    model = AlbertForPreTraining(config)
    e, v = config.embedding_size, config.vocab_size
    full, none = model.flops_per_token(16, mask_fraction=1.0), model.flops_per_token(16, mask_fraction=0.0)
    assert full - none == pytest.approx(6 * (config.hidden_size * e + v * e))


def test_config_round_trip_and_errors():
    config = preset_config("albert-mini", vocab_size=1000, share="none")
    assert AlbertConfig.from_dict(config.to_dict()) == config
    assert (config.hidden_act, config.hidden_dropout, config.share) == ("gelu_new", 0.0, "none")
    assert transformers.AlbertConfig().hidden_act == AlbertConfig(**TINY).hidden_act
    with pytest.raises(PtmError, match="share 'some'"):
        AlbertConfig(**TINY, share="some")
    with pytest.raises(PtmError, match="hidden_act 'relu'"):
        AlbertConfig(**TINY, hidden_act="relu")
    with pytest.raises(PtmError, match="unknown keys colour"):
        AlbertConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="albert-tiny.*albert-large"):
        preset_config("albert-huge")
    assert get_family("albert").config_class is AlbertConfig
    assert find_preset("albert-base").name == "albert"


# -- the family ---------------------------------------------------------------------------------


class _Tokenizer:
    pad_id, cls_id, sep_id, mask_id, vocab_size = 0, 2, 3, 4, 97


def test_family_answers_as_bert_does_with_sop_in_nsp_place():
    family = get_family("albert")
    assert family.head_parts == {"pooler": "albert.pooler.", "mlm": "mlm.", "sop": "sop."}
    assert family.pooler_trained("mlm+sop", []) and not family.pooler_trained("mlm", [])
    assert not family.pooler_trained("mlm+sop", ["pooler"])
    framing = family.framing(_Tokenizer())
    assert (framing.prefix, framing.middle, framing.suffix, framing.segments) == ((2,), (3,), (3,), True)
    config = family.model_config("albert-tiny", _Tokenizer())
    assert (config.vocab_size, config.embedding_size) == (97, 64)
    assert family.head_dropout(config) == config.classifier_dropout
    model = family.build(config)
    assert all(k.startswith(family.bottom_prefixes) for k in model.state_dict() if "embeddings" in k)
    assert "albert.embeddings.projection.weight" in model.state_dict()

    no_mask = type("NoMask", (_Tokenizer,), {"mask_id": None})()
    with pytest.raises(PtmError, match="no mask token, which ALBERT pretraining needs"):
        family.check_tokenizer(no_mask, "shards")
    ids, types, mask, labels, _ = padded_batch(vocab=97)
    batch = {"mlm_input_ids": ids, "token_type_ids": types, "attention_mask": mask, "mlm_labels": labels}
    loss_sum, count = family.lm_loss(model, batch, None, 4, None)
    assert int(count) == int((labels != -100).sum()) and float(loss_sum.detach()) > 0


# -- ptm convert --------------------------------------------------------------------------------

ALBERT_CLASSES = ["AlbertModel", "AlbertForPreTraining", "AlbertForMaskedLM", "AlbertForSequenceClassification",
                  "AlbertForTokenClassification"]
HF_SMALL = {"embedding_size": 8, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 24, "max_position_embeddings": 32}
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said ``hello'' to na\u00efve visitors!",
         "  Leading and trailing   spaces  "]


def cli(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of `ptm convert ARGS`, leaving out what ran before it."""
    capsys.readouterr()
    code, _out, err = run_cli(capsys, "convert", *args)
    return code, err


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> Path:
    """An ALBERT tokenizer directory: spiece.model (1000 pieces) and AlbertTokenizer's config."""
    return albert_spiece(tmp_path_factory.mktemp("tokenizer"))


def hf_albert_dir(root: Path, cls: str, tokenizer: Path, groups: int = 1, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A transformers ALBERT of class ``cls`` with random weights, saved beside ALBERT's tokenizer files."""
    labels = {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}} \
        if "Classification" in cls else {}
    config = transformers.AlbertConfig(vocab_size=1000, num_hidden_groups=groups, **HF_SMALL, **labels)
    torch.manual_seed(seed)
    model = randomise(getattr(transformers, cls)(config), seed)
    directory = root / f"hf-{cls}-{groups}"
    model.save_pretrained(directory)
    for path in tokenizer.iterdir():
        shutil.copy(path, directory / path.name)
    return directory, model


def batch(vocab: int = 1000, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 11), generator=gen)
    types = torch.randint(0, 2, (3, 11), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, types, mask


def ptm_outputs(module, cls: str, ids, types, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if cls.endswith("Classification"):
            return {"logits": module(ids, types, mask)}
        last, states = module.albert(ids, types, mask, output_hidden_states=True)
        out = {"hidden_states": states}
        if cls in ("AlbertModel", "AlbertForPreTraining"):
            out["pooler_output"] = module.albert.pool(last)
        if cls in ("AlbertForPreTraining", "AlbertForMaskedLM"):
            out["logits"] = module.mlm(last)
        if cls == "AlbertForPreTraining":
            out["sop_logits"] = module.sop(module.albert.pool(last))
    return out


def hf_outputs(model, cls: str, ids, types, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ref = model(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        out = {"logits": getattr(ref, "logits", None), "hidden_states": ref.hidden_states}
        if cls == "AlbertModel":
            out["pooler_output"] = ref.pooler_output
        if cls == "AlbertForPreTraining":
            pooled = model.albert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
            out.update(logits=ref.prediction_logits, sop_logits=ref.sop_logits, pooler_output=pooled)
    return out


def max_error(mine: dict, theirs: dict) -> float:
    pairs = []
    for key, value in mine.items():
        if value is None:
            continue
        pairs += zip(value, theirs[key], strict=True) if isinstance(value, tuple) else [(value, theirs[key])]
    assert all(a.shape == b.shape for a, b in pairs)
    return worst(pairs)


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cls", ALBERT_CLASSES)
def test_hf_class_parity_and_lossless_round_trip(tmp_path, capsys, spiece, cls):
    src, hf_model = hf_albert_dir(tmp_path, cls, spiece)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "albert" and config["model"]["share"] == "all"
    assert config["objective"] == {"AlbertForPreTraining": "mlm+sop", "AlbertForMaskedLM": "mlm"}.get(cls)
    module, _, initialised = load_model(tmp_path / "ckpt")
    ids, types, mask = batch()
    assert max_error(ptm_outputs(module, cls, ids, types, mask), hf_outputs(hf_model, cls, ids, types, mask)) < ATOL
    if cls == "AlbertForMaskedLM":
        assert initialised == ["pooler", "sop"]

    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [cls]
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    assert max_error(hf_outputs(reloaded, cls, ids, types, mask), hf_outputs(hf_model, cls, ids, types, mask)) == 0.0


def test_hf_without_sharing_and_with_extra_files_converts(tmp_path, capsys, spiece):
    """num_hidden_groups = num_hidden_layers is share "none"; a README, training arguments and the
    sentencepiece model beside the weights are no obstacle."""
    src, hf_model = hf_albert_dir(tmp_path, "AlbertForPreTraining", spiece, groups=2)
    (src / "README.md").write_text("# a model card\n", encoding="utf-8")
    (src / "training_args.json").write_text(json.dumps({"learning_rate": 1e-4}), encoding="utf-8")
    (src / "training_args.bin").write_bytes(b"not read")
    assert (src / "spiece.model").is_file()
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model"]["share"] == "none"
    assert sorted(k for k in tensors(tmp_path / "ckpt") if k.endswith("attention.qkv.weight")) == [
        "albert.layers.0.attention.qkv.weight", "albert.layers.1.attention.qkv.weight"]
    module, _, _ = load_model(tmp_path / "ckpt")
    ids, types, mask = batch()
    cls = "AlbertForPreTraining"
    assert max_error(ptm_outputs(module, cls, ids, types, mask), hf_outputs(hf_model, cls, ids, types, mask)) < ATOL
    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    assert json.loads((tmp_path / "back" / "config.json").read_text())["num_hidden_groups"] == 2


def test_hf_tokenizer_comes_along_both_ways(tmp_path, capsys, spiece):
    src, _ = hf_albert_dir(tmp_path, "AlbertForMaskedLM", spiece)
    assert cli(capsys, src, tmp_path / "ckpt")[0] == 0
    assert cli(capsys, tmp_path / "ckpt", tmp_path / "back")[0] == 0
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == [theirs(t)["input_ids"] for t in TEXTS]


def ptm_unigram_tokenizer(root: Path) -> Path:
    """A tokenizer as `ptm tokenize train --model unigram` makes it (BERT's special tokens first)."""
    train_tokenizer(iter(sample_paragraphs()), "unigram", 600).save(root / "tok")
    return root / "tok"


def ptm_native_checkpoint(root: Path, share: str = "all", objective: str = "mlm+sop") -> Path:
    """A checkpoint written by ptm's own code, as `ptm pretrain` writes it."""
    tokenizer = ptm_unigram_tokenizer(root)
    model = randomise(AlbertForPreTraining(AlbertConfig(600, 8, 16, 3, 2, 24, max_position_embeddings=32, share=share)), 3)
    model.tie_weights()
    config = {"arch": "albert", "model": model.config.to_dict(), "objective": objective, "task": None}
    return save_checkpoint(root / f"ckpt-{share}", config=config,
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=tokenizer)


@pytest.mark.parametrize("share", ["all", "none"])
def test_ptm_checkpoint_loads_in_transformers_and_comes_back_equal(tmp_path, capsys, share):
    ckpt = ptm_native_checkpoint(tmp_path, share)
    code, err = cli(capsys, ckpt, tmp_path / "hf")
    assert code == 0, err
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["architectures"] == ["AlbertForPreTraining"]
    assert hf_config["num_hidden_groups"] == (1 if share == "all" else 3)
    module, _, initialised = load_model(ckpt)
    assert initialised == []
    full = transformers.AlbertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ids, types, mask = batch(vocab=600)
    cls = "AlbertForPreTraining"
    assert max_error(ptm_outputs(module, cls, ids, types, mask), hf_outputs(full, cls, ids, types, mask)) < ATOL

    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = PtmTokenizer.load(ckpt)
    assert [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == ours.encode_batch(TEXTS)
    assert theirs.cls_token_id == ours.cls_id and theirs.mask_token_id == ours.mask_id

    code, err = cli(capsys, tmp_path / "hf", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(ckpt), tensors(tmp_path / "back"))
    assert PtmTokenizer.load(tmp_path / "back").encode_batch(TEXTS) == ours.encode_batch(TEXTS)


@pytest.mark.parametrize("share", ["attention", "ffn"])
def test_sharing_transformers_cannot_hold_is_refused_in_one_line(tmp_path, capsys, share):
    ckpt = ptm_native_checkpoint(tmp_path, share)
    code, err = cli(capsys, ckpt, tmp_path / "hf")
    err = err.strip()
    assert code == 2 and err.startswith("ptm: error:") and "\n" not in err, err
    assert f"--share {share}" in err and "no transformers equivalent" in err
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf*"))


def test_transformers_configs_ptm_cannot_represent_are_refused(tmp_path, capsys, spiece):
    src, _ = hf_albert_dir(tmp_path, "AlbertModel", spiece)
    for key, value, pattern in (("inner_group_num", 2, "inner_group_num 2"),
                                ("num_hidden_groups", 3, "num_hidden_groups 3"),
                                ("hidden_act", "relu", "hidden_act 'relu'")):
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, key: value}))
        code, err = cli(capsys, src, tmp_path / "out")
        assert code == 2 and pattern in err and err.count("\n") == 1, err
        (src / "config.json").write_text(json.dumps(config))
    assert not (tmp_path / "out").exists()


def test_a_converted_hf_albert_finetunes_and_extracts_features(tmp_path, capsys, monkeypatch, spiece):
    """HF AlbertModel -> ptm: finetuning, features and evaluation accept it through the family."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_albert_dir(tmp_path, "AlbertModel", spiece)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 5, encoding="utf-8")
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(10)),
                    encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", tmp_path / "ptm", "--task", "classification", "--train", data,
                           "--dev", data, "-o", tmp_path / "ft", "--max-steps", "2", "--max-len", "16", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ptm", text, "-o", tmp_path / "f.npy", "--layers", "all",
                           "--pool", "mean")
    assert code == 0, err
    assert np.load(tmp_path / "f.npy").shape[-2:] == (3, 16)  # L + 1 layers of width H
    code, _, err = run_cli(capsys, "eval", "-c", tmp_path / "ft" / "best", "--data", data)
    assert code == 0, err
    code, err = cli(capsys, tmp_path / "ft" / "best", tmp_path / "hf-classifier")
    assert code == 0, err
    assert json.loads((tmp_path / "hf-classifier" / "config.json").read_text())["architectures"] == [
        "AlbertForSequenceClassification"]


def test_pseudo_perplexity_onnx_and_pretraining_heads_of_an_albert(tmp_path, capsys, monkeypatch, spiece):
    """The paths that read the encoder through the family: eval's pseudo-perplexity, ONNX export, a finetuned
    checkpoint that still carries the SOP head."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, hf_model = hf_albert_dir(tmp_path, "AlbertForPreTraining", spiece)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 3, encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", "-c", tmp_path / "ptm", "--data", text, "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens_scored"] > 0 and math.isfinite(result["loss"]) and result["pseudo_accuracy"] is not None

    if importlib.util.find_spec("onnx") is not None:
        code, err = cli(capsys, tmp_path / "ptm", tmp_path / "onnx", "--to", "onnx")
        assert code == 0, err
        assert (tmp_path / "onnx" / "model.onnx").stat().st_size > 0

    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(6)),
                    encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", tmp_path / "ptm", "--task", "classification", "--train", data,
                           "-o", tmp_path / "ft", "--max-steps", "1", "--max-len", "16", "--no-progress")
    assert code == 0, err
    (finetuned,) = (tmp_path / "ft" / "checkpoints").iterdir()
    assert any(k.startswith("sop.") for k in load_file(finetuned / "model.safetensors")), "the SOP head stays in the checkpoint"
    code, err = cli(capsys, finetuned, tmp_path / "hf-classifier")
    assert code == 0, err
