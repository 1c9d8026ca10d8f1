"""SpanBERT: span masking's distribution on real text, the boundary head's alignment, and `ptm pretrain
--objective span+sbo` end to end (checkpoint holds the head, finetuning skips it, resume is exact)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, sample_corpus
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.models.attached_heads import attach_head
from ptmcli.models.bert import BertForPreTraining, preset_config
from ptmcli.models.span_boundary import span_boundary_head
from ptmcli.pretraining.span_masking import SpanMasker, span_length_distribution

TINY = ["--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--num-layers", "2",
        "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4", "--eval-batches", "2", "--log-every", "2", "--no-progress"]
WIKITEXT = SHARED_DATA / "wikitext-2-raw" / "wiki.valid.raw"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=12, vocab_size=1500, tokenizer_lines=3000)


@pytest.fixture(scope="module")
def real_text(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """Shards of WikiText-2's validation text when it is beside the checkout, else the bundled sample's."""
    if not WIKITEXT.is_file():
        return corpus
    from itertools import islice

    from ptmcli.data.encode import encode_to_shards
    from ptmcli.textio.inputs import iter_texts
    from ptmcli.tokenization.train import train_tokenizer

    root = tmp_path_factory.mktemp("wikitext")
    tok = root / "tok"
    train_tokenizer(islice(iter_texts([str(WIKITEXT)]), 4000), "wordpiece", 4000).save(tok)
    encode_to_shards([str(WIKITEXT)], str(tok), str(root / "shards"), workers=1, progress=False)
    return root / "shards", tok


def _task(shards: Path, tok: Path, objective: str, seq_len: int = 128, batch_size: int = 32):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.objective_context import ObjectiveContext
    from ptmcli.pretraining.objective_table import OBJECTIVES
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    dataset = ShardDataset.open(str(shards))
    config = SimpleNamespace(objective=objective, seq_len=seq_len, batch_size=batch_size, mask_prob=0.15, seed=3,
                             eval_batches=1, compile=False)
    context = ObjectiveContext(config, PtmTokenizer.load(tok), dataset, np.arange(len(dataset)), [], None)
    return OBJECTIVES[objective].build(context)


def _spans(labels: np.ndarray) -> list[tuple[int, int]]:
    """(begin, end) of each run of predicted columns in a row."""
    chosen = np.concatenate([[False], labels != -100, [False]])
    edges = np.flatnonzero(np.diff(chosen.astype(np.int8)))
    return list(zip(edges[0::2], edges[1::2]))


def test_span_batches_on_real_text(real_text):
    """The task's batches: 15% +- 1% of tokens predicted, no span over a special token, boundaries aligned."""
    shards, tok = real_text
    task = _task(shards, tok, "span+sbo")
    predicted, real = 0, 0
    for _ in range(40):
        batch = task.next_micro_batches(1)[0]
        labels, inputs = batch["mlm_labels"].numpy(), batch["input_ids"].numpy()
        special = np.isin(inputs, [task.specials.cls_id, task.specials.sep_id, task.specials.pad_id]) & (labels == -100)
        predicted += int((labels != -100).sum())
        real += int((~special & (batch["attention_mask"].numpy() == 1)).sum())
        for r in range(len(labels)):
            for begin, end in _spans(labels[r]):
                assert not special[r, begin:end].any()
                # The boundaries are the columns just outside the span, never predicted themselves.
                assert (batch["sbo_left"][r, begin:end].numpy() == begin - 1).all()
                assert (batch["sbo_right"][r, begin:end].numpy() == end).all()
                assert (batch["sbo_offset"][r, begin:end].numpy() == np.arange(end - begin)).all()
    assert abs(predicted / real - 0.15) < 0.01, predicted / real


