"""ptm's DistilBERT against transformers' on tiny random configs, its tokenizer, and ``ptm convert`` both ways."""

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
from ptmcli.models.distilbert import (
    PRESETS,
    DistilBertConfig,
    DistilBertForMaskedLM,
    preset_config,
    sinusoidal_table,
    state_dict_from_hf,
    state_dict_to_hf,
)
from ptmcli.models.registry import find_preset, get_family
from ptmcli.pretraining.objective_table import OBJECTIVES
from ptmcli.tokenization.tokenizer import PtmTokenizer

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 97, "hidden_size": 32, "num_layers": 3, "num_heads": 4, "intermediate_size": 48,
        "max_position_embeddings": 40}
ATOL = 1e-5
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said HELLO to na\u00efve visitors!",
         "  Leading and trailing   spaces  ", "A [MASK] in the middle of a sentence."]
PAIRS = [("The anarchist movement spread.", "It reached Europe."), ("  spaces ", "Caf\u00e9 [MASK]")]


def hf_config(**values) -> transformers.DistilBertConfig:
    values = {**TINY, **values}
    return transformers.DistilBertConfig(
        vocab_size=values["vocab_size"], dim=values["hidden_size"], n_layers=values["num_layers"],
        n_heads=values["num_heads"], hidden_dim=values["intermediate_size"],
        max_position_embeddings=values["max_position_embeddings"],
        sinusoidal_pos_embds=values.get("sinusoidal_positions", False),
    )


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random, LayerNorms and biases too, so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def random_pair(seed: int = 0, **values):
    """A transformers DistilBertForMaskedLM with every weight random and ptm's copy of it."""
    torch.manual_seed(seed)
    hf = randomise(transformers.DistilBertForMaskedLM(hf_config(**values)), seed)
    ours = DistilBertForMaskedLM(DistilBertConfig(**{**TINY, **values}))
    missing = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False).missing_keys
    assert sorted(missing) == ["distilbert.pooler.dense.bias", "distilbert.pooler.dense.weight"]
    ours.tie_weights()
    return hf, ours.eval()


def padded_batch(seed: int = 1, vocab: int = TINY["vocab_size"], batch: int = 4, length: int = 13):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 9:] = 0
    mask[min(3, batch - 1), 5:] = 0
    chosen = (torch.rand(batch, length, generator=gen) < 0.3) & mask.bool()
    chosen[0, 2] = True
    labels = torch.where(chosen, torch.randint(0, vocab, (batch, length), generator=gen), -100)
    return ids, mask, labels


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


# -- the model against transformers --------------------------------------------------------------


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_forward_and_loss_match_transformers(sinusoidal):
    hf, ours = random_pair(sinusoidal_positions=sinusoidal)
    ids, mask, labels = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, labels=labels)
        last, states = ours.distilbert(ids, None, mask, output_hidden_states=True)
        out = ours(ids, torch.ones_like(ids), mask, mlm_labels=labels)  # segment ids are not DistilBERT's
    assert len(states) == len(ref.hidden_states) == TINY["num_layers"] + 1
    assert worst(zip(states, ref.hidden_states, strict=True)) < ATOL
    assert worst([(out["mlm_logits"], ref.logits[labels != -100])]) < ATOL
    assert abs(float(out["mlm_loss_sum"] / out["mlm_count"] - ref.loss)) < ATOL


