"""`ptm compress`: int8 checkpoints (format, loading, closeness to fp32, size) and attention-head pruning
(gate gradients, equivalence with masking, the smaller checkpoint in use), and the refusals."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import run_cli, save_pretrained, sentiment_rows
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import (
    list_step_checkpoints,
    read_config,
)
from ptmcli.checkpoint.loading import load_checkpoint
from ptmcli.compress.prune import attention_layers, head_gates, head_importance
from ptmcli.compress.quantize import Int8Linear
from ptmcli.finetuning.task_model import load_task_model
from ptmcli.models import albert, bert
from ptmcli.models.registry import get_family
from ptmcli.tokenization.train import train_tokenizer

FILLER = "the of and a in to was is city river music old new house".split()
FT = ["--batch-size", "8", "--max-len", "32", "--no-progress", "--log-every", "50", "--threads", "2"]






@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer, labeled and text data, a random tiny BERT and ALBERT (whose blocks share weights: no per-layer heads)."""
    root = tmp_path_factory.mktemp("compress")
    data = {name: sentiment_rows(n, seed, FILLER) for name, n, seed in (("train", 200, 0), ("dev", 64, 1))}
    for name, rows in data.items():
        (root / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    (root / "text.txt").write_text("".join(f"{s}\n" for s, _ in data["train"][:48]))
    tokenizer = train_tokenizer(iter([s for s, _ in data["train"]] * 3), "wordpiece", 120)
    tokenizer.save(root / "tok")
    torch.manual_seed(0)
    config = bert.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                             intermediate_size=128, max_position_embeddings=64)
    model = bert.BertForPreTraining(config)
    pretrained = save_pretrained(root, "bert", model, "bert", tokenizer, root / "tok")
    shared = albert.AlbertConfig(tokenizer.vocab_size, 16, 32, 2, 2, 64, max_position_embeddings=64)
    other = save_pretrained(root, "albert", get_family("albert").build(shared), "albert", tokenizer, root / "tok")
    return {"root": root, "bert": pretrained, "albert": other}


@pytest.fixture(scope="module")
def finetuned(world):
    """The BERT finetuned on the labeled data (its best dev checkpoint)."""
    from ptmcli.cli.main import main

    root = world["root"]
    try:
        main([str(a) for a in ["finetune", "--checkpoint", world["bert"], "--task", "classification", "--train",
                               root / "train.tsv", "--dev", root / "dev.tsv", "-o", root / "sst", "--epochs", "4",
                               "--lr", "3e-3", *FT]])
    except SystemExit as stop:
        assert not stop.code
    return root / "sst" / "best"


# -- int8 -----------------------------------------------------------------------------------------


def test_int8_checkpoint_holds_int8_tensors_and_scales_and_is_smaller(world, finetuned, tmp_path, capsys):
    out = tmp_path / "int8"
    code, err = ptm(capsys, "compress", finetuned, "-o", out, "--quantize", "int8")
    assert code == 0, err
    assert "Linears int8" in err
    config = read_config(out)
    record = config["quantization"]
    assert record["method"] == "dynamic-int8" and record["scheme"] == "per-channel"
    assert "bert.layers.0.attention.qkv" in record["modules"] and "classifier" in record["modules"]
    assert "mlm.decoder" not in record["modules"], "the decoder tied to the embeddings stays fp32"
    # safetensors only (no pickle anywhere): a JSON header and raw tensors.
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert header["bert.layers.0.attention.qkv.weight_int8"]["dtype"] == "I8"
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in out.rglob("*"))
    weights, fp32 = load_file(str(out / "model.safetensors")), load_file(str(finetuned / "model.safetensors"))
    linear_before = linear_after = 0
    for name in record["modules"]:
        assert name + ".weight" not in weights
        values, scale = weights[name + ".weight_int8"], weights[name + ".weight_scale"]
        assert values.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (values.shape[0],)
        # The stored int8 values times their scales are the fp32 weights to within half a step.
        gap = (values.float() * scale[:, None] - fp32[name + ".weight"]).abs()
        assert bool((gap <= scale[:, None] * 0.5 + 1e-7).all()), name
        linear_before += fp32[name + ".weight"].nbytes
        linear_after += values.nbytes + scale.nbytes
    assert linear_after / linear_before < 0.3  # 1 byte instead of 4, plus one float per row
    assert (out / "model.safetensors").stat().st_size < (finetuned / "model.safetensors").stat().st_size
    untouched = [k for k in fp32 if not any(k.startswith(n + ".") for n in record["modules"])]
    assert all(torch.equal(fp32[k], weights[k]) for k in untouched), "embeddings, norms and biases are carried as they are"


