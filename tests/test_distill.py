"""`ptm distill`: the loss terms by hand, initialisation from the teacher, and a tiny end-to-end run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.finetuning.distillation import (
    DistillationModel,
    DistillTask,
    init_from_teacher,
    layer_map,
)
from ptmcli.finetuning.task import STEP_EPOCHS
from ptmcli.finetuning.task_model import TaskModel
from ptmcli.models import bert
from tests.test_finetune import FT, sentiment  # noqa: F401  (a fixture)
from tests.test_pretrain import TINY, corpus, ptm  # noqa: F401  (corpus is a fixture)


def _task_model(layers: int, hidden: int = 32, heads: int = 2, seed: int = 0) -> TaskModel:
    torch.manual_seed(seed)
    config = bert.preset_config("bert-tiny", vocab_size=60, num_layers=layers, hidden_size=hidden, num_heads=heads,
                                intermediate_size=2 * hidden, max_position_embeddings=16)
    return TaskModel("bert", bert.BertForPreTraining(config), "classification", 3)


class _Fixed(nn.Module):
    """Stands in for a DistillationModel: fixed student and teacher logits."""

    task_type = "classification"

    def __init__(self, student, teacher):
        super().__init__()
        self.student_logits, self.teacher_logits = student, teacher

    def forward(self, batch, with_teacher=True):
        loss_sum = nn.functional.cross_entropy(self.student_logits, batch["labels"], reduction="sum")
        return {"logits": self.student_logits, "teacher_logits": self.teacher_logits, "loss_sum": loss_sum,
                "count": torch.tensor(len(batch["labels"]))}


def test_the_soft_target_loss_is_the_hand_computed_mix():
    student = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    teacher = [[3.0, 1.0, 0.0], [0.0, 0.0, 4.0]]
    labels = [0, 2]
    temperature, alpha = 2.0, 0.3

    def softmax(row, t):
        e = [math.exp(x / t) for x in row]
        return [x / sum(e) for x in e]

    soft = sum(sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(softmax(t, temperature), softmax(s, temperature)))
               for s, t in zip(student, teacher)) * temperature**2
    hard = sum(-math.log(softmax(s, 1.0)[y]) for s, y in zip(student, labels))
    expected = alpha * soft / 2 + (1 - alpha) * hard / 2

    model = _Fixed(torch.tensor(student), torch.tensor(teacher))
    task = DistillTask(model, [0, 1], lambda rows: {}, batch_size=2, seed=0, temperature=temperature, alpha=alpha)
    batch = {"labels": torch.tensor(labels), STEP_EPOCHS: (0, 0)}
    loss, stats = task.loss(model, batch, {"task": 2.0, "micro_batches": 1.0})
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(stats["soft_loss_sum"]) == pytest.approx(soft, rel=1e-5)


def test_hidden_and_attention_losses_vanish_for_a_copy_of_the_teacher():
    teacher = _task_model(3)
    model = DistillationModel(copy.deepcopy(teacher), teacher, hidden=True, attention=True)
    model.eval()
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    out = model(batch)
    assert model.pairs == [(0, 0), (1, 1), (2, 2)]
    assert float(out["hidden_loss"].detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(out["attention_loss"].detach()) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(out["logits"], out["teacher_logits"])
    # A shallower student learns from evenly spaced teacher layers, the top one last.
    assert layer_map(2, 4) == [2, 4] and layer_map(3, 12) == [4, 8, 12] and layer_map(4, 6) == [2, 3, 5, 6]


def test_a_student_started_from_the_teacher_holds_every_other_layer():
    teacher, student = _task_model(4, seed=1), _task_model(2, seed=2)
    init_from_teacher(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    for key, tensor in s.items():
        if ".layers." in key:
            index = int(key.split(".layers.")[1].split(".")[0])
            source = key.replace(f".layers.{index}.", f".layers.{2 * index}.")
        else:
            source = key
        assert torch.equal(tensor, t[source]), key
    assert student.lm.mlm.decoder.weight is student.lm.bert.embeddings.word_embeddings.weight
    with pytest.raises(Exception, match="the teacher's width"):
        init_from_teacher(_task_model(2, hidden=16), teacher)


@pytest.fixture(scope="module")
def teacher(corpus, sentiment, tmp_path_factory):  # noqa: F811
    """A tiny pretrained BERT and a teacher finetuned from it for a few steps."""
    from ptmcli.cli.main import main

    shards, tok = corpus
    root = tmp_path_factory.mktemp("distill")
    runs = [["pretrain", "--data", shards, "--tokenizer", tok, "-o", root / "pre", *TINY, "--max-steps", "2"],
            ["finetune", "--checkpoint", root / "pre", "--task", "classification", "--train", sentiment / "train.tsv",
             "--dev", sentiment / "dev.tsv", "-o", root / "teacher", "--max-steps", "6", "--lr", "3e-3", *FT]]
    for args in runs:
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            assert not stop.code
    return root


DX = ["--task", "classification", "--max-steps", "4", "--batch-size", "8", "--no-progress", "--log-every", "2", "--threads", "2"]


def test_distill_writes_a_checkpoint_eval_reads(teacher, sentiment, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, "distill", "--teacher", teacher / "teacher", "--student", teacher / "pre", "--init-from-teacher",
                    "--train", sentiment / "train.tsv", "--dev", sentiment / "dev.tsv", "-o", run, "--hidden-weight", "1",
                    "--attention-weight", "1", "--eval-every", "2", *DX)
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"soft_loss", "hidden_loss", "attention_loss", "task_loss"} <= set(records[0])
    assert any("eval_accuracy" in r for r in records)
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"]["labels"] == ["0", "1"] and config["distilled_from"]["alpha"] == 0.5
    assert (list_step_checkpoints(run)[-1] / "trainer" / "projections.safetensors").exists()
    capsys.readouterr()
    code, err = ptm(capsys, "eval", "-c", run / "best", "--data", sentiment / "dev.tsv", "--json")
    assert code == 0, err

    # A preset student of another width: fresh weights, projections from its width to the teacher's.
    code, err = ptm(capsys, "distill", "--teacher", teacher / "teacher", "--student", "bert-tiny", "--train", sentiment / "train.tsv",
                    "-o", tmp_path / "preset", "--hidden-weight", "1", "--max-len", "32", *DX, "--max-steps", "2")
    assert code == 0, err
    assert json.loads((tmp_path / "preset" / "results.json").read_text())["step"] == 2


@pytest.mark.parametrize("student, extra, message", [
    ("bert-tiny", ["--init-from-teacher"], "--init-from-teacher needs the teacher's width"),
    ("gpt-mini", [], "distillation needs one family"),
    ("{pre}", [], "not a finetuned checkpoint"),
    ("bert-mini", ["--attention-weight", "1"], "compares attention maps head by head"),
])
def test_impossible_distillations_fail_with_one_line(teacher, sentiment,  # noqa: F811
                                                      tmp_path, capsys, student, extra, message):
    def fill(text):
        return str(text).replace("{pre}", str(teacher / "pre"))

    teacher_flag = ["--teacher", teacher / "pre"] if student == "{pre}" else ["--teacher", teacher / "teacher" / "best"]
    code, err = ptm(capsys, "distill", *teacher_flag, "--student", fill(student), "--train", sentiment / "train.tsv",
                    "-o", tmp_path / "run", *[fill(e) for e in extra], *DX)
    assert code == 2 and message in err and err.count("\n") == 1, err