def test_training_loss_and_gradients_match_transformers():
    hf, ours = random_pair(seed=3)
    ids, mask, labels = padded_batch(seed=4)
    ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
    out = ours(ids, None, mask, mlm_labels=labels)
    loss = out["mlm_loss_sum"] / out["mlm_count"]
    assert abs(float((loss - ref.loss).detach())) < ATOL
    loss.backward()
    ref.loss.backward()
    hf_grads = state_dict_from_hf({name: p.grad for name, p in hf.named_parameters()})
    for name, param in ours.named_parameters():
        if name.startswith("distilbert.pooler."):
            continue
        torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_sinusoidal_positions_are_transformers_table_and_get_no_gradient():
    fresh = transformers.DistilBertModel(hf_config(sinusoidal_positions=True))
    torch.testing.assert_close(sinusoidal_table(40, 32), fresh.embeddings.position_embeddings.weight.detach(),
                               atol=1e-6, rtol=0)
    model = DistilBertForMaskedLM(DistilBertConfig(**TINY, sinusoidal_positions=True)).train()
    table = model.distilbert.embeddings.position_embeddings.weight
    assert torch.equal(table, sinusoidal_table(40, 32)) and not table.requires_grad
    ids, mask, labels = padded_batch()
    table.requires_grad_(True)  # what gradual unfreezing does: still no gradient reaches it
    out = model(ids, None, mask, mlm_labels=labels)
    out["mlm_loss_sum"].backward()
    assert table.grad is None and model.distilbert.embeddings.word_embeddings.weight.grad is not None


def test_dropout_leaves_the_attention_branch_alone():
    """DistilBERT drops out the feed-forward branch only: with attention dropout 0 and the feed-forward
    branch zeroed, a training-mode block is deterministic."""
    model = DistilBertForMaskedLM(DistilBertConfig(**TINY, hidden_dropout=0.5, attention_dropout=0.0)).train()
    block = model.distilbert.layers[0]
    with torch.no_grad():
        block.ffn.down.weight.zero_()
        block.ffn.down.bias.zero_()
    x = torch.randn(2, 5, 32)
    assert torch.equal(block(x), block(x))


def test_state_dict_round_trips_through_transformers_keys():
    hf, ours = random_pair()
    theirs = hf.state_dict()
    back = state_dict_to_hf(ours.state_dict())
    back.pop("pre_classifier.weight"), back.pop("pre_classifier.bias")
    assert set(back) == set(theirs)
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    bare = state_dict_from_hf(transformers.DistilBertModel(hf_config()).state_dict())
    assert bare and all(k.startswith("distilbert.") for k in bare)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    config = preset_config(name)
    hf = transformers.DistilBertConfig(vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_layers,
                                       n_heads=config.num_heads, hidden_dim=config.intermediate_size)
    with torch.device("meta"):
        ours = DistilBertForMaskedLM(config)
        encoder, masked = transformers.DistilBertModel(hf), transformers.DistilBertForMaskedLM(hf)
    pooler = config.hidden_size * config.hidden_size + config.hidden_size
    assert sum(p.numel() for p in ours.distilbert.parameters()) == sum(p.numel() for p in encoder.parameters()) + pooler
    assert ours.num_parameters() == sum(p.numel() for p in masked.parameters()) + pooler


def test_config_round_trip_and_errors():
    config = preset_config("distilbert-mini", vocab_size=1000)
    assert DistilBertConfig.from_dict(config.to_dict()) == config
    assert (config.type_vocab_size, config.classifier_dropout, config.sinusoidal_positions) == (0, 0.2, False)
    with pytest.raises(PtmError, match="type_vocab_size must be 0"):
        DistilBertConfig(**TINY, type_vocab_size=2)
    with pytest.raises(PtmError, match="distilbert config: unknown keys colour"):
        DistilBertConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="distilbert-tiny.*distilbert-base"):
        preset_config("distilbert-huge")
    assert find_preset("distilbert-base").name == "distilbert"
    assert "token_type_embeddings" not in str(list(DistilBertForMaskedLM(DistilBertConfig(**TINY)).state_dict()))


class _Tokenizer:
    pad_id, unk_id, cls_id, sep_id, mask_id, vocab_size = 0, 1, 2, 3, 4, 97


