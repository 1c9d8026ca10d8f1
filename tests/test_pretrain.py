"""`ptm pretrain` end to end on a slice of the bundled Wikipedia sample: tiny models, few steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, sample_corpus
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config

TINY = ["--preset", "bert-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--num-layers", "2",
        "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "2", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A 1,500-word-piece tokenizer and shards for the first articles of the bundled sample."""
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=12, vocab_size=1500, tokenizer_lines=3000)




def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))


def test_pretrain_learns_and_writes_checkpoints(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "run"
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "40", "--lr", "3e-3",
                    "--eval-every", "20", "--save-every", "20", "--keep-last", "1")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["mlm_loss"] for r in records if "mlm_loss" in r]
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3 - 0.5, train_losses
    assert {"loss", "lr", "tokens_per_s", "nsp_acc", "grad_norm"} <= set(records[0])
    assert any("eval_mlm_acc" in r for r in records)
    checkpoints = list_step_checkpoints(run)
    assert [c.name for c in checkpoints] == ["step-00000040"], "keep-last 1 should prune older checkpoints"
    ckpt = checkpoints[0]
    config = read_config(ckpt)
    assert config["arch"] == "bert" and config["objective"] == "mlm+nsp" and config["model"]["hidden_size"] == 32
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "trainer/optimizer.safetensors", "trainer/state.json"):
        assert (ckpt / name).exists(), name
    assert "ptm: done: step 40" in err
    assert "mfu is measured against" in err and "fastest of 7 fp32" in err
    assert all(0 < r["mfu"] < 1 for r in records if "mfu" in r)


def test_resume_reaches_the_same_weights(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["--data", shards, "--tokenizer", tok, *TINY, "--seed", "3"]
    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "full", "--max-steps", "8")[0] == 0
    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "cut", "--max-steps", "8", "--save-every", "3", "--keep-last", "0")[0] == 0
    # Simulate a run killed after step 3: keep only that checkpoint, then resume it.
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        import shutil

        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0, err
    assert "resuming" in err
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics history must not repeat steps after a resume"


def _words(ids: torch.Tensor, special: torch.Tensor, continues: np.ndarray) -> torch.Tensor:
    """Word number of every token of one row (-1 at special tokens): a word is a piece and the "##" pieces after it."""
    words, current = torch.full_like(ids, -1), -1
    for i, (token, is_special) in enumerate(zip(ids.tolist(), special.tolist())):
        if is_special:
            continue
        if current < 0 or not continues[token] or special[i - 1]:
            current += 1
        words[i] = current
    return words


def _partly_masked_words(batches: list[dict], tokenizer, continues: np.ndarray) -> tuple[int, int]:
    """(words of several pieces with some but not all pieces masked, such words masked whole)."""
    partly = whole = 0
    for batch in batches:
        labels = batch["mlm_labels"]
        original = torch.where(labels != -100, labels, batch["input_ids"])
        special = ~batch["attention_mask"].bool() | torch.isin(original, torch.tensor([tokenizer.cls_id, tokenizer.sep_id]))
        for row in range(len(original)):
            words = _words(original[row], special[row], continues)
            masked = labels[row] != -100
            for word in range(int(words.max()) + 1):
                pieces = masked[words == word]
                if len(pieces) > 1 and pieces.any():
                    partly += not pieces.all()
                    whole += bool(pieces.all())
    return partly, whole