def _words_per_span(masker: SpanMasker, task, batches: int) -> tuple[list[int], int, int]:
    from ptmcli.objectives.collate import collate_blocks

    s = task.specials
    counts, predicted, real = [], 0, 0
    for _ in range(batches):
        taken = task.stream.take(task.batch_size)
        batch = collate_blocks(taken.examples, s.cls_id, s.sep_id, s.pad_id, task.seq_len, pad_to_longest=True)
        masks = masker(batch["input_ids"], batch["special_tokens_mask"], batch["word_starts"], taken.numbers, 11)
        labels = masks.labels.numpy()
        starts = batch["word_starts"].numpy()
        special = batch["special_tokens_mask"].numpy()
        predicted += int((labels != -100).sum())
        real += int((~special).sum())
        for r in range(len(labels)):
            for begin, end in _spans(labels[r]):
                assert not special[r, begin - 1 : end + 1][1:-1].any()
                counts.append(int(starts[r, begin:end].sum()) + int(not starts[r, begin]))
    return counts, predicted, real


def test_span_lengths_follow_the_clipped_geometric(real_text):
    shards, tok = real_text
    task = _task(shards, tok, "span")
    counts, predicted, real = _words_per_span(task.span_masker, task, 40)
    distribution = span_length_distribution()
    values = np.arange(1, len(distribution) + 1)
    mean = float(distribution @ values)
    sd = float(np.sqrt(distribution @ (values - mean) ** 2))
    assert abs(mean - 3.797) < 1e-3
    # Four standard errors of the mean of this many spans (about 0.1 words for 6,000 spans).
    assert abs(np.mean(counts) - mean) < 4 * sd / np.sqrt(len(counts)), (np.mean(counts), len(counts))
    assert max(counts) <= 10 and min(counts) >= 1
    assert abs(predicted / real - 0.15) < 0.01, predicted / real


def test_masks_are_keyed_by_example_number():
    """A row masked alone is the row masked in a batch: any process builds any row alike."""
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(10, 500, (6, 64)))
    special = torch.zeros(6, 64, dtype=torch.bool)
    special[:, 0] = special[:, -1] = special[:, 30] = True
    starts = torch.from_numpy(rng.random((6, 64)) < 0.7)
    masker = SpanMasker(500, 4, (1, 2, 0), 0.15)
    whole = masker(ids, special, starts, np.arange(100, 106), 7)
    part = masker(ids[3:5], special[3:5], starts[3:5], np.arange(103, 105), 7)
    for name in ("input_ids", "labels", "left", "right", "offset"):
        assert torch.equal(getattr(whole, name)[3:5], getattr(part, name)), name


def test_boundary_head_reads_the_tokens_outside_the_span():
    """A hand-built span: the head's loss is the one computed by hand from the boundary states."""
    torch.manual_seed(0)
    config = preset_config("bert-tiny", vocab_size=50, hidden_size=16, num_heads=2, intermediate_size=32, hidden_dropout=0.0,
                           attention_dropout=0.0)
    model = BertForPreTraining(config)
    attach_head(model, "sbo", span_boundary_head(model))
    model.eval()
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15, 2]])
    labels = torch.full_like(ids, -100)
    labels[0, 3:6] = ids[0, 3:6]  # the span is columns 3, 4, 5: boundaries 2 and 6
    left, right = torch.zeros_like(ids), torch.zeros_like(ids)
    left[0, 3:6], right[0, 3:6] = 2, 6
    offset = torch.zeros_like(ids)
    offset[0, 3:6] = torch.arange(3)
    with torch.no_grad():
        out = model(ids, None, None, mlm_labels=labels, sbo_left=left, sbo_right=right, sbo_offset=offset)
        hidden = model.bert(ids)
        head = model.sbo
        states = head.transform(hidden[0, [2, 2, 2]], hidden[0, [6, 6, 6]], torch.arange(3))
        logits = states @ model.bert.embeddings.word_embeddings.weight.T + head.bias
        expected = torch.nn.functional.cross_entropy(logits, ids[0, 3:6], reduction="sum")
    assert int(out["sbo_count"]) == 3
    assert torch.allclose(out["sbo_loss_sum"], expected, atol=1e-5)
    with pytest.raises(TypeError, match="no attached head"):
        model(ids, mlm_labels=labels, span_typo=left)