@pytest.mark.parametrize("scheme", ["per-channel", "per-tensor"])
def test_int8_model_runs_torch_dynamic_quantization_and_stays_close_to_fp32(finetuned, tmp_path, capsys, scheme):
    out = tmp_path / "int8"
    assert ptm(capsys, "compress", finetuned, "-o", out, "--quantize", "int8", "--scheme", scheme)[0] == 0
    model, _, _ = load_task_model(out)
    reference, _, _ = load_task_model(finetuned)
    assert isinstance(model.lm.bert.layers[1].ffn.up, Int8Linear) and isinstance(model.classifier, Int8Linear)
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if scheme == "per-channel" else \
        torch.ao.quantization.default_dynamic_qconfig
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(reference), {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    # quantize_dynamic also swaps the tied MLM decoder, which the classifier never runs.
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 100, (6, 20), generator=generator), "attention_mask": torch.ones(6, 20, dtype=torch.long)}
    batch["attention_mask"][3:, 15:] = 0
    with torch.no_grad():
        ours, theirs, exact = model(batch)["logits"], dynamic(batch)["logits"], reference(batch)["logits"]
    assert torch.equal(ours, theirs), "the same int8 weights and the same kernel as torch.ao.quantization.quantize_dynamic"
    # Tolerance: weights round to within half a step (1/254 of a row's largest weight) and activations are
    # re-quantized to 7-8 bits per batch before every Linear, about 1% error per layer; after two blocks and
    # the head the logits stay within 5% of their spread. Measured: about 1%.
    spread = float(exact.abs().max())
    assert float((ours - exact).abs().max()) < 0.05 * spread
    assert torch.equal(ours.argmax(-1), exact.argmax(-1))


