"""ptm's RoBERTa against transformers' on tiny random configs, its tokenizer's framing, and ``ptm convert`` both ways."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from foreign_tokenizers import sample_paragraphs
from safetensors.torch import load_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.convert.ptm_model import load_model
from ptmcli.errors import PtmError
from ptmcli.finetuning.task_model import load_task_model
from ptmcli.models.registry import find_preset, get_family
from ptmcli.models.roberta import (
    PRESETS,
    RobertaConfig,
    RobertaForMaskedLM,
    position_ids,
    preset_config,
    state_dict_from_hf,
    state_dict_to_hf,
)
from ptmcli.pretraining.objective_table import OBJECTIVES
from ptmcli.tokenization.tokenizer import PtmTokenizer

transformers = pytest.importorskip("transformers")

PAD = 1
TINY = {"vocab_size": 97, "hidden_size": 32, "num_layers": 3, "num_heads": 4, "intermediate_size": 48,
        "max_position_embeddings": 40}
ATOL = 1e-5
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's order: <pad> is id 1
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said hello to na\u00efve visitors!",
         "  Leading and trailing   spaces  ", "A <mask> in the middle of a sentence."]
PAIRS = [("The anarchist movement spread.", "It reached Europe."), ("  spaces ", "Caf\u00e9 <mask>")]


def hf_config(**values) -> transformers.RobertaConfig:
    values = {**TINY, **values}
    return transformers.RobertaConfig(
        vocab_size=values["vocab_size"], hidden_size=values["hidden_size"], num_hidden_layers=values["num_layers"],
        num_attention_heads=values["num_heads"], intermediate_size=values["intermediate_size"],
        max_position_embeddings=values["max_position_embeddings"] + PAD + 1, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
    )


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random, LayerNorms and biases too, so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def random_pair(seed: int = 0):
    """A transformers RobertaForMaskedLM with every weight random and ptm's copy of it."""
    torch.manual_seed(seed)
    hf = randomise(transformers.RobertaForMaskedLM(hf_config()), seed)
    ours = RobertaForMaskedLM(RobertaConfig(**TINY))
    missing = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False).missing_keys
    assert sorted(missing) == ["roberta.pooler.dense.bias", "roberta.pooler.dense.weight"]
    ours.tie_weights()
    return hf, ours.eval()


