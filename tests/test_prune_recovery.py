"""`ptm compress --prune-heads F --recover-steps N`: recovery finetuning of the pruned model on its task, and
pruning itself, on a pre-LN, bias-free BERT (cramming's variant; tests/test_compress.py has the default one);
the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, save_pretrained, sentiment_rows
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import (
    list_step_checkpoints,
    read_config,
)
from ptmcli.compress.prune import attention_layers, head_gates
from ptmcli.finetuning.task_model import load_task_model
from ptmcli.models import bert
from ptmcli.models.registry import get_family
from ptmcli.tokenization.train import train_tokenizer

FILLER = "the of and a in to was is city river music old new house".split()
THREADS = ["--threads", "1"]






@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Labeled data, a tokenizer, a random tiny pre-LN bias-free BERT and that BERT finetuned (its final step)."""
    from ptmcli.cli.main import main

    root = tmp_path_factory.mktemp("recover")
    for name, n, seed in (("train", 160, 0), ("dev", 48, 1)):
        rows = sentiment_rows(n, seed, FILLER)
        (root / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    (root / "text.txt").write_text("".join(f"{s}\n" for s, _ in sentiment_rows(32, 2, FILLER)))
    tokenizer = train_tokenizer(iter([s for s, _ in sentiment_rows(160, 0, FILLER)] * 3), "wordpiece", 120)
    tokenizer.save(root / "tok")
    torch.manual_seed(0)
    config = bert.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                             intermediate_size=64, max_position_embeddings=64, norm="pre", bias=False)
    model = bert.BertForPreTraining(config)
    pretrained = save_pretrained(root, "bert", model, "bert", tokenizer, root / "tok")
    try:
        main([str(a) for a in ["finetune", "--checkpoint", pretrained, "--task", "classification", "--train",
                               root / "train.tsv", "-o", root / "sst", "--max-steps", "30", "--lr", "3e-3",
                               "--batch-size", "16", "--max-len", "32", "--no-progress", "--log-every", "50", *THREADS]])
    except SystemExit as stop:
        assert not stop.code
    return {"root": root, "bert": pretrained, "ft": list_step_checkpoints(root / "sst")[-1]}


def _compress(capsys, world, out: Path, *extra) -> Path:
    root = world["root"]
    code, err = ptm(capsys, "compress", world["ft"], "-o", out, "--prune-heads", "0.5", "--data", root / "train.tsv",
                    "--batch-size", "16", *THREADS, *extra)
    assert code == 0, err
    return out


