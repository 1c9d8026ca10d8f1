"""Sequence-to-sequence finetuning and evaluation: the three input layouts, label smoothing, a tiny BART
that learns to copy from the command line, ``ptm eval``'s BLEU/chrF/ROUGE and predictions, bad inputs,
and Multi30k's parallel files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, shared_file

from ptmcli.checkpoint import list_step_checkpoints, save_checkpoint, state_dict_for_saving
from ptmcli.errors import PtmError
from ptmcli.finetuning import seq2seq
from ptmcli.models.registry import get_family
from ptmcli.tasks.seq2seq_data import TextPair, read_pairs, read_parallel
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

WORDS = "red blue green black white brown pink gray".split()
# One thread: on a busy machine two threads per process slow these tiny models down several times over.
QUIET = ["--no-progress", "--threads", "1"]


def _pairs(rng: random.Random, count: int, longest: int = 5) -> list[tuple[str, str]]:
    """The copy task: a target is its source (2 to ``longest`` colour words)."""
    out = []
    for _ in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, longest)))
        out.append((words, words))
    return out


def _write_tsv(path: Path, pairs, header: bool = False) -> Path:
    path.write_text(("source\ttarget\n" if header else "") + "".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def _write_jsonl(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs), encoding="utf-8")
    return path


def _write_parallel(stem: Path, pairs) -> tuple[Path, Path]:
    sources, targets = stem.with_suffix(".src"), stem.with_suffix(".tgt")
    sources.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    targets.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return sources, targets


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A random-init BART (64 wide, dropout 0) over a WordPiece vocabulary of the colour words, and the copy task."""
    root = tmp_path_factory.mktemp("seq2seq")
    rng = random.Random(0)
    train, dev = _pairs(rng, 512), _pairs(rng, 40)
    tok = train_tokenizer(iter([" ".join(WORDS)] * 20), "wordpiece", 120, min_frequency=1)
    tok.save(root / "tok")
    family = get_family("bart")
    torch.manual_seed(0)
    config = family.model_config("bart-tiny", tok, hidden_size=64, num_heads=4, intermediate_size=128, max_position_embeddings=16,
                                 hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = family.build(config)
    ckpt = save_checkpoint(root / "ckpt", config={"arch": "bart", "model": config.to_dict(), "objective": "denoise", "task": None},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=root / "tok")
    paths = {"root": root, "tok": root / "tok", "ckpt": Path(ckpt), "train": _write_tsv(root / "train.tsv", train),
             "dev": _write_tsv(root / "dev.tsv", dev), "train_jsonl": _write_jsonl(root / "train.jsonl", train),
             "train_header": _write_tsv(root / "train-header.tsv", train, header=True)}
    paths["train_src"], paths["train_tgt"] = _write_parallel(root / "train", train)
    return paths


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- reading ----------------------------------------------------------------------------------------


def test_every_layout_reads_the_same_pairs_and_makes_the_same_batches(data):
    tsv, header, jsonl = read_pairs(str(data["train"])), read_pairs(str(data["train_header"])), read_pairs(str(data["train_jsonl"]))
    parallel = read_parallel(str(data["train_src"]), str(data["train_tgt"]))
    assert len(tsv) == 512
    texts = [(p.source, p.target) for p in tsv]
    for other in (header, jsonl, parallel):
        assert [(p.source, p.target) for p in other] == texts
    assert header[0].line == 2 and tsv[0].line == 1  # lines are the file's own
    tok = PtmTokenizer.load(data["tok"])
    framing = get_family("bart").framing(tok)
    collate = seq2seq.pair_collator(framing.pad_id, tok.sep_id)
    batches = [collate(seq2seq.encode_pairs(pairs[:16], tok, framing, 16, 16).rows) for pairs in (tsv, header, jsonl, parallel)]
    for batch in batches[1:]:
        assert batch.keys() == batches[0].keys()
        assert all(torch.equal(batch[k], batches[0][k]) for k in batch)
    first = batches[0]
    # <s> source </s> for the encoder; the decoder reads the target behind its start token.
    assert first["input_ids"][0, 0] == tok.cls_id and first["labels"][0, 0] == tok.cls_id
    assert torch.equal(first["decoder_input_ids"][:, 1:][first["labels"][:, 1:] != -100], first["labels"][:, :-1][first["labels"][:, 1:] != -100])


def test_bad_rows_name_their_file_and_line(tmp_path):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("a b\tb a\nc d\n", encoding="utf-8")
    with pytest.raises(PtmError, match=r"bad\.tsv:2: no target column"):
        read_pairs(str(tsv))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"source": "a", "target": "b"}\n\n{"source": "c"}\n', encoding="utf-8")
    with pytest.raises(PtmError, match=r"bad\.jsonl:3: 'target' is missing"):
        read_pairs(str(jsonl))
    sources, targets = tmp_path / "x.en", tmp_path / "x.de"
    sources.write_text("one\ntwo\nthree\n", encoding="utf-8")
    targets.write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(PtmError, match=r"x\.en:3: no partner line, .*x\.de ends at line 2"):
        read_parallel(str(sources), str(targets))
    with pytest.raises(PtmError, match=r"x\.en:3: no partner line, .*x\.de ends at line 2"):
        read_parallel(str(targets), str(sources))  # the longer one named wherever it stands
    assert [p.target for p in read_parallel(str(targets), None)] == [None, None]