def padded_batch(seed: int = 1, vocab: int = TINY["vocab_size"], batch: int = 4, length: int = 13):
    """Ids without padding ids among the real tokens, right-padded with the padding id, as ptm frames them."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 9:] = 0
    mask[min(3, batch - 1), 5:] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    chosen = (torch.rand(batch, length, generator=gen) < 0.3) & mask.bool()
    chosen[0, 2] = True
    labels = torch.where(chosen, torch.randint(0, vocab, (batch, length), generator=gen), -100)
    return ids, mask, labels


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


# -- the model against transformers --------------------------------------------------------------


def test_forward_and_loss_match_transformers():
    hf, ours = random_pair()
    ids, mask, labels = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, labels=labels)
        last, states = ours.roberta(ids, None, mask, output_hidden_states=True)
        out = ours(ids, None, mask, mlm_labels=labels)
    assert len(states) == len(ref.hidden_states) == TINY["num_layers"] + 1
    assert worst(zip(states, ref.hidden_states, strict=True)) < ATOL
    assert worst([(out["mlm_logits"], ref.logits[labels != -100])]) < ATOL
    assert abs(float(out["mlm_loss_sum"] / out["mlm_count"] - ref.loss)) < ATOL
    hits = (ref.logits.argmax(-1) == labels)[labels != -100].sum()
    assert int(out["mlm_correct"]) == int(hits)


def test_training_loss_and_gradients_match_transformers():
    hf, ours = random_pair(seed=3)
    ids, mask, labels = padded_batch(seed=4)
    ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
    out = ours(ids, None, mask, mlm_labels=labels)
    assert "mlm_logits" not in out
    loss = out["mlm_loss_sum"] / out["mlm_count"]
    assert abs(float((loss - ref.loss).detach())) < ATOL
    loss.backward()
    ref.loss.backward()
    hf_grads = state_dict_from_hf({name: p.grad for name, p in hf.named_parameters()})
    for name, param in ours.named_parameters():
        if name.startswith("roberta.pooler."):
            assert param.grad is None  # MLM alone never reads the pooler
            continue
        torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_positions_count_from_the_padding_id_and_stop_at_the_table():
    ids = torch.tensor([[0, 7, 8, 2, PAD, PAD], [0, 7, 2, 2, 9, 2]])
    assert position_ids(ids, PAD).tolist() == [[2, 3, 4, 5, 1, 1], [2, 3, 4, 5, 6, 7]]
    hf = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids
    assert torch.equal(position_ids(ids, PAD), hf(ids, PAD))
    config = RobertaConfig(**TINY)
    assert config.max_position_embeddings == get_family("roberta").position_limit(config) == 40
    model = RobertaForMaskedLM(config).eval()
    assert model.roberta.embeddings.position_embeddings.num_embeddings == config.position_rows == 40 + PAD + 1
    with torch.no_grad():
        model.roberta(torch.full((1, 40), 5))
        with pytest.raises(PtmError, match="sequence of 41 tokens is longer than max_position_embeddings 40"):
            model.roberta(torch.full((1, 41), 5))


def test_state_dict_round_trips_through_transformers_keys():
    hf, ours = random_pair()
    theirs = hf.state_dict()
    back = state_dict_to_hf(ours.state_dict())
    back.pop("roberta.pooler.dense.weight"), back.pop("roberta.pooler.dense.bias")
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    # transformers' RobertaModel keys have no "roberta." prefix and include the pooler.
    encoder = randomise(transformers.RobertaModel(hf_config()))
    mapped = state_dict_from_hf(encoder.state_dict())
    assert {k for k in mapped if not k.startswith("roberta.")} == set()
    assert "roberta.pooler.dense.weight" in mapped


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    config = preset_config(name)
    assert (config.max_position_embeddings, config.position_rows, config.type_vocab_size) == (512, 514, 1)
    hf = transformers.RobertaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=514, type_vocab_size=1)
    with torch.device("meta"):
        ours = RobertaForMaskedLM(config)
        encoder, masked = transformers.RobertaModel(hf), transformers.RobertaForMaskedLM(hf)
    assert sum(p.numel() for p in ours.roberta.parameters()) == sum(p.numel() for p in encoder.parameters())
    pooler = config.hidden_size * config.hidden_size + config.hidden_size
    assert ours.num_parameters() == sum(p.numel() for p in masked.parameters()) + pooler


def test_config_round_trip_errors_and_flops():
    config = preset_config("roberta-mini", vocab_size=1000, pad_token_id=1)
    assert RobertaConfig.from_dict(config.to_dict()) == config
    assert preset_config("roberta-tiny", pad_token_id=0).position_rows == 513
    with pytest.raises(PtmError, match="roberta config: unknown keys colour"):
        RobertaConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="roberta-tiny.*roberta-large"):
        preset_config("roberta-huge")
    assert find_preset("roberta-base").name == "roberta"
    model = RobertaForMaskedLM(RobertaConfig(**TINY))
    full, none = model.flops_per_token(16, mask_fraction=1.0), model.flops_per_token(16, mask_fraction=0.0)
    assert full - none == pytest.approx(6 * (32 * 32 + 97 * 32))
    with pytest.raises(PtmError, match="no next-sentence head"):
        model(torch.ones(1, 4, dtype=torch.long), nsp_labels=torch.zeros(1, dtype=torch.long))


# -- the family ---------------------------------------------------------------------------------


class _Tokenizer:
    cls_id, bos_id, pad_id, sep_id, eos_id, unk_id, mask_id, vocab_size = 0, 0, 1, 2, 2, 3, 4, 97


def test_family_frames_pairs_with_a_doubled_separator_and_one_segment():
    family = get_family("roberta")
    framing = family.framing(_Tokenizer())
    assert (framing.prefix, framing.middle, framing.suffix, framing.segments, framing.pad_id) == ((0,), (2, 2), (2,), False, 1)
    assert family.head_parts == {"pooler": "roberta.pooler.", "mlm": "mlm."}
    assert family.pooler_trained("mlm", ["pooler"])  # RoBERTa's recipe learns its head's dense on the task
    config = family.model_config("roberta-tiny", _Tokenizer())
    assert (config.vocab_size, config.pad_token_id, config.max_position_embeddings) == (97, 1, 512)
    assert family.head_dropout(config) == config.hidden_dropout
    assert family.head_dropout(RobertaConfig(**TINY, classifier_dropout=0.3)) == 0.3
    model = family.build(config).eval()
    ids, mask, labels = padded_batch(vocab=97)
    pair_types = torch.ones_like(ids)  # what tasks lay out for pairs: RoBERTa reads none of it
    with torch.no_grad():
        assert torch.equal(family.top(model, ids, pair_types, mask), model.roberta(ids, None, mask))
    no_pad = type("NoPad", (_Tokenizer,), {"pad_id": None})()
    with pytest.raises(PtmError, match="no padding token"):
        family.framing(no_pad)
    with pytest.raises(PtmError, match="no pad token, which RoBERTa pretraining needs"):
        family.check_tokenizer(no_pad, "shards")
    batch = {"mlm_input_ids": ids, "token_type_ids": pair_types, "attention_mask": mask, "mlm_labels": labels}
    loss_sum, count = family.lm_loss(model, batch, None, 4, None)
    assert int(count) == int((labels != -100).sum()) and float(loss_sum.detach()) > 0


# -- ptm convert --------------------------------------------------------------------------------

ROBERTA_CLASSES = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                   "RobertaForTokenClassification"]
HF_SMALL = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24,
            "max_position_embeddings": 34, "type_vocab_size": 1, "layer_norm_eps": 1e-5}


def cli(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of `ptm convert ARGS`, leaving out what ran before it."""
    capsys.readouterr()
    code, _out, err = run_cli(capsys, "convert", *args)
    return code, err


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A RoBERTa tokenizer directory as published: byte-level BPE learned here, saved by transformers'
    RobertaTokenizer, with vocab.json + merges.txt and special_tokens_map.json beside tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("roberta-tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sample_paragraphs(), trainer)
    files = root / "files"
    files.mkdir()
    tokenizer.model.save(str(files))  # vocab.json + merges.txt
    directory = root / "published"
    transformers.RobertaTokenizer.from_pretrained(files).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files / name, directory / name)
    (directory / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>", "pad_token": "<pad>",
        "sep_token": "</s>", "unk_token": "<unk>"}), encoding="utf-8")
    return directory


