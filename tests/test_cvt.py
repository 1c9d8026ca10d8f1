"""Cross-view training (`ptm finetune --cvt-unlabeled`): the views, the loss, the command end to end."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sample_corpus
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints
from ptmcli.finetuning.cross_view import (
    KEEP,
    SENTENCE_VIEWS,
    TOKEN_VIEWS,
    CrossViewModel,
    ViewHeads,
    check_encoder,
    directional_pattern,
)
from ptmcli.finetuning.task_model import TaskModel
from ptmcli.models import bert
from tests.test_pretrain import TINY, ptm

VOCAB = 40


def _model(task: str, views: tuple[str, ...], labels: int = 3, pool: str | None = None, seed: int = 0) -> CrossViewModel:
    torch.manual_seed(seed)
    lm = bert.BertForPreTraining(bert.preset_config("bert-tiny", vocab_size=VOCAB, num_layers=2, hidden_size=32,
                                                    num_heads=2, intermediate_size=64))
    task_model = TaskModel("bert", lm, task, labels, pool=pool)
    return CrossViewModel(task_model, ViewHeads(views, 32, labels, 0.1), lead=1, tail=1)


def _batch(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, VOCAB, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[:, 0] = 2  # [CLS]
    for row, length in enumerate(lengths):
        ids[row, length - 1] = 3  # [SEP]
        ids[row, length:] = 0
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}


# Words start at these positions (3 and 6 continue the word before them); the second row is padded.
WORDS = torch.tensor([[1, 2, 4, 5, 7], [1, 2, 4, -1, -1]])
LENGTHS = [9, 6]


def _hidden_positions(view: str, row: int, word: int) -> list[int]:
    """What ``view`` must not see when predicting ``word`` of ``row``."""
    starts = [int(p) for p in WORDS[row] if p >= 0]
    p, length = starts[word], LENGTHS[row]
    following = starts[word + 1] if word + 1 < len(starts) else length - 1
    return {"forward": list(range(p + 1, length)), "backward": list(range(0, p)),
            "future": list(range(p, length)), "past": list(range(0, following))}[view]


@pytest.mark.parametrize("view", TOKEN_VIEWS)
def test_a_token_view_does_not_change_when_what_it_hides_changes(view):
    model = _model("token-classification", (view,)).eval()
    batch = dict(_batch(LENGTHS), word_index=WORDS)
    with torch.no_grad():
        before = model.view_logits(batch)[0][view]
        changed_somewhere = False
        for row in range(2):
            for word in range(int((WORDS[row] >= 0).sum())):
                hidden = _hidden_positions(view, row, word)
                other = dict(batch, input_ids=batch["input_ids"].clone())
                other["input_ids"][row, hidden] = (other["input_ids"][row, hidden] + 7) % VOCAB
                after = model.view_logits(other)[0][view]
                assert torch.allclose(before[row, word], after[row, word], atol=1e-6), (view, row, word)
                # Every other word of the row sees some of those positions, unless they are only specials.
                changed_somewhere |= not torch.allclose(before[row], after[row], atol=1e-6)
        assert changed_somewhere  # the perturbation reaches what the view does see


def test_the_patterns_keep_every_row_readable():
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    for direction in ("forward", "backward"):
        pattern = directional_pattern(mask, direction)
        assert pattern.any(-1).all()  # no query row hides every key (SDPA would give NaN)
        assert not pattern[..., 3:].any()  # padding is never a key


@pytest.mark.parametrize("pool", [None, "mean"])
@pytest.mark.parametrize("view", SENTENCE_VIEWS)
def test_a_sentence_view_does_not_change_when_its_hidden_tokens_change(view, pool):
    model = _model("classification", (view,), labels=2, pool=pool).eval()
    batch = _batch([10, 7], seed=1)
    keep = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0, 1, 1], [1, 1, 0, 1, 0, 1, 1, 0, 0, 0]]).bool()
    batch[KEEP] = keep
    # Text tokens are 1..length-2; a 10-token row has 8 (halves 1-4, 5-8), a 7-token row 5 (1-3, 4-5).
    hidden = {"first-half": [[5, 6, 7, 8], [4, 5]], "second-half": [[1, 2, 3, 4], [1, 2, 3]],
              "word-dropout": [[1, 4, 5, 7], [2, 4]]}[view]
    with torch.no_grad():
        before = model.view_logits(batch)[0][view]
        other = dict(batch, input_ids=batch["input_ids"].clone())
        for row, positions in enumerate(hidden):
            other["input_ids"][row, positions] = (other["input_ids"][row, positions] + 7) % VOCAB
        assert torch.allclose(before, model.view_logits(other)[0][view], atol=1e-6)
        seen = dict(batch, input_ids=batch["input_ids"].clone())
        seen["input_ids"][:, 1:5] = (seen["input_ids"][:, 1:5] + 11) % VOCAB
        seen["input_ids"][:, 5] = (seen["input_ids"][:, 5] + 11) % VOCAB
        assert not torch.allclose(before, model.view_logits(seen)[0][view], atol=1e-6)


def test_the_teacher_gets_no_gradient_and_the_views_and_encoder_do():
    model = _model("token-classification", TOKEN_VIEWS).train()
    batch = dict(_batch(LENGTHS), word_index=WORDS)
    loss, positions = model.cvt_loss(batch)
    assert int(positions) == 8
    loss.backward()
    # The task head is read only by the teacher: it gets nothing.
    assert all(p.grad is None for p in model.task_model.classifier.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads.parameters() if p.dim() == 2)
    assert model.task_model.lm.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.training and model.task_model.training  # the teacher's eval mode does not leak


def test_the_auxiliary_loss_falls_on_a_toy_problem():
    model = _model("token-classification", TOKEN_VIEWS, seed=3)
    with torch.no_grad():  # a confident teacher: near-uniform targets would leave nothing to learn
        model.task_model.classifier.weight.normal_(0, 1.0)
    batch = dict(_batch(LENGTHS, seed=4), word_index=WORDS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, positions = model.cvt_loss(batch)
        losses.append(float(loss.detach()) / int(positions))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_an_encoder_without_attention_patterns_is_refused():
    from ptmcli.errors import PtmError
    from ptmcli.models import gpt

    lm = gpt.GPTForCausalLM(gpt.preset_config("gpt-tiny", vocab_size=VOCAB, num_layers=1, hidden_size=32, num_heads=2))
    with pytest.raises(PtmError, match="does not take"):
        check_encoder(TaskModel("gpt", lm, "classification", 2), "--checkpoint x")


# -- the command ------------------------------------------------------------------------------------------

FT = ["--batch-size", "4", "--max-len", "32", "--no-progress", "--log-every", "1", "--threads", "1"]
CONLL = ["EU B-ORG", "rejects O", "German B-MISC", "call O", "", "Peter B-PER", "Blackburn I-PER", ""] * 4
SENTENCES = ["Peter rejects the German call", "EU calls Blackburn", "the city of Berlin", "John went to Paris today"] * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny BERT (one pretraining step: the plumbing is the point), tagging data and unlabeled sentences."""
    root = tmp_path_factory.mktemp("cvt")
    (root / "corpus").mkdir()
    shards, tok = sample_corpus(root / "corpus", articles=2, vocab_size=400, tokenizer_lines=400)
    from ptmcli.cli.main import main

    try:
        main([str(a) for a in ["pretrain", "--data", shards, "--tokenizer", tok, "-o", root / "bert", *TINY, "--max-steps", "1"]])
    except SystemExit as stop:
        assert not stop.code
    (root / "ner.txt").write_text("\n".join(CONLL) + "\n")
    (root / "unlabeled.txt").write_text("\n".join(SENTENCES) + "\n")
    (root / "sst.tsv").write_text("sentence\tlabel\n" + "".join(f"the {w} river\t{i % 2}\n" for i, w in enumerate(["good", "bad"] * 6)))
    (root / "empty.txt").write_text("\n\n")
    return root