@pytest.mark.parametrize("extra", [["--objective", "mlm"], ["--whole-word-mask", "--grad-accum", "2"]])
def test_objective_variants(corpus, tmp_path, capsys, monkeypatch, extra):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.bert_task import BertPretrainTask
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    shards, tok = corpus  # no --tokenizer: the shard manifest says where it is
    batches = []
    make_batches = BertPretrainTask.next_micro_batches

    def recorded(self, count):
        made = make_batches(self, count)
        batches.extend(made)
        return made

    monkeypatch.setattr(BertPretrainTask, "next_micro_batches", recorded)
    code, err = ptm(capsys, "pretrain", "--data", shards, "-o", tmp_path / "run", *TINY, "--max-steps", "4", *extra)
    assert code == 0, err
    config = read_config(list_step_checkpoints(tmp_path / "run")[-1])
    assert len(batches) == 4 * (2 if "--grad-accum" in extra else 1)

    tokenizer = PtmTokenizer.load(tok)
    pieces = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    continues = np.array([piece.startswith("##") for piece in pieces])
    # The shards' word starts are exactly the pieces that do not continue a word (WordPiece).
    for row in ShardDataset.open(shards):
        assert np.array_equal(row.word_starts, ~continues[row.input_ids])
    partly, whole = _partly_masked_words(batches, tokenizer, continues)
    if "--whole-word-mask" in extra:
        assert config["objective"] == "mlm+nsp"
        assert all("nsp_labels" in b and b["token_type_ids"].any() for b in batches)
        assert partly == 0 and whole > 0, (partly, whole)  # every masked word is masked whole
    else:
        assert config["objective"] == "mlm"
        # Full-sentence blocks: no NSP labels, no second segment.
        assert all("nsp_labels" not in b for b in batches)
        assert all(not b.get("token_type_ids", torch.zeros(1)).any() for b in batches)
        assert partly > 0  # token-level masking splits words: the check above can fail


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size 0"),
        (["--objective", "clm"], "--objective 'clm'"),
        (["--preset", "bert-huge"], "--preset 'bert-huge'"),
        (["--seq-len", "1024"], "exceeds the model's 512 positions"),
        (["--mask-prob", "1.5"], "--mask-prob"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_flags_fail_with_one_line(corpus, tmp_path, capsys, args, message):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *TINY, *args)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "gpt", "--ngram-mask", "3"], "--ngram-mask 3: --objective clm does not mask tokens"),
        (["--arch", "elmo", "--ngram-mask", "2"], "--ngram-mask 2: --objective bilm does not mask tokens"),
        (["--arch", "gpt", "--whole-word-mask"], "--whole-word-mask: --objective clm does not mask tokens"),
        (["--arch", "elmo", "--mask-prob", "0.3"], "--mask-prob 0.3: --objective bilm does not mask tokens"),
        (["--objective", "span", "--ngram-mask", "3"], "--ngram-mask 3: --objective span does not use it"),
        (["--objective", "mlm", "--disc-weight", "10"], "--disc-weight 10.0: --objective mlm does not use it"),
    ],
)
def test_settings_the_objective_does_not_read_are_refused(corpus, tmp_path, capsys, args, message):
    shards, tok = corpus
    preset = [] if "--arch" in args else ["--preset", "bert-tiny"]
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *preset, *args,
                    "--max-steps", "1", "--no-progress")
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_refused(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "2")
    assert code == 2 and "--resume" in err
    assert (run / "keep.txt").read_text() == "mine"


def test_resume_refuses_changed_model(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "run"
    assert ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", run, "--hidden-size", "64")
    assert code == 2 and "--hidden-size" in err


def test_config_file_sets_fields_and_flags_win(corpus, tmp_path, capsys):
    shards, tok = corpus
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{shards}"\ntokenizer = "{tok}"\npreset = "bert-tiny"\nseq_len = 40\nbatch_size = 2\nmax_steps = 3\n'
                      'eval_rows = 4\neval_batches = 1\nlr = 5e-4\n\n[model]\nhidden_size = 16\nnum_heads = 2\nintermediate_size = 32\n')
    code, err = ptm(capsys, "pretrain", "--config", config, "-o", tmp_path / "run", "--max-steps", "2", "--no-progress")
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["max_steps"] == 2 and run["config"]["seq_len"] == 40 and run["model"]["hidden_size"] == 16
    config.write_text("seq_length = 40\n")
    code, err = ptm(capsys, "pretrain", "--config", config, "-o", tmp_path / "other")
    assert code == 2 and "unknown setting 'seq_length'" in err