def test_cuts_keep_the_end_token_and_are_counted(data):
    tok = PtmTokenizer.load(data["tok"])
    framing = get_family("bart").framing(tok)
    pairs = [TextPair("red blue green", "red blue green black white", 1), TextPair("red", "red", 2)]
    rows = seq2seq.encode_pairs(pairs, tok, framing, 4, 5)
    assert rows.cut_sources == 1 and rows.cut_targets == 1
    assert rows[0]["source"].tolist() == [tok.cls_id, *tok.encode_batch(["red blue"])[0], tok.sep_id]
    assert len(rows[0]["target"]) == 5 and rows[0]["target"][-1] == tok.sep_id
    assert "1 sources cut to --max-source-len 4 and 1 targets cut to --max-target-len 5" in seq2seq.describe_cuts(rows, "train", 4, 5)
    with pytest.raises(PtmError, match="--max-target-len 2: leaves no room"):
        seq2seq.encode_pairs(pairs, tok, framing, 4, 2)


# -- the loss ---------------------------------------------------------------------------------------


def test_label_smoothing_is_torchs_formula_on_a_fixed_batch(data):
    from ptmcli.checkpoint.loading import load_checkpoint

    loaded = load_checkpoint(data["ckpt"], note_initialised=False)
    tok = loaded.tokenizer
    framing = loaded.family.framing(tok)
    rows = seq2seq.encode_pairs(read_pairs(str(data["dev"]))[:8], tok, framing, 16, 16)
    batch = seq2seq.pair_collator(framing.pad_id, seq2seq.decoder_start_id(loaded.model))(rows.rows)
    labels = batch["labels"]
    with torch.no_grad():
        logits = loaded.model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=batch["decoder_input_ids"])["logits"]
    plain = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    smoothed = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum", label_smoothing=0.1)
    # By hand: (1 - eps) * nll + eps * the mean over the vocabulary of -log p, summed over the real targets.
    logp = logits.log_softmax(-1)[labels != -100]
    by_hand = 0.9 * plain - 0.1 * logp.mean(-1).sum()
    assert torch.allclose(smoothed, by_hand, rtol=1e-5)
    model = seq2seq.Seq2SeqModel("bart", loaded.model, label_smoothing=0.1).train()  # dropout 0: train = eval
    out = model(batch)
    assert torch.allclose(out["loss_sum"], smoothed, rtol=1e-5)
    assert int(out["count"]) == int((labels != -100).sum())
    with torch.no_grad():
        assert torch.allclose(model(batch)["nll_sum"], plain, rtol=1e-5)  # the dev loss is plain
    model.label_smoothing = 0.0
    fused = model(batch)  # the model's own fused loss, with gradients on
    assert "logits" not in fused and torch.allclose(fused["loss_sum"], plain, rtol=1e-4)
    assert abs(float(smoothed - plain)) > 1e-3 * float(plain)


# -- the command line -------------------------------------------------------------------------------