def _tagging(tiny, out, *flags):
    return ["finetune", "--checkpoint", tiny / "bert", "--task", "token-classification", "--train", tiny / "ner.txt",
            "--cvt-unlabeled", tiny / "unlabeled.txt", "-o", out, *FT, *flags]


def test_a_cvt_run_trains_saves_a_plain_task_model_and_evaluates(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code, err = ptm(capsys, *_tagging(tiny, run, "--dev", tiny / "ner.txt", "--max-steps", "4", "--cvt-ratio", "1"))
    assert code == 0, err
    assert "cross-view training on 12 unlabeled sentences" in err
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [line for line in lines if "cvt_loss" in line or "task_loss" in line]
    assert {"cvt_loss", "task_loss"} <= {key for line in trained for key in line}  # both kinds of step ran
    last = list_step_checkpoints(run)[-1]
    assert not any(key.startswith("cvt") for key in load_file(str(last / "model.safetensors")))
    assert (last / "trainer" / "cvt_heads.safetensors").exists()
    code, err = ptm(capsys, "eval", "-c", run / "best", "--data", tiny / "ner.txt")
    assert code == 0, err


def test_a_classification_run_with_its_views(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    code, err = ptm(capsys, "finetune", "--checkpoint", tiny / "bert", "--task", "classification", "--train", tiny / "sst.tsv",
                    "--cvt-unlabeled", tiny / "unlabeled.txt", "--cvt-ratio", "2", "-o", tmp_path / "run", "--max-steps", "3", *FT)
    assert code == 0, err
    assert "views first-half, second-half, word-dropout" in err


def test_resume_reaches_the_same_weights_and_heads(tiny, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    flags = ("--max-steps", "6", "--cvt-ratio", "0.5")
    assert ptm(capsys, *_tagging(tiny, tmp_path / "full", *flags))[0] == 0
    assert ptm(capsys, *_tagging(tiny, tmp_path / "cut", *flags, "--save-every", "2", "--keep-last", "0"))[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "finetune", "--resume", tmp_path / "cut")
    assert code == 0, err
    full, cut = list_step_checkpoints(tmp_path / "full")[-1], list_step_checkpoints(tmp_path / "cut")[-1]
    for name in ("model.safetensors", "trainer/cvt_heads.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(cut / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


@pytest.mark.parametrize("change, message", [
    (("--cvt-unlabeled", "{missing}"), "--cvt-unlabeled"),
    (("--cvt-unlabeled", "{empty}"), "the file is empty"),
    (("--cvt-ratio", "0"), "--cvt-ratio 0: must be positive"),
    (("--cvt-ratio", "-1"), "--cvt-ratio -1: must be positive"),
    (("--cvt-views", "forward,sideways"), "--cvt-views forward,sideways"),
    (("--task", "regression"), "applies to --task token-classification or classification, not regression"),
    (("--task", "qa"), "not qa"),
    (("--task", "seq2seq"), "not seq2seq"),
    (("--mode", "features"), "frozen encoder"),
])
def test_refusals_are_one_line_and_write_nothing(tiny, tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    args = [str(a) for a in _tagging(tiny, tmp_path / "run", "--max-steps", "1")]
    name, value = change
    value = value.replace("{missing}", str(tmp_path / "nothing.txt")).replace("{empty}", str(tiny / "empty.txt"))
    if name in args:
        args[args.index(name) + 1] = value
    else:
        args += [name, value]
    code, err = ptm(capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_cvt_flags_without_unlabeled_text_are_refused(tiny, tmp_path, capsys):
    code, err = ptm(capsys, "finetune", "--checkpoint", tiny / "bert", "--task", "classification", "--train", tiny / "sst.tsv",
                    "-o", tmp_path / "run", "--cvt-ratio", "2", *FT)
    assert code == 2 and "--cvt-ratio needs --cvt-unlabeled" in err, err
