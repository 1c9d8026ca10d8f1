"""`ptm pretrain --objective mlm-distill`: DistilBERT's loss by hand, its initialisation, a run that resumes bit for bit
with the teacher frozen and left out of the checkpoint, and the refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli_err as ptm
from conftest import sample_corpus
from safetensors.torch import load_file, save_file

from ptmcli.checkpoint import list_step_checkpoints

SHAPE = ["--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64"]
COMMON = ["--seq-len", "32", "--batch-size", "4", "--eval-rows", "0", "--eval-batches", "1", "--log-every", "1",
          "--no-progress", "--peak-tflops", "1", "--threads", "1"]
STUDENT = ["--arch", "bert", "--preset", "bert-tiny", *SHAPE, "--num-layers", "2", *COMMON]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Shards and tokenizer, and a 4-layer x 32 teacher pretrained with --objective mlm for two steps."""
    from ptmcli.cli.main import main

    root = tmp_path_factory.mktemp("distill-lm")
    shards, tok = sample_corpus(root, articles=6, vocab_size=800, tokenizer_lines=1500)
    try:
        main([str(a) for a in ["pretrain", "--data", shards, "--tokenizer", tok, "-o", root / "teacher", "--arch", "bert",
                               "--preset", "bert-tiny", *SHAPE, "--num-layers", "4", *COMMON, "--objective", "mlm",
                               "--max-steps", "2", "--lr", "3e-3"]])
    except SystemExit as stop:
        assert not stop.code
    return {"root": root, "shards": shards, "tok": tok, "teacher": list_step_checkpoints(root / "teacher")[-1]}


def _config(setup, **changes):
    from ptmcli.pretraining.config import PretrainConfig

    return dataclasses.replace(PretrainConfig(arch="bert", objective="mlm-distill", teacher=str(setup["teacher"]), seq_len=32,
                                              batch_size=4, eval_batches=1, seed=7), **changes)


def _student(setup, cfg, layers=2, hidden=32):
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.distill_lm import prepare_student
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    family, tokenizer = get_family("bert"), PtmTokenizer.load(setup["tok"])
    torch.manual_seed(1)
    model = family.build(family.model_config("bert-tiny", tokenizer, hidden_size=hidden, num_heads=2, intermediate_size=2 * hidden,
                                             num_layers=layers), tokenizer)
    prepare_student(model, cfg)
    return model, tokenizer


def test_the_loss_is_distilberts_hand_computed_mix(setup):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.models.registry import get_family
    from ptmcli.pretraining.distill_lm import load_teacher
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES

    cfg = _config(setup, distill_temperature=3.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.5)
    student, tokenizer = _student(setup, cfg)
    student.eval()  # no dropout: the hand computation below sees the same network
    dataset = ShardDataset.open(setup["shards"])
    context = ObjectiveContext(cfg, tokenizer, dataset, np.arange(len(dataset)), [], get_family("bert"))
    task = OBJECTIVES["mlm-distill"].build(context)
    batch = task.next_micro_batches(1)[0]
    ids, mask, labels, types = batch["input_ids"], batch["attention_mask"], batch["mlm_labels"], batch.get("token_type_ids")
    norms = task.normalizers([batch])
    loss, stats = task.loss(student, batch, norms)

    teacher = load_teacher(cfg).model
    with torch.no_grad():
        hs, ht = student.bert(ids, types, mask), teacher.bert(ids, types, mask)
        picked = labels != -100
        s, t = student.mlm(hs)[picked], teacher.mlm(ht)[picked]
        T = 3.0
        pt = torch.softmax(t / T, -1)
        kl = (pt * (torch.log_softmax(t / T, -1) - torch.log_softmax(s / T, -1))).sum(-1).mean() * T**2
        ce = F.cross_entropy(s, labels[picked])
        real = mask.bool()
        cos = (1 - F.cosine_similarity(hs[real], ht[real], dim=-1)).mean()
    assert int(picked.sum()) == norms["mlm"] > 0 and int(real.sum()) == norms["tokens"]
    expected = 5.0 * kl + 2.0 * ce + 1.5 * cos
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    assert float(stats["ce_loss_sum"]) / norms["mlm"] == pytest.approx(float(kl), abs=1e-5)
    assert float(stats["cos_loss_sum"]) / norms["tokens"] == pytest.approx(float(cos), abs=1e-5)
    loss.backward()
    assert student.bert.layers[0].ffn.up.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # The batches are the mlm objective's own: same masker, same packed blocks.
    plain = OBJECTIVES["mlm"].build(ObjectiveContext(dataclasses.replace(cfg, objective="mlm"), tokenizer, dataset,
                                                     np.arange(len(dataset)), [], get_family("bert")))
    first = plain.next_micro_batches(1)[0]
    assert all(torch.equal(first[k], batch[k]) for k in batch)