def test_every_layout_trains_the_same_from_the_cli(data, tmp_path, capsys):
    common = ["finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--max-steps", "2", "--batch-size", "8",
              "--log-every", "1", "--max-len", "16", "--max-target-len", "6", *QUIET]
    layouts = {"tsv": ["--train", data["train"]], "jsonl": ["--train", data["train_jsonl"]],
               "parallel": ["--source-file", data["train_src"], "--target-file", data["train_tgt"]]}
    losses = {}
    for name, flags in layouts.items():
        code, _, err = run_cli(capsys, *common, *flags, "-o", tmp_path / name)
        assert code == 0, err
        # 5-word targets are 7 tokens framed: cut to 6 and counted.
        assert "targets cut to --max-target-len 6 tokens (of 512 pairs)" in err
        losses[name] = [m["task_loss"] for m in _metrics(tmp_path / name) if "task_loss" in m]
    assert len(losses["tsv"]) == 2 and losses["tsv"] == losses["jsonl"] == losses["parallel"]


def test_a_tiny_bart_learns_to_copy_and_eval_scores_its_predictions(data, tmp_path, capsys):
    import sacrebleu

    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--train", data["train"],
                           "--dev", data["dev"], "-o", run, "--max-steps", "100", "--eval-every", "25", "--batch-size", "32",
                           "--lr", "3e-3", "--max-len", "16", "--label-smoothing", "0.1", "--log-every", "50", *QUIET)
    assert code == 0, err
    evals = [m for m in _metrics(run) if "eval_bleu" in m]
    assert [m["step"] for m in evals] == [25, 50, 75, 100]
    first, last = evals[0], evals[-1]
    # At step 25 the model has not learned to copy; by step 100 it has (measured: BLEU 0 at step 25, 93 at 100; dev loss 1.86 -> 0.50).
    assert first["eval_bleu"] < 20 and max(m["eval_bleu"] for m in evals) > 60, evals
    assert last["eval_loss"] < 0.6 * first["eval_loss"], evals
    results = json.loads((run / "results.json").read_text())
    assert results["metric"] == "bleu" and results["best"]["bleu"] == max(m["eval_bleu"] for m in evals)
    task = json.loads((run / "best" / "config.json").read_text())["task"]
    assert task["type"] == "seq2seq" and task["label_smoothing"] == 0.1 and task["max_target_len"] == 16

    predictions = tmp_path / "pred.txt"
    code, out, err = run_cli(capsys, "eval", "-c", run, "--data", data["dev"], "--predictions", predictions, "--metrics", "rouge",
                             "--json", "--threads", "1")
    assert code == 0, err
    metrics = json.loads(out)
    assert "ptm eval: sacrebleu signatures: BLEU nrefs:1|case:mixed|eff:no|tok:13a" in err
    hypotheses = predictions.read_text(encoding="utf-8").splitlines()
    references = [line.split("\t")[1] for line in data["dev"].read_text(encoding="utf-8").splitlines()]
    assert len(hypotheses) == len(references) == metrics["examples"] == 40
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-9)
    assert metrics["bleu"] == pytest.approx(results["best"]["bleu"], abs=1e-6)  # what training measured
    assert 0 < metrics["rougeL"] <= 100 and metrics["rouge2"] <= metrics["rouge1"]
    # The finetuned checkpoint is still a plain BART: ptm generate writes what eval predicted.
    sources = tmp_path / "sources.txt"
    sources.write_text("".join(line.split("\t")[0] + "\n" for line in data["dev"].read_text().splitlines()), encoding="utf-8")
    code, generated, err = run_cli(capsys, "generate", "-c", run, "--input", sources, "--max-new-tokens", "15", "--threads", "1")
    assert code == 0 and generated.splitlines() == hypotheses, err