def test_pruned_pre_ln_bias_free_model_equals_the_original_with_those_heads_masked(world, tmp_path, capsys):
    pruned = _compress(capsys, world, tmp_path / "pruned")
    kept = read_config(pruned)["pruning"]["heads_kept"]
    original, _, _ = load_task_model(world["ft"])
    smaller, _, _ = load_task_model(pruned)
    assert smaller.lm.bert.layers[0].attention.qkv.bias is None and smaller.lm.bert.final_norm is not None
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 100, (4, 12), generator=generator), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    batch["attention_mask"][2:, 9:] = 0
    masks = [torch.tensor([1.0 if h in layer else 0.0 for h in range(4)]) for layer in kept]
    with torch.no_grad():
        with head_gates(attention_layers(get_family("bert"), original), masks):
            expected = original(batch)["logits"]
        got = smaller(batch)["logits"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_recovery_trains_the_pruned_model_keeps_its_shape_is_deterministic_and_loads_in_eval(world, tmp_path, capsys):
    root = world["root"]
    plain = _compress(capsys, world, tmp_path / "plain")
    first = _compress(capsys, world, tmp_path / "a" / "rec", "--recover-steps", "6", "--recover-lr", "1e-3", "--seed", "3")
    second = _compress(capsys, world, tmp_path / "b" / "rec", "--recover-steps", "6", "--recover-lr", "1e-3", "--seed", "3")
    other_seed = _compress(capsys, world, tmp_path / "c" / "rec", "--recover-steps", "6", "--recover-lr", "1e-3", "--seed", "4")
    config, pruned_config = read_config(first), read_config(plain)
    heads = config["model"]["heads_per_layer"]
    assert heads == pruned_config["model"]["heads_per_layer"] and sum(heads) == 4
    assert config["pruning"]["heads_kept"] == pruned_config["pruning"]["heads_kept"]
    assert config["task"] == pruned_config["task"], "the checkpoint's own task, labels and pooling"
    record = config["pruning"]["recovery"]
    assert (record["steps"], record["lr"], record["seed"], record["batch_size"]) == (6, 1e-3, 3, 16)
    assert record["data"] == str((root / "train.tsv").resolve())
    assert "recovery" not in pruned_config["pruning"]
    # The source's dev score is not carried over as if it were the compressed model's.
    assert "best" not in config and "best" not in pruned_config
    # Nothing of the staging run is left beside OUT.
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["rec"]

    before, after = load_file(str(plain / "model.safetensors")), load_file(str(first / "model.safetensors"))
    assert set(before) == set(after)
    assert all(before[k].shape == after[k].shape for k in before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "classifier.weight" in changed and "bert.layers.0.attention.qkv.weight" in changed
    assert "bert.layers.1.ffn.up.weight" in changed
    again = load_file(str(second / "model.safetensors"))
    assert all(torch.equal(after[k], again[k]) for k in after), "the same seed gives the same tensors"
    different = load_file(str(other_seed / "model.safetensors"))
    assert any(not torch.equal(after[k], different[k]) for k in after), "the seed orders the data"

    for ckpt in (plain, first):
        code, out, err = run_cli(capsys, "eval", "-c", ckpt, "--data", root / "dev.tsv", "--json", *THREADS)
        assert code == 0, err
        assert 0.0 <= json.loads(out.strip().splitlines()[-1])["accuracy"] <= 1.0


def test_prune_recover_then_quantize(world, tmp_path, capsys):
    out = _compress(capsys, world, tmp_path / "int8", "--recover-steps", "3", "--quantize", "int8")
    config = read_config(out)
    assert config["pruning"]["recovery"]["steps"] == 3 and config["quantization"]["method"] == "dynamic-int8"
    # No --recover-lr: ptm finetune's default rate for the width (3e-4 up to 256 wide).
    assert config["pruning"]["recovery"]["lr"] == 3e-4
    weights = load_file(str(out / "model.safetensors"))
    heads = config["model"]["heads_per_layer"]
    assert weights["bert.layers.0.attention.qkv.weight_int8"].shape[0] == 3 * 8 * heads[0] and sum(heads) == 4
    code, err = ptm(capsys, "eval", "-c", out, "--data", world["root"] / "dev.tsv", *THREADS)
    assert code == 0, err


def test_recovery_refusals_are_one_line_and_exit_2_and_write_nothing(world, tmp_path, capsys):
    root = world["root"]
    x = tmp_path / "x"
    prune = ["--prune-heads", "0.5", "--data", root / "train.tsv"]
    relabeled = tmp_path / "three.tsv"
    relabeled.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y + 1}\n" for s, y in sentiment_rows(20, 5, FILLER)))
    cases = [
        ([world["ft"], "-o", x, *prune, "--recover-steps", "-5"], "--recover-steps -5: must be at least 1"),
        ([world["ft"], "-o", x, *prune, "--recover-steps", "0"], "must be at least 1"),
        ([world["ft"], "-o", x, "--quantize", "int8", "--recover-steps", "10"], "needs --prune-heads"),
        ([world["ft"], "-o", x, *prune, "--recover-lr", "1e-3"], "--recover-lr applies to --recover-steps"),
        ([world["ft"], "-o", x, *prune, "--recover-steps", "2", "--recover-lr", "-1"], "must be positive"),
        ([world["bert"], "-o", x, "--prune-heads", "0.5", "--data", root / "text.txt", "--recover-steps", "2"],
         "pretrained checkpoint"),
        ([world["ft"], "-o", x, "--prune-heads", "0.5", "--data", relabeled, "--recover-steps", "2"], "labels"),
    ]
    for args, says in cases:
        code, err = ptm(capsys, "compress", *args, *THREADS)
        lines = err.strip().splitlines()
        assert code == 2 and says in lines[-1], (args, err)
        assert len(lines) == 1 or "labels" in says, (args, err)  # a run refused by finetune has said what it read
        assert list(tmp_path.iterdir()) == [relabeled], (args, list(tmp_path.iterdir()))