@pytest.mark.parametrize("arch,preset", [("bert", "bert-tiny"), ("albert", "albert-tiny")])
def test_span_boundary_pretrains_saves_its_head_and_finetunes(corpus, tmp_path, capsys, arch, preset):
    shards, tok = corpus
    run = tmp_path / "run"
    code, err = ptm(capsys, "pretrain", "--arch", arch, "--objective", "span+sbo", "--preset", preset, "--data", shards,
                    "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "6", "--lr", "3e-3")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"mlm_loss", "mlm_acc", "sbo_loss", "sbo_acc"} <= set(records[0])
    ckpt = list_step_checkpoints(run)[-1]
    weights = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("sbo.") for k in weights) and "sbo.bias" in weights
    assert read_config(ckpt)["extra_heads"] == {"sbo": "sbo."}
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{'good fine' if i % 2 else 'bad poor'} words {i}\t{i % 2}\n" for i in range(24)))
    code, err = ptm(capsys, "finetune", "--checkpoint", run, "--task", "classification", "--train", train, "--dev", train,
                    "-o", tmp_path / "ft", "--epochs", "1", "--batch-size", "8", "--no-progress")
    assert code == 0, err
    assert "sbo." not in err  # skipped quietly, as the MLM head is
    assert not any(k.startswith("sbo.") for k in load_file(str(tmp_path / "ft" / "best" / "model.safetensors")))


def test_span_boundary_resume_is_exact(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["pretrain", "--objective", "span+sbo", "--preset", "bert-tiny", "--data", shards, "--tokenizer", tok, *TINY, "--lr", "3e-3"]
    assert ptm(capsys, *common, "-o", tmp_path / "whole", "--max-steps", "4")[0] == 0
    assert ptm(capsys, *common, "-o", tmp_path / "cut", "--max-steps", "2")[0] == 0
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut", "--max-steps", "4")
    assert code == 0, err
    whole = load_file(str(list_step_checkpoints(tmp_path / "whole")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_span_needs_word_starts(tmp_path, capsys):
    from ptmcli.pretraining.sample import SAMPLE

    text = tmp_path / "t.txt"
    text.write_text("".join(open(SAMPLE, encoding="utf-8").readlines()[:400]))
    code, _ = ptm(capsys, "tokenize", "train", text, "--model", "wordpiece", "--vocab-size", "600", "-o", tmp_path / "tok")
    assert code == 0
    code, _ = ptm(capsys, "tokenize", "encode", text, "--tokenizer", tmp_path / "tok", "-o", tmp_path / "shards", "--no-word-starts")
    assert code == 0
    code, err = ptm(capsys, "pretrain", "--objective", "span", "--data", tmp_path / "shards", "--tokenizer", tmp_path / "tok",
                    "-o", tmp_path / "run", *TINY, "--eval-rows", "0", "--max-steps", "1")
    assert code == 2 and "without word boundaries" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_span_boundary_checkpoint_exports_to_transformers_without_its_head(corpus, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from ptmcli.convert.ptm_model import load_model

    shards, tok = corpus
    run = tmp_path / "run"
    code, err = ptm(capsys, "pretrain", "--objective", "span+sbo", "--preset", "bert-tiny", "--data", shards,
                    "--tokenizer", tok, "-o", run, *TINY, "--max-steps", "3", "--lr", "3e-3")
    assert code == 0, err
    code, err = ptm(capsys, "convert", run, tmp_path / "hf")
    assert code == 0, err
    assert "left out sbo (sbo.*)" in err and "pretraining only" in err
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]  # span masking trains the MLM head alone
    assert not any(k.startswith("sbo.") for k in load_file(str(tmp_path / "hf" / "model.safetensors")))

    module, _, initialised = load_model(run)
    assert initialised == []
    ids = torch.randint(5, config["vocab_size"], (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    types = torch.zeros_like(ids)
    with torch.no_grad():
        last = module.bert(ids, types, mask)
        logits = module.mlm(last)
        mlm = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
        base = transformers.BertModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
        theirs = mlm(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        hidden = base(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    assert float((logits - theirs).abs().max()) < 1e-5
    assert float((last - hidden).abs().max()) < 1e-5