def test_int8_checkpoint_loads_in_eval_extract_features_and_frozen_finetuning(world, finetuned, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    root = world["root"]
    task_int8 = tmp_path / "sst-int8"
    assert ptm(capsys, "compress", finetuned, "-o", task_int8, "--quantize", "int8")[0] == 0
    scores = {}
    for name, ckpt in (("fp32", finetuned), ("int8", task_int8)):
        code, out, err = run_cli(capsys, "eval", "-c", ckpt, "--data", root / "dev.tsv", "--json")
        assert code == 0, err
        scores[name] = json.loads(out)["accuracy"]
    assert abs(scores["int8"] - scores["fp32"]) <= 2 / 64, scores

    lm_int8 = tmp_path / "bert-int8"
    assert ptm(capsys, "compress", world["bert"], "-o", lm_int8, "--quantize", "int8")[0] == 0
    loaded = load_checkpoint(lm_int8)
    assert isinstance(loaded.model.bert.layers[0].attention.qkv, Int8Linear)
    assert isinstance(loaded.model.nsp, Int8Linear) and not isinstance(loaded.model.mlm.decoder, Int8Linear)
    texts = tmp_path / "texts.txt"
    texts.write_text("the city was good\na sad old river\n")
    vectors = {}
    for name, ckpt in (("fp32", world["bert"]), ("int8", lm_int8)):
        code, err = ptm(capsys, "extract-features", "-c", ckpt, texts, "--pool", "mean", "-o", tmp_path / f"{name}.npy",
                        "--no-progress")
        assert code == 0, err
        vectors[name] = np.load(tmp_path / f"{name}.npy")
    cosine = (vectors["fp32"] * vectors["int8"]).sum(-1) / np.linalg.norm(vectors["fp32"], axis=-1) / np.linalg.norm(vectors["int8"], axis=-1)
    assert vectors["int8"].shape == vectors["fp32"].shape and (cosine > 0.99).all(), cosine

    run = tmp_path / "frozen"
    code, err = ptm(capsys, "finetune", "--checkpoint", lm_int8, "--task", "classification", "--train", root / "train.tsv",
                    "-o", run, "--mode", "features", "--max-steps", "4", *FT)
    assert code == 0, err
    step = list_step_checkpoints(run)[-1]
    assert read_config(step)["quantization"] == read_config(lm_int8)["quantization"]
    stored = load_file(str(step / "model.safetensors"))
    assert stored["bert.layers.0.ffn.up.weight_int8"].dtype == torch.int8
    code, err = ptm(capsys, "eval", "-c", step, "--data", root / "dev.tsv")
    assert code == 0, err


# -- head pruning ---------------------------------------------------------------------------------


def _mlm_batch(vocab: int) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (3, 12), generator=generator)
    labels = torch.full_like(ids, -100)
    labels[:, 2:9:3] = ids[:, 2:9:3]
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return {"mlm_input_ids": ids, "mlm_labels": labels, "attention_mask": mask}


def test_head_importance_is_the_gradient_of_the_loss_with_respect_to_the_head_gate():
    torch.manual_seed(0)
    config = bert.BertConfig(vocab_size=50, hidden_size=24, num_layers=2, num_heads=3, intermediate_size=32,
                             max_position_embeddings=16, hidden_dropout=0.0, attention_dropout=0.0)
    model = bert.BertForPreTraining(config).double()
    family = get_family("bert")
    attentions = attention_layers(family, model)
    batch = _mlm_batch(50)

    def loss(b):
        # The masked-LM loss written out in float64 (the model's own sums in float32), so that a
        # finite difference of 1e-5 is far above rounding.
        hidden = model.bert(b["mlm_input_ids"], None, b["attention_mask"])
        picked = b["mlm_labels"] != -100
        return torch.nn.functional.cross_entropy(model.mlm(hidden[picked]), b["mlm_labels"][picked])

    importance = head_importance(model, attentions, [batch], loss)
    assert [tuple(i.shape) for i in importance] == [(3,), (3,)]
    assert all(p.requires_grad for p in model.parameters()), "parameters are given back as they were"
    eps = 1e-5
    for layer, head in ((0, 1), (1, 2)):
        values = []
        for sign in (1, -1):
            gates = [torch.ones(3, dtype=torch.float64) for _ in attentions]
            gates[layer][head] += sign * eps
            with torch.no_grad(), head_gates(attentions, gates):
                values.append(float(loss(batch)))
        finite_difference = abs(values[0] - values[1]) / (2 * eps)
        assert importance[layer][head].item() == pytest.approx(finite_difference, rel=1e-5)