def test_family_frames_as_bert_without_segments():
    family = get_family("distilbert")
    framing = family.framing(_Tokenizer())
    assert (framing.prefix, framing.middle, framing.suffix, framing.segments) == ((2,), (3,), (3,), False)
    assert family.head_parts == {"pooler": "distilbert.pooler.", "mlm": "mlm."}
    assert family.pooler_trained("mlm", ["pooler"])  # DistilBERT's recipe learns pre_classifier on the task
    config = family.model_config("distilbert-tiny", _Tokenizer())
    assert family.head_dropout(config) == 0.2
    model = family.build(config).eval()
    ids, mask, labels = padded_batch()
    with torch.no_grad():
        pooled = family.pool(model, family.top(model, ids, torch.ones_like(ids), mask))
    assert pooled.shape == (4, 128) and bool((pooled >= 0).all())  # pre_classifier + ReLU
    batch = {"mlm_input_ids": ids, "token_type_ids": torch.ones_like(ids), "attention_mask": mask, "mlm_labels": labels}
    loss_sum, count = family.lm_loss(model, batch, None, 4, None)
    assert int(count) == int((labels != -100).sum()) and float(loss_sum.detach()) > 0


# -- ptm convert --------------------------------------------------------------------------------

DISTILBERT_CLASSES = ["DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                      "DistilBertForTokenClassification"]
HF_SMALL = {"dim": 16, "n_layers": 2, "n_heads": 2, "hidden_dim": 24, "max_position_embeddings": 32}


def cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code, _out, err = run_cli(capsys, "convert", *args)
    return code, err


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A DistilBERT tokenizer directory as published: an uncased WordPiece learned here, saved by transformers'
    DistilBertTokenizer, with vocab.txt and special_tokens_map.json beside tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("distilbert-tokenizer")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=BERT_SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(sample_paragraphs(), trainer)
    vocab = tokenizer.get_vocab()
    files = root / "files"
    files.mkdir()
    (files / "vocab.txt").write_text("".join(f"{t}\n" for t in sorted(vocab, key=vocab.__getitem__)), encoding="utf-8")
    directory = root / "published"
    transformers.DistilBertTokenizer.from_pretrained(files).save_pretrained(directory)
    shutil.copy(files / "vocab.txt", directory / "vocab.txt")
    (directory / "special_tokens_map.json").write_text(json.dumps({
        "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}),
        encoding="utf-8")
    return directory


def hf_distilbert_dir(root: Path, cls: str, tokenizer: Path | None, seed: int = 0, **config) -> tuple[Path, torch.nn.Module]:
    """A transformers DistilBERT of class ``cls`` with random weights, saved beside the tokenizer files, a
    model card and a finetuning script's training_args.bin."""
    labels = {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}} \
        if "Classification" in cls else {}
    hf = transformers.DistilBertConfig(vocab_size=1000, **{**HF_SMALL, **config}, **labels)
    torch.manual_seed(seed)
    model = randomise(getattr(transformers, cls)(hf), seed)
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
        last, states = module.distilbert(ids, None, mask, output_hidden_states=True)
        out = {"hidden_states": states}
        if cls == "DistilBertForMaskedLM":
            out["logits"] = module.mlm(last)
    return out


def hf_outputs(model, cls: str, ids, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return {"logits": getattr(ref, "logits", None), "hidden_states": ref.hidden_states}


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


@pytest.mark.parametrize("cls", DISTILBERT_CLASSES)
def test_hf_class_parity_and_lossless_round_trip(tmp_path, capsys, published, cls):
    src, hf_model = hf_distilbert_dir(tmp_path, cls, published)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "distilbert" and config["model"]["type_vocab_size"] == 0
    assert config["objective"] == ("mlm" if cls == "DistilBertForMaskedLM" else None)
    module, _, initialised = load_model(tmp_path / "ckpt")
    ids, mask, _ = padded_batch(vocab=1000, batch=3, length=11)
    assert max_error(ptm_outputs(module, cls, ids, mask), hf_outputs(hf_model, cls, ids, mask)) < ATOL
    if cls == "DistilBertForMaskedLM":
        assert initialised == ["pooler"]

    code, err = cli(capsys, tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [cls]
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    assert max_error(hf_outputs(reloaded, cls, ids, mask), hf_outputs(hf_model, cls, ids, mask)) == 0.0


def test_sinusoidal_positions_convert_both_ways(tmp_path, capsys, published):
    src, hf_model = hf_distilbert_dir(tmp_path, "DistilBertForMaskedLM", published, sinusoidal_pos_embds=True)
    assert cli(capsys, src, tmp_path / "ckpt")[0] == 0
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model"]["sinusoidal_positions"] is True
    module, _, _ = load_model(tmp_path / "ckpt")
    ids, mask, _ = padded_batch(vocab=1000, batch=3, length=11)
    cls = "DistilBertForMaskedLM"
    assert max_error(ptm_outputs(module, cls, ids, mask), hf_outputs(hf_model, cls, ids, mask)) < ATOL
    assert cli(capsys, tmp_path / "ckpt", tmp_path / "back")[0] == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["sinusoidal_pos_embds"] is True
    assert same_tensors(tensors(src), tensors(tmp_path / "back"))


def test_tokenizer_gives_transformers_ids_with_its_framing_both_ways(tmp_path, capsys, published):
    src, _ = hf_distilbert_dir(tmp_path, "DistilBertForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ckpt")[0] == 0
    assert cli(capsys, tmp_path / "ckpt", tmp_path / "back")[0] == 0
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    framing = get_family("distilbert").framing(ours)
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    singles = [[*framing.prefix, *ids, *framing.suffix] for ids in ours.encode_batch(TEXTS)]
    assert singles == [theirs(t)["input_ids"] for t in TEXTS]
    pairs = [[*framing.prefix, *a, *framing.middle, *b, *framing.suffix]
             for a, b in zip(ours.encode_batch([a for a, _ in PAIRS]), ours.encode_batch([b for _, b in PAIRS]))]
    assert pairs == [theirs(a, b)["input_ids"] for a, b in PAIRS]
    assert theirs.convert_ids_to_tokens(pairs[0]).count("[SEP]") == 2
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(a, b)["input_ids"] for a, b in PAIRS] == pairs


def test_without_tokenizer_converts_with_a_note_and_bad_configs_are_refused(tmp_path, capsys):
    src, _ = hf_distilbert_dir(tmp_path, "DistilBertModel", None)
    code, err = cli(capsys, src, tmp_path / "ckpt")
    assert code == 0 and "has no tokenizer files: the result has none either" in err, err
    config = json.loads((src / "config.json").read_text())
    for key, value, pattern in (("activation", "relu", "activation 'relu'"),
                                ("tie_word_embeddings", False, "tie_word_embeddings false")):
        (src / "config.json").write_text(json.dumps({**config, key: value}))
        code, err = cli(capsys, src, tmp_path / "out")
        assert code == 2 and pattern in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def ptm_native_checkpoint(root: Path, layer_norm_eps: float = 1e-12) -> Path:
    """A checkpoint written by ptm's own code, with a `ptm tokenize train --model wordpiece` tokenizer."""
    from ptmcli.tokenization.train import train_tokenizer

    tokenizer = train_tokenizer(iter(sample_paragraphs()), "wordpiece", 600)
    tokenizer.save(root / f"tok-{layer_norm_eps}")
    config = preset_config("distilbert-tiny", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
                           hidden_size=16, num_heads=2, intermediate_size=24, max_position_embeddings=40,
                           layer_norm_eps=layer_norm_eps)
    model = randomise(DistilBertForMaskedLM(config), 3)
    model.tie_weights()
    checkpoint = {"arch": "distilbert", "model": config.to_dict(), "objective": "mlm", "task": None}
    return save_checkpoint(root / f"ckpt-{layer_norm_eps}", config=checkpoint,
                           weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=root / f"tok-{layer_norm_eps}")


def test_ptm_checkpoint_loads_in_transformers_and_comes_back_equal(tmp_path, capsys):
    ckpt = ptm_native_checkpoint(tmp_path)
    code, err = cli(capsys, ckpt, tmp_path / "hf")
    assert code == 0, err
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["DistilBertForMaskedLM"]
    module, _, _ = load_model(ckpt)
    full = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids, mask, _ = padded_batch(vocab=600, batch=3, length=11)
    cls = "DistilBertForMaskedLM"
    assert max_error(ptm_outputs(module, cls, ids, mask), hf_outputs(full, cls, ids, mask)) < ATOL
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = PtmTokenizer.load(ckpt)
    assert [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == ours.encode_batch(TEXTS)
    code, err = cli(capsys, tmp_path / "hf", tmp_path / "back")
    assert code == 0, err
    kept = {k: v for k, v in tensors(ckpt).items() if not k.startswith("distilbert.pooler.")}
    assert same_tensors(kept, tensors(tmp_path / "back"))

    other = ptm_native_checkpoint(tmp_path, layer_norm_eps=1e-5)
    code, err = cli(capsys, other, tmp_path / "hf-eps")
    assert code == 2 and "layer_norm_eps 1e-05 has no transformers equivalent" in err, err
    assert not (tmp_path / "hf-eps").exists()


def test_a_converted_distilbert_finetunes_evaluates_and_exports_its_classifier(tmp_path, capsys, monkeypatch, published):
    """HF DistilBertForMaskedLM -> ptm: pseudo-perplexity, features, finetuning through pre_classifier + ReLU,
    and the finetuned model back as a DistilBertForSequenceClassification that predicts the same."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_distilbert_dir(tmp_path, "DistilBertForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 3, encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", "-c", tmp_path / "ptm", "--data", text, "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert result["tokens_scored"] > 0 and math.isfinite(result["loss"])
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ptm", text, "-o", tmp_path / "f.npy",
                           "--layers", "all", "--pool", "mean")
    assert code == 0, err
    assert np.load(tmp_path / "f.npy").shape[-2:] == (3, 16)

    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(10)),
                    encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", tmp_path / "ptm", "--task", "classification", "--train", data,
                           "--dev", data, "-o", tmp_path / "ft", "--max-steps", "2", "--max-len", "16", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", "-c", tmp_path / "ft" / "best", "--data", data)
    assert code == 0, err
    code, err = cli(capsys, tmp_path / "ft" / "best", tmp_path / "hf-classifier")
    assert code == 0, err
    hf = transformers.DistilBertForSequenceClassification.from_pretrained(tmp_path / "hf-classifier").eval()
    task_model, _, tokenizer = load_task_model(tmp_path / "ft" / "best")
    framing = get_family("distilbert").framing(tokenizer)
    rows = [[*framing.prefix, *ids, *framing.suffix] for ids in tokenizer.encode_batch(["the cat sat", "hello world, again"])]
    ids = torch.full((2, max(map(len, rows))), framing.pad_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    with torch.no_grad():
        ours = task_model({"input_ids": ids, "attention_mask": mask})["logits"]
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    assert worst([(ours, theirs)]) < ATOL


@pytest.mark.skipif("distilbert" not in OBJECTIVES["mlm"].families,
                    reason="the mlm row of ptmcli/pretraining/objective_table.py does not list distilbert")
def test_continued_pretraining_from_a_converted_distilbert(tmp_path, capsys, monkeypatch, published):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _ = hf_distilbert_dir(tmp_path, "DistilBertForMaskedLM", published)
    assert cli(capsys, src, tmp_path / "ptm")[0] == 0
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 20, encoding="utf-8")
    code, _, err = run_cli(capsys, "tokenize", "encode", text, "--tokenizer", tmp_path / "ptm", "-o", tmp_path / "shards")
    assert code == 0, err
    code, _, err = run_cli(capsys, "pretrain", "--init-from", tmp_path / "ptm", "--arch", "distilbert", "--objective", "mlm",
                           "--data", tmp_path / "shards", "-o", tmp_path / "pre", "--seq-len", "24", "--batch-size", "2",
                           "--max-steps", "2", "--eval-rows", "0", "--no-progress")
    assert code == 0, err
    (checkpoint,) = (tmp_path / "pre" / "checkpoints").iterdir()
    assert cli(capsys, checkpoint, tmp_path / "hf")[0] == 0


def test_a_distilbert_exports_to_onnx_without_segment_inputs(tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnxruntime

    code, err = cli(capsys, ptm_native_checkpoint(tmp_path), tmp_path / "onnx", "--to", "onnx")
    assert code == 0, err
    assert "onnxruntime check" in err
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "token_type_ids" not in {i.name for i in session.get_inputs()}