def test_bad_inputs_are_one_line_and_leave_nothing(data, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("red blue\tred blue\nred\n", encoding="utf-8")
    base = ["finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--max-len", "16", "-o", tmp_path / "out", *QUIET]
    for flags, message in ((["--train", bad], "bad.tsv:2: no target column"),
                           (["--train", data["train"], "--num-beams", "0"], "--num-beams 0: must be at least 1"),
                           (["--source-file", data["train_src"]], "--source-file needs its --target-file"),
                           (["--train", data["train"], "--pool", "mean"], "--pool does not apply to --task seq2seq"),
                           (["--train", data["train"], "--label-smoothing", "1"], "--label-smoothing 1.0: must be in [0, 1)")):
        code, _, err = run_cli(capsys, *base, *flags)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, _, err = run_cli(capsys, "finetune", "--task", "classification", "--checkpoint", data["ckpt"], "--train", data["train"],
                           "-o", tmp_path / "out", "--num-beams", "2", *QUIET)
    assert code == 2 and "--num-beams applies to --task seq2seq" in err, err
    assert not (tmp_path / "out").exists()
    # eval: a bad line fails before anything is generated, and no predictions file appears.
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--train", data["train"],
                           "-o", tmp_path / "ok", "--max-len", "16", "--max-steps", "1", *QUIET)
    assert code == 0, err
    predictions = tmp_path / "pred.txt"
    ckpt = list_step_checkpoints(tmp_path / "ok")[-1]  # the checkpoint itself: a run directory adds a line saying which
    for flags, message in ((["--data", bad], "bad.tsv:2: no target column"), (["--data", data["dev"], "--num-beams", "0"], "--num-beams 0"),
                           (["--data", data["dev"], "--metrics", "meteor"], "--metrics 'meteor'")):
        code, _, err = run_cli(capsys, "eval", "-c", ckpt, *flags, "--predictions", predictions)
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert list(tmp_path.glob("*pred*")) == []
    code, _, err = run_cli(capsys, "predict", "-c", ckpt, data["dev"])
    assert code == 2 and "ptm generate" in err, err


def test_a_missing_rouge_package_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(PtmError, match=r"pip install rouge-score"):
        seq2seq.score_outputs(["a b"], ["a b"], ("bleu", "chrf", "rouge"))


def test_an_encoder_only_checkpoint_is_refused(tmp_path, data, capsys):
    # DistilBERT: encoder-only, and no segments for UniLM's recipe (tests/test_unilm_seq2seq.py has BERT's).
    tok = PtmTokenizer.load(data["tok"])
    family = get_family("distilbert")
    config = family.model_config("distilbert-tiny", tok, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1,
                                 max_position_embeddings=16)
    model = family.build(config)
    ckpt = save_checkpoint(tmp_path / "distilbert", config={"arch": "distilbert", "model": config.to_dict(), "objective": "mlm", "task": None},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=data["tok"])
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", ckpt, "--train", data["train"], "-o",
                           tmp_path / "out", "--max-len", "16", *QUIET)
    assert code == 2 and "a distilbert model is encoder-only; --task seq2seq needs an encoder-decoder checkpoint (bart" in err, err
    assert "or an encoder with a masked-LM head to finetune as UniLM's seq2seq LM (bert)" in err, err
    assert not (tmp_path / "out").exists()


# -- Multi30k ---------------------------------------------------------------------------------------


def test_multi30k_parallel_files_read_line_for_line(data, tmp_path, capsys):
    train_en, train_de = shared_file("multi30k/train.en"), shared_file("multi30k/train.de")
    pairs = read_parallel(str(train_en), str(train_de))
    english = train_en.read_text(encoding="utf-8").splitlines()
    german = train_de.read_text(encoding="utf-8").splitlines()
    assert len(pairs) == len(english) == len(german) == 29_000
    assert (pairs[0].source, pairs[0].target, pairs[0].line) == (english[0], german[0], 1)
    assert (pairs[-1].source, pairs[-1].target) == (english[-1], german[-1])
    assert pairs[0].target.startswith("Zwei junge weiße Männer")
    # The CLI reads them as --source-file/--target-file (here the 1,014 val pairs, two steps).
    val_en, val_de = shared_file("multi30k/val.en"), shared_file("multi30k/val.de")
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--source-file", val_en,
                           "--target-file", val_de, "-o", tmp_path / "m30k", "--max-len", "16", "--max-steps", "2",
                           "--batch-size", "8", *QUIET)
    assert code == 0, err
    assert "1,014 train pairs" in err and "of 1,014 pairs" in err  # colour-word vocabulary: most sentences are cut