def test_bundled_sample_main_job(tmp_path, capsys, monkeypatch):
    # The README's first command, shortened: no --data trains a tokenizer for the bundled sample and caches it.
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    code, err = ptm(capsys, "pretrain", "-o", tmp_path / "run", "--max-steps", "3", "--batch-size", "4", "--seq-len", "32",
                    "--eval-batches", "1", "--no-progress")
    assert code == 0, err
    assert "bundled sample" in err and "Next: pretrain on your own text" in err
    assert list((tmp_path / "cache" / "sample").glob("*/shards/manifest.json"))
    config = read_config(list_step_checkpoints(tmp_path / "run")[-1])
    assert config["model"]["hidden_size"] == 128  # the sample's bert-tiny default, since no --preset was given


def test_init_from_starts_at_a_checkpoints_weights(corpus, tmp_path, capsys):
    shards, tok = corpus
    assert ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "first", *TINY, "--max-steps", "3")[0] == 0
    common = ["--data", shards, "--tokenizer", tok, "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "1", "--no-progress"]
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "second", "--init-from", tmp_path / "first", "--max-steps", "1", "--lr", "1e-12")
    assert code == 0, err
    assert "starting from the weights of" in err
    before, after = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(before[key], after[key], atol=1e-6, rtol=0)
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "third", "--init-from", tmp_path / "first", "--hidden-size", "64")
    assert code == 2 and "--hidden-size conflicts with --init-from" in err
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "fourth", "--init-from", tmp_path / "first", "--arch", "gpt")
    assert code == 2 and "--arch" in err


def test_resume_from_another_directory_with_relative_paths_and_a_moved_corpus(corpus, tmp_path, capsys, monkeypatch):
    import shutil

    shards, tok = corpus
    work = tmp_path / "work"
    shutil.copytree(shards, work / "shards")
    shutil.copytree(tok, work / "tok")
    monkeypatch.chdir(work)
    common = [*TINY, "--seed", "3", "--max-steps", "6", "--save-every", "3", "--keep-last", "0"]
    assert ptm(capsys, "pretrain", "--data", "shards", "--tokenizer", "tok", "-o", "run", *common)[0] == 0
    full = _weights(work / "run")
    shutil.rmtree(list_step_checkpoints(work / "run")[-1])  # stopped after step 3

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, err = ptm(capsys, "pretrain", "--resume", work / "run")
    assert code == 0, err
    assert all(torch.equal(full[k], v) for k, v in _weights(work / "run").items())

    # The corpus moves: the run says so, and takes it again from its new place when it is the same data.
    shutil.rmtree(list_step_checkpoints(work / "run")[-1])
    shutil.move(work / "shards", tmp_path / "moved-shards")
    code, err = ptm(capsys, "pretrain", "--resume", work / "run")
    assert code == 2 and "not found from here" in err and "--data" in err and err.count("\n") == 1
    code, err = ptm(capsys, "pretrain", "--resume", work / "run", "--data", tmp_path / "moved-shards")
    assert code == 0, err
    assert all(torch.equal(full[k], v) for k, v in _weights(work / "run").items())

    # Other data under the same name is refused.
    shutil.rmtree(list_step_checkpoints(work / "run")[-1])
    other = tmp_path / "other"
    other.mkdir()
    (other / "text.txt").write_text("A different corpus.\n\nWith two documents.\n", encoding="utf-8")
    assert ptm(capsys, "tokenize", "encode", other / "text.txt", "--tokenizer", work / "tok", "-o", other / "shards")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", work / "run", "--data", other / "shards")
    assert code == 2 and "differ from the ones the run trained on" in err


def test_resuming_a_finished_run_says_how_to_extend_it(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "run"
    assert ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", run)
    assert code == 0 and "already reached --max-steps 2" in err and "--max-steps 4" in err
    code, err = ptm(capsys, "pretrain", "--resume", run, "--max-steps", "3")
    assert code == 0 and "ptm: done: step 3" in err
    # The run directory also stands for its tokenizer.
    code, out, err = run_cli(capsys, "tokenize", "show", "-t", run, "--tokens", "the history of")
    assert code == 0 and out.split() == ["the", "history", "of"], err