def hf_roberta_dir(root: Path, cls: str, tokenizer: Path | None, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A transformers RoBERTa of class ``cls`` with random weights, saved beside the tokenizer files, a
    model card and a finetuning script's training_args.bin."""
    labels = {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}} \
        if "Classification" in cls else {}
    config = transformers.RobertaConfig(vocab_size=1000, pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
                                        **HF_SMALL, **labels)
    torch.manual_seed(seed)
    model = randomise(getattr(transformers, cls)(config), seed)
    directory = root / f"hf-{cls}"
    model.save_pretrained(directory)
    if tokenizer is not None:
        for path in tokenizer.iterdir():
            shutil.copy(path, directory / path.name)
    (directory / "README.md").write_text("# a model card\n", encoding="utf-8")
    (directory / "training_args.bin").write_bytes(b"not read")
    return directory, model


def ptm_outputs(module, cls: str, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if cls.endswith("Classification"):
            return {"logits": module(ids, None, mask)}
        last, states = module.roberta(ids, None, mask, output_hidden_states=True)
        out = {"hidden_states": states}
        if cls == "RobertaModel":
            out["pooler_output"] = module.roberta.pool(last)
        if cls == "RobertaForMaskedLM":
            out["logits"] = module.mlm(last)
    return out


def hf_outputs(model, cls: str, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        out = {"logits": getattr(ref, "logits", None), "hidden_states": ref.hidden_states}
        if cls == "RobertaModel":
            out["pooler_output"] = ref.pooler_output
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


@pytest.mark.parametrize("cls", ROBERTA_CLASSES)
def test_hf_class_parity_and_lossless_round_trip(tmp_path, capsys, published, cls):
    src, hf_model = hf_roberta_dir(tmp_path, cls, published)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "roberta" and config["model"]["pad_token_id"] == PAD
    assert config["model"]["max_position_embeddings"] == HF_SMALL["max_position_embeddings"] - PAD - 1
    assert config["objective"] == ("mlm" if cls == "RobertaForMaskedLM" else None)
    module, _, initialised = load_model(tmp_path / "ckpt")
    ids, mask, _ = padded_batch(vocab=1000, batch=3, length=11)
    assert max_error(ptm_outputs(module, cls, ids, mask), hf_outputs(hf_model, cls, ids, mask)) < ATOL
    if cls == "RobertaForMaskedLM":
        assert initialised == ["pooler"]

    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [cls]
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    assert max_error(hf_outputs(reloaded, cls, ids, mask), hf_outputs(hf_model, cls, ids, mask)) == 0.0


def test_tokenizer_gives_transformers_ids_with_its_framing_both_ways(tmp_path, capsys, published):
    src, _ = hf_roberta_dir(tmp_path, "RobertaForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ckpt")[0] == 0
    assert cli(capsys, tmp_path / "ckpt", tmp_path / "back")[0] == 0
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    framing = get_family("roberta").framing(ours)
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    singles = [[*framing.prefix, *ids, *framing.suffix] for ids in ours.encode_batch(TEXTS)]
    assert singles == [theirs(t)["input_ids"] for t in TEXTS]
    pairs = [[*framing.prefix, *a, *framing.middle, *b, *framing.suffix]
             for a, b in zip(ours.encode_batch([a for a, _ in PAIRS]), ours.encode_batch([b for _, b in PAIRS]))]
    assert pairs == [theirs(a, b)["input_ids"] for a, b in PAIRS]
    assert theirs.decode(pairs[0][:2]).startswith("<s>") and theirs.convert_ids_to_tokens(pairs[0]).count("</s>") == 3
    # Finetuning lays pairs out as transformers does: <s> A </s></s> B </s>, segment ids unused.
    from ptmcli.tasks.encode import encode_examples
    from ptmcli.tasks.examples import LabeledExample

    rows = encode_examples([LabeledExample(texts=[a, b], label="x", line=i + 1) for i, (a, b) in enumerate(PAIRS)],
                           ours, "classification", "roberta", 128, ["x"])
    assert [row["input_ids"].tolist() for row in rows] == pairs
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(a, b)["input_ids"] for a, b in PAIRS] == pairs
    assert [again(t)["input_ids"] for t in TEXTS] == singles


def test_a_roberta_without_its_tokenizer_is_refused_in_one_line(tmp_path, capsys, published):
    src, _ = hf_roberta_dir(tmp_path, "RobertaForMaskedLM", None)
    code, err = cli(capsys, src, tmp_path / "out")
    err = err.strip()
    assert code == 2 and err.startswith("ptm: error:") and "\n" not in err, err
    assert "no tokenizer files" in err and "a RoBERTa converts only with its tokenizer" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))

    for path in published.iterdir():
        shutil.copy(path, src / path.name)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "pad_token_id": 0}))
    code, err = cli(capsys, src, tmp_path / "out")
    assert code == 2 and "the tokenizer has padding id 1 but config.json's pad_token_id is 0" in err, err
    for key, value, pattern in (("hidden_act", "relu", "hidden_act 'relu'"), ("is_decoder", True, "decoder"),
                                ("max_position_embeddings", 2, "leaves no position after the padding id 1")):
        (src / "config.json").write_text(json.dumps({**config, key: value}))
        code, err = cli(capsys, src, tmp_path / "out")
        assert code == 2 and pattern in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def ptm_native_checkpoint(root: Path) -> Path:
    """A checkpoint written by ptm's own code, as `ptm pretrain --arch roberta` would write it, with a
    tokenizer trained by `ptm tokenize train --model bytelevel --special-tokens roberta`."""
    from ptmcli.tokenization.train import train_tokenizer

    tokenizer = train_tokenizer(iter(sample_paragraphs()), "bytelevel", 600, special="roberta")
    tokenizer.save(root / "tok")
    config = preset_config("roberta-tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
                           hidden_size=16, num_heads=2, intermediate_size=24, max_position_embeddings=40)
    model = randomise(RobertaForMaskedLM(config), 3)
    model.tie_weights()
    checkpoint = {"arch": "roberta", "model": config.to_dict(), "objective": "mlm", "task": None}
    return save_checkpoint(root / "ckpt", config=checkpoint, weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=root / "tok")