def test_init_from_teacher_copies_every_other_layer_exactly(setup):
    from ptmcli.pretraining.distill_lm import load_teacher

    cfg = _config(setup, init_from_teacher=True)
    student, _ = _student(setup, cfg)
    teacher = load_teacher(cfg).model.state_dict()
    state = student.state_dict()
    for i, j in ((0, 0), (1, 2)):
        mine = {k: v for k, v in state.items() if k.startswith(f"bert.layers.{i}.")}
        assert mine
        for key, value in mine.items():
            assert torch.equal(value, teacher[key.replace(f"layers.{i}.", f"layers.{j}.")]), key
    for key in ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight", "mlm.bias", "mlm.dense.weight"):
        assert torch.equal(state[key], teacher[key]), key
    assert student.mlm.decoder.weight is student.bert.embeddings.word_embeddings.weight  # still tied


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))


def test_pretrain_distills_resumes_bit_for_bit_and_saves_only_the_student(setup, tmp_path, capsys):
    from ptmcli.pretraining.distill_lm import _LOADED

    teacher_file = setup["teacher"] / "model.safetensors"
    before = teacher_file.read_bytes()
    common = ["pretrain", "--data", setup["shards"], "--tokenizer", setup["tok"], *STUDENT, "--objective", "mlm-distill",
              "--teacher", setup["teacher"], "--init-from-teacher", "--seed", "3", "--lr", "3e-3", "--max-steps", "4"]
    code, err = ptm(capsys, *common, "-o", tmp_path / "full")
    assert code == 0, err
    assert "objective mlm-distill" in err
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "mlm_loss", "mlm_acc", "ce_loss", "cos_loss"} <= set(records[0]), records[0]
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--save-every", "2", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0, err
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # Only the student's two layers are saved; the teacher (four layers) is neither saved nor changed.
    assert not any(".layers.2." in k or ".layers.3." in k or "teacher" in k for k in full)
    assert {k for k in full if ".layers." in k} == {k for k in full if ".layers.0." in k or ".layers.1." in k}
    assert teacher_file.read_bytes() == before
    saved = load_file(str(teacher_file))
    (teacher,) = _LOADED.values()
    for key, value in teacher.model.state_dict().items():
        if key in saved:
            assert torch.equal(value, saved[key]), key
    config = json.loads((list_step_checkpoints(tmp_path / "full")[-1] / "config.json").read_text())
    assert config["objective"] == "mlm-distill" and config["model"]["num_layers"] == 2
    # The student is a plain masked LM to transformers: it exports as BertForMaskedLM without --hf-class.
    code, err = ptm(capsys, "convert", tmp_path / "full", tmp_path / "hf", "--to", "hf")
    assert code == 0, err
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]


def _finetuned(setup, target: Path) -> Path:
    shutil.copytree(setup["teacher"], target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(dict(config, task={"type": "classification", "labels": ["0", "1"]})))
    return target


def _headless(setup, target: Path) -> Path:
    shutil.copytree(setup["teacher"], target)
    weights = load_file(str(target / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("mlm.")}, str(target / "model.safetensors"))
    return target


def _other_tokenizer(setup, target: Path) -> Path:
    from itertools import islice

    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    shutil.copytree(setup["teacher"], target)
    other = setup["root"] / "tok-other"
    if not other.exists():
        train_tokenizer(islice(iter_texts([str(setup["root"] / "wiki.txt")]), 500), "wordpiece", 400).save(other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (other / name).exists():
            shutil.copy(other / name, target / name)
    return target


@pytest.mark.parametrize("make, extra, message", [
    (_other_tokenizer, [], "its tokenizer differs from the one the shards were encoded with"),
    (_finetuned, [], "a checkpoint finetuned for classification"),
    (_headless, [], "it has no masked-LM head"),
    (None, ["--hidden-size", "16"], "--alpha-cos 1: the cosine loss compares hidden states"),
    (None, ["--hidden-size", "16", "--alpha-cos", "0", "--init-from-teacher"], "--init-from-teacher needs the teacher's width"),
    (None, ["--objective", "mlm"], "--objective mlm does not use it; it applies to --objective mlm-distill"),
    (None, ["--no-teacher"], "--objective mlm-distill needs --teacher CHECKPOINT"),
    (None, ["--alpha-ce", "-1"], "--alpha-ce -1.0: must not be negative"),
])
def test_impossible_distillations_exit_2_with_one_line(setup, tmp_path, capsys, make, extra, message):
    teacher = make(setup, tmp_path / "teacher") if make else setup["teacher"]
    teacher_flag = [] if "--no-teacher" in extra else ["--teacher", teacher]
    extra = [e for e in extra if e != "--no-teacher"]
    code, err = ptm(capsys, "pretrain", "--data", setup["shards"], "--tokenizer", setup["tok"], *STUDENT, "--objective", "mlm-distill",
                    *teacher_flag, "--max-steps", "1", "-o", tmp_path / "run", *extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