def test_pruned_checkpoint_equals_the_original_with_those_heads_masked_and_finetunes(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    root = world["root"]
    pruned = tmp_path / "pruned"
    code, err = ptm(capsys, "compress", world["bert"], "-o", pruned, "--prune-heads", "0.5", "--data", root / "text.txt",
                    "--batch-size", "16")
    assert code == 0, err
    config = read_config(pruned)
    kept = config["pruning"]["heads_kept"]
    assert config["model"]["heads_per_layer"] == [len(k) for k in kept]
    assert sum(len(k) for k in kept) == 4 and all(len(k) >= 1 for k in kept)
    original, smaller = load_checkpoint(world["bert"]).model, load_checkpoint(pruned).model
    assert smaller.bert.layers[0].attention.qkv.weight.shape[0] == 3 * 16 * len(kept[0])
    batch = _mlm_batch(world_vocab(world))
    masks = [torch.tensor([1.0 if h in layer else 0.0 for h in range(4)]) for layer in kept]
    with torch.no_grad():
        with head_gates(attention_layers(get_family("bert"), original), masks):
            expected = original.bert(batch["mlm_input_ids"], None, batch["attention_mask"])
            expected_logits = original(batch["mlm_input_ids"], None, batch["attention_mask"], mlm_labels=batch["mlm_labels"])["mlm_logits"]
        got = smaller.bert(batch["mlm_input_ids"], None, batch["attention_mask"])
        got_logits = smaller(batch["mlm_input_ids"], None, batch["attention_mask"], mlm_labels=batch["mlm_labels"])["mlm_logits"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_logits, expected_logits, atol=1e-5, rtol=0)
    # transformers has no per-layer head counts: exporting is refused, and nothing is written.
    code, err = ptm(capsys, "convert", pruned, tmp_path / "hf")
    assert code == 2 and "pruned" in err and not (tmp_path / "hf").exists()

    run = tmp_path / "ft"
    code, err = ptm(capsys, "finetune", "--checkpoint", pruned, "--task", "classification", "--train", root / "train.tsv",
                    "--dev", root / "dev.tsv", "-o", run, "--max-steps", "6", *FT)
    assert code == 0, err
    best = run / "best"
    assert read_config(best)["model"]["heads_per_layer"] == config["model"]["heads_per_layer"]
    # A finetuned checkpoint is pruned by its task loss on its TSV, and may be quantized in the same call.
    again = tmp_path / "again"
    code, err = ptm(capsys, "compress", best, "-o", again, "--prune-heads", "0.34", "--data", root / "dev.tsv", "--quantize", "int8")
    assert code == 0, err
    both = read_config(again)
    assert both["pruning"]["loss"] == "task" and both["quantization"]["method"] == "dynamic-int8"
    assert sum(both["model"]["heads_per_layer"]) == 3
    assert ptm(capsys, "eval", "-c", again, "--data", root / "dev.tsv")[0] == 0


def world_vocab(world) -> int:
    return read_config(world["bert"])["model"]["vocab_size"]


# -- refusals -------------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_and_exit_2(world, finetuned, tmp_path, capsys):
    root = world["root"]
    int8 = tmp_path / "int8"
    assert ptm(capsys, "compress", world["bert"], "-o", int8, "--quantize", "int8")[0] == 0
    cases = [
        (["pretrain", "--resume", int8], "cannot be trained"),
        (["finetune", "--checkpoint", int8, "--task", "classification", "--train", root / "train.tsv", "-o", tmp_path / "r",
          "--max-steps", "2", *FT], "cannot be trained"),
        (["compress", world["bert"], "-o", tmp_path / "x", "--prune-heads", "1.0", "--data", root / "text.txt"], "[0, 1)"),
        (["compress", world["bert"], "-o", tmp_path / "x", "--prune-heads", "-0.2", "--data", root / "text.txt"], "[0, 1)"),
        (["compress", world["bert"], "-o", tmp_path / "x", "--prune-heads", "0.5"], "needs --data"),
        (["compress", world["albert"], "-o", tmp_path / "x", "--prune-heads", "0.5", "--data", root / "text.txt"],
         "cannot be pruned"),
        (["compress", int8, "-o", tmp_path / "x", "--quantize", "int8"], "already int8-quantized"),
        (["compress", world["bert"], "-o", tmp_path / "x"], "nothing to do"),
        (["compress", world["bert"], "-o", tmp_path / "x", "--quantize", "int4"], "choose one of"),
    ]
    for args, says in cases:
        code, err = ptm(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and says in lines[0], (args, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()