def test_ptm_checkpoint_loads_in_transformers_and_comes_back_equal(tmp_path, capsys):
    ckpt = ptm_native_checkpoint(tmp_path)
    code, err = cli(capsys, ckpt, tmp_path / "hf")
    assert code == 0, err
    assert "left out pooler (RobertaForMaskedLM has no place for it" in err  # MLM pretraining never trains it
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == ["RobertaForMaskedLM"] and written["pad_token_id"] == 1
    assert written["max_position_embeddings"] == 40 + 1 + 1  # transformers counts the rows below <pad> too
    assert (written["bos_token_id"], written["eos_token_id"]) == (0, 2)
    module, _, _ = load_model(ckpt)
    full = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask, _ = padded_batch(vocab=600, batch=3, length=11)
    cls = "RobertaForMaskedLM"
    assert max_error(ptm_outputs(module, cls, ids, mask), hf_outputs(full, cls, ids, mask)) < ATOL

    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = PtmTokenizer.load(ckpt)
    framing = get_family("roberta").framing(ours)
    assert [theirs(t)["input_ids"] for t in TEXTS] == [[*framing.prefix, *i, *framing.suffix] for i in ours.encode_batch(TEXTS)]
    assert theirs.mask_token_id == ours.mask_id and theirs.pad_token_id == ours.pad_id == 1

    code, err = cli(capsys, tmp_path / "hf", tmp_path / "back")
    assert code == 0, err
    kept = {k: v for k, v in tensors(ckpt).items() if not k.startswith("roberta.pooler.")}
    assert same_tensors(kept, tensors(tmp_path / "back"))


def labeled_data(root: Path, rows: int = 10) -> Path:
    data = root / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(rows)),
                    encoding="utf-8")
    return data


def test_a_converted_roberta_finetunes_extracts_features_and_exports_its_classifier(tmp_path, capsys, monkeypatch, published):
    """HF RobertaModel -> ptm: finetuning reads <s> through the pooler (RoBERTa's head), features have L + 1
    layers, and the finetuned model goes back as a RobertaForSequenceClassification that predicts the same."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_roberta_dir(tmp_path, "RobertaModel", published)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 5, encoding="utf-8")
    data = labeled_data(tmp_path)
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", tmp_path / "ptm", "--task", "classification", "--train", data,
                           "--dev", data, "-o", tmp_path / "ft", "--max-steps", "2", "--max-len", "16", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ptm", text, "-o", tmp_path / "f.npy", "--layers", "all",
                           "--pool", "cls")
    assert code == 0, err
    assert np.load(tmp_path / "f.npy").shape[-2:] == (3, 16)  # L + 1 layers of width H
    code, _, err = run_cli(capsys, "eval", "-c", tmp_path / "ft" / "best", "--data", data)
    assert code == 0, err

    code, err = cli(capsys, tmp_path / "ft" / "best", tmp_path / "hf-classifier")
    assert code == 0, err
    hf = transformers.RobertaForSequenceClassification.from_pretrained(tmp_path / "hf-classifier").eval()
    task_model, _, tokenizer = load_task_model(tmp_path / "ft" / "best")
    framing = get_family("roberta").framing(tokenizer)
    rows = [[*framing.prefix, *ids, *framing.suffix] for ids in tokenizer.encode_batch(["the cat sat", "hello world, again"])]
    ids = torch.full((2, max(map(len, rows))), framing.pad_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    with torch.no_grad():
        ours = task_model({"input_ids": ids, "attention_mask": mask})["logits"]
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    assert worst([(ours, theirs)]) < ATOL


def test_pseudo_perplexity_of_a_converted_roberta(tmp_path, capsys, monkeypatch, published):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_roberta_dir(tmp_path, "RobertaForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 3, encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", "-c", tmp_path / "ptm", "--data", text, "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens_scored"] > 0 and math.isfinite(result["loss"]) and result["pseudo_accuracy"] is not None


@pytest.mark.skipif("roberta" not in OBJECTIVES["mlm"].families,
                    reason="the mlm row of ptmcli/pretraining/objective_table.py does not list roberta yet")
def test_continued_pretraining_from_a_converted_roberta(tmp_path, capsys, monkeypatch, published):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_roberta_dir(tmp_path, "RobertaForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 20, encoding="utf-8")
    code, _, err = run_cli(capsys, "tokenize", "encode", text, "--tokenizer", tmp_path / "ptm", "-o", tmp_path / "shards")
    assert code == 0, err
    code, _, err = run_cli(capsys, "pretrain", "--init-from", tmp_path / "ptm", "--arch", "roberta", "--objective", "mlm",
                           "--data", tmp_path / "shards", "-o", tmp_path / "pre", "--seq-len", "24", "--batch-size", "2",
                           "--max-steps", "2", "--eval-rows", "0", "--no-progress")
    assert code == 0, err
    (checkpoint,) = (tmp_path / "pre" / "checkpoints").iterdir()
    assert json.loads((checkpoint / "config.json").read_text())["arch"] == "roberta"
    assert cli(capsys, checkpoint, tmp_path / "hf")[0] == 0
