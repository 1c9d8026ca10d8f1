"""`ptm eval --data`: GPT sliding-window perplexity, BERT MLM and pseudo-perplexity, ELMo, the CLI's output and errors."""

from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli as ptm
from conftest import shared_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.evaluation.corpus import CorpusStats, group_wikitext, iter_sentences, read_documents
from ptmcli.evaluation.masked import pseudo_log_likelihood
from ptmcli.evaluation.sequences import pack_blocks
from ptmcli.evaluation.windows import IGNORE_INDEX, sliding_windows
from ptmcli.models import bert, elmo, gpt
from ptmcli.models.bert import FAMILY
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.textio.inputs import iter_texts
from ptmcli.textio.records import Document
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

TEXT = """The quick brown fox jumps over the lazy dog. It was not amused.
Anarchism is a political philosophy that advocates self-governed societies.

A second document starts here. It has two sentences on this line.
And one more line of text, the last of the document.
"""


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval_tok") / "tok"
    train_tokenizer(islice(iter_texts([str(SAMPLE)]), 400), "wordpiece", 600).save(path)
    return path


def _save(model, arch: str, objective: str, tok_dir: Path, target: Path, seq_len: int, task=None) -> Path:
    config = {"arch": arch, "model": model.config.to_dict(), "objective": objective, "task": task, "training": {"seq_len": seq_len}}
    return save_checkpoint(target, config=config, weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=tok_dir)


@pytest.fixture(scope="module")
def gpt_ckpt(tok_dir, tmp_path_factory) -> tuple[Path, gpt.GPTForCausalLM]:
    torch.manual_seed(0)
    vocab = PtmTokenizer.load(tok_dir).vocab_size
    config = gpt.preset_config("gpt-tiny", vocab_size=vocab, hidden_size=32, num_heads=2, intermediate_size=64,
                               max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0)
    model = gpt.GPTForCausalLM(config).eval()
    return _save(model, "gpt", "clm", tok_dir, tmp_path_factory.mktemp("gpt") / "ckpt", 32), model


@pytest.fixture(scope="module")
def bert_ckpt(tok_dir, tmp_path_factory) -> tuple[Path, bert.BertForPreTraining]:
    torch.manual_seed(0)
    vocab = PtmTokenizer.load(tok_dir).vocab_size
    config = bert.preset_config("bert-tiny", vocab_size=vocab, hidden_size=32, num_heads=2, intermediate_size=64,
                                num_layers=2, max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
    model = bert.BertForPreTraining(config).eval()
    return _save(model, "bert", "mlm", tok_dir, tmp_path_factory.mktemp("bert") / "ckpt", 24), model




def eval_json(capsys, *args) -> dict:
    code, out, err = ptm(capsys, "eval", *args, "--json", "--no-progress")
    assert code == 0, err
    return json.loads(out)


def stream_ids(tok_dir: Path, path: Path) -> list[int]:
    """The GPT stream built independently: [SEP] doc [SEP] doc ... [SEP], sentences encoded one by one."""
    from ptmcli.data.sentences import split_sentences

    tokenizer = PtmTokenizer.load(tok_dir)
    ids = [tokenizer.sep_id]
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        for line in lines:
            for sentence in split_sentences(line):
                ids += tokenizer.encode_batch([sentence])[0]
        ids.append(tokenizer.sep_id)
    return ids


def direct_nll(model, ids: list[int]) -> tuple[float, int]:
    tensor = torch.tensor([ids])
    with torch.no_grad():
        logits = model.logits(model.gpt(tensor[:, :-1]))[0]
    nll = torch.nn.functional.cross_entropy(logits, tensor[0, 1:], reduction="sum")
    return float(nll), len(ids) - 1


# -- the sliding window ----------------------------------------------------------------------


@pytest.mark.parametrize("context,stride", [(1, 1), (5, 1), (5, 2), (5, 5), (8, 3), (16, 16)])
def test_windows_score_every_token_once_with_enough_context(context, stride):
    stream = np.arange(1, 50)
    rng = np.random.default_rng(context * 10 + stride)
    cuts = np.sort(rng.choice(np.arange(1, 49), size=6, replace=False))
    chunks = np.split(stream, cuts)
    scored = []
    for window in sliding_windows(chunks, context, stride):
        assert 1 <= len(window.input_ids) <= context
        keep = window.labels != IGNORE_INDEX
        assert window.scored == int(keep.sum())
        for position in np.flatnonzero(keep):
            # The label is the token after the input at this position: its left context is the window up to it.
            assert window.labels[position] == window.input_ids[position] + 1
            if scored:  # after the first window, at least context - stride tokens of left context
                assert position + 1 >= min(context - stride + 1, window.labels[position] - 1)
            scored.append(int(window.labels[position]))
    assert scored == list(range(2, 50)), "every token after the first is scored exactly once, in order"


def test_windows_of_short_streams():
    assert list(sliding_windows([np.array([7])], 4, 2)) == []
    assert list(sliding_windows([], 4, 2)) == []
    (only,) = sliding_windows([np.array([1, 2, 3])], 8, 4)
    assert only.input_ids.tolist() == [1, 2] and only.labels.tolist() == [2, 3]


# -- GPT through the CLI -------------------------------------------------------------------------


def test_gpt_perplexity_equals_direct_computation_when_the_text_fits(gpt_ckpt, tok_dir, tmp_path, capsys):
    ckpt, model = gpt_ckpt
    data = tmp_path / "short.txt"
    data.write_text(TEXT, encoding="utf-8")
    ids = stream_ids(tok_dir, data)
    assert len(ids) <= 128
    nll, count = direct_nll(model, ids)
    result = eval_json(capsys, "--checkpoint", ckpt, "--data", data, "--context", 128)
    assert result["tokens_scored"] == count
    assert result["documents"] == 2
    assert result["words"] == len(TEXT.split())
    assert result["text_tokens"] == len(ids) - 3  # three [SEP]: start, between, end
    assert result["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result["word_ppl"] == pytest.approx(math.exp(nll / result["words"]), rel=1e-5)
    assert result["context"] == 128 and result["stride"] == 64
    assert result["truncated"] is False and result["seconds"] > 0 and result["tokens_per_s"] > 0
    # Any stride gives the same numbers when one window holds everything.
    again = eval_json(capsys, "--checkpoint", ckpt, "--data", data, "--context", 128, "--stride", 3)
    assert again["loss"] == pytest.approx(result["loss"], rel=1e-6)


def test_gpt_strides_score_the_same_tokens_and_disjoint_windows_match_by_hand(gpt_ckpt, tok_dir, tmp_path, capsys):
    ckpt, model = gpt_ckpt
    data = tmp_path / "long.txt"
    data.write_text(TEXT * 4, encoding="utf-8")
    ids = stream_ids(tok_dir, data)
    assert len(ids) > 3 * 16
    counts = {}
    for stride in (3, 7, 16):
        result = eval_json(capsys, "-c", ckpt, "--data", data, "--context", 16, "--stride", stride, "--batch-size", 8)
        counts[stride] = result["tokens_scored"]
        losses = result
    assert set(counts.values()) == {len(ids) - 1}
    # stride == context: disjoint windows s[16k : 16k+16] each predicting the 16 tokens after their starts.
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, 16):
        piece = ids[start : min(start + 17, len(ids))]
        part, n = direct_nll(model, piece)
        nll, count = nll + part, count + n
    assert count == len(ids) - 1
    assert losses["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert losses["windows"] == math.ceil((len(ids) - 1) / 16)


def test_default_context_is_the_training_length_and_bf16_runs(gpt_ckpt, tmp_path, capsys):
    ckpt, _ = gpt_ckpt
    data = tmp_path / "t.txt"
    data.write_text(TEXT * 3, encoding="utf-8")
    fp32 = eval_json(capsys, "-c", ckpt, "--data", data)
    assert fp32["context"] == 32 and fp32["stride"] == 16
    bf16 = eval_json(capsys, "-c", ckpt, "--data", data, "--precision", "bf16")
    assert bf16["tokens_scored"] == fp32["tokens_scored"]
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)


def test_max_tokens_stops_at_a_sentence_end(gpt_ckpt, tmp_path, capsys):
    ckpt, _ = gpt_ckpt
    data = tmp_path / "t.txt"
    data.write_text(TEXT * 5, encoding="utf-8")
    full = eval_json(capsys, "-c", ckpt, "--data", data)
    capped = eval_json(capsys, "-c", ckpt, "--data", data, "--max-tokens", 10)
    assert full["truncated"] is False and capped["truncated"] is True
    assert 10 <= capped["text_tokens"] < full["text_tokens"]
    # Whole sentences only: the first sentence has 9 words, the first two 14.
    assert capped["words"] in (9, 14)
    _, out, err = ptm(capsys, "eval", "-c", ckpt, "--data", data, "--max-tokens", 10, "--no-progress")
    assert out == "" and "perplexity / word" in err and "tokens scored" in err


def test_wikitext_articles_are_documents(tmp_path, tok_dir):
    text = " \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old . \n \n = Beta = \n \n Beta follows . \n"
    data = tmp_path / "wiki.valid.raw"
    data.write_text(text, encoding="utf-8")
    for fmt in ("auto", "wikitext"):
        stats = CorpusStats()
        docs = list(read_documents(str(data), fmt, "text", stats.read))
        assert [d.paragraphs[0].strip() for d in docs] == ["= Alpha =", "= Beta ="]
        assert len(docs[0].paragraphs) == 4
    plain = list(read_documents(str(data), "text", "text", CorpusStats().read))
    assert len(plain) == 6
    # A file that does not start like WikiText keeps its documents.
    other = [Document("a", 1, ["x = y = z"]), Document("a", 3, ["more"])]
    assert [len(d.paragraphs) for d in group_wikitext(other, always=False)] == [1, 1]


# -- BERT ----------------------------------------------------------------------------------------


def test_bert_pseudo_perplexity_equals_a_one_mask_at_a_time_loop(bert_ckpt, tok_dir, tmp_path, capsys):
    ckpt, model = bert_ckpt
    tokenizer = PtmTokenizer.load(tok_dir)
    data = tmp_path / "b.txt"
    data.write_text(TEXT.split("\n\n")[1], encoding="utf-8")
    result = eval_json(capsys, "-c", ckpt, "--data", data, "--batch-size", 5)
    # Naive: the same packed blocks, [CLS] block [SEP], each non-special token masked alone.
    stats = CorpusStats()
    sentences = iter_sentences(read_documents(str(data), "auto", "text", stats.read), tokenizer, stats=stats)
    nll, count, sequences = 0.0, 0, 0
    for block in pack_blocks(sentences, 22, "packed", tokenizer.sep_id):
        sequences += 1
        row = [tokenizer.cls_id, *block.tolist(), tokenizer.sep_id]
        for position, token in enumerate(row):
            if token in (tokenizer.cls_id, tokenizer.sep_id):
                continue
            masked = torch.tensor([row])
            masked[0, position] = tokenizer.mask_id
            labels = torch.full_like(masked, -100)
            labels[0, position] = token
            with torch.no_grad():
                nll += float(model(masked, mlm_labels=labels)["mlm_loss_sum"])
            count += 1
    assert result["tokens_scored"] == count == result["text_tokens"]
    assert result["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert result["word_ppl"] == pytest.approx(math.exp(nll / result["words"]), rel=1e-5)
    assert 0 < result["mlm_tokens"] < count and 0.0 <= result["mlm_accuracy"] <= 1.0
    assert result["sequences"] == sequences > 1  # 24 positions: 22 tokens per block


def test_bert_mlm_masking_is_seeded_and_pseudo_can_be_skipped(bert_ckpt, tmp_path, capsys):
    ckpt, _ = bert_ckpt
    data = tmp_path / "b.txt"
    data.write_text(TEXT * 3, encoding="utf-8")
    first = eval_json(capsys, "-c", ckpt, "--data", data, "--no-pseudo-perplexity", "--seed", 1)
    again = eval_json(capsys, "-c", ckpt, "--data", data, "--no-pseudo-perplexity", "--seed", 1)
    other = eval_json(capsys, "-c", ckpt, "--data", data, "--no-pseudo-perplexity", "--seed", 2)
    assert first["mlm_loss"] == again["mlm_loss"] and first["mlm_tokens"] == again["mlm_tokens"]
    assert (other["mlm_loss"], other["mlm_tokens"]) != (first["mlm_loss"], first["mlm_tokens"])
    assert first["ppl"] is None and first["tokens_scored"] == first["mlm_tokens"]


def test_pseudo_log_likelihood_handles_padding_and_chunking(bert_ckpt):
    _, model = bert_ckpt
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 13, 14, 15, 16, 17, 3]])
    mask = (ids != 0).long()
    scored = (ids > 3)
    with torch.no_grad():
        whole, _ = pseudo_log_likelihood(model, ids, mask, scored, 4, rows_per_pass=100, family=FAMILY)
        pieces, _ = pseudo_log_likelihood(model, ids, mask, scored, 4, rows_per_pass=3, family=FAMILY)
        alone, _ = pseudo_log_likelihood(model, ids[:1, :5], mask[:1, :5], scored[:1, :5], 4, rows_per_pass=1, family=FAMILY)
    assert whole.shape == (8,)
    torch.testing.assert_close(whole, pieces, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole[:3], alone, rtol=1e-5, atol=1e-5)


def test_sequence_modes(tok_dir, tmp_path):
    tokenizer = PtmTokenizer.load(tok_dir)
    data = tmp_path / "b.txt"
    data.write_text(TEXT, encoding="utf-8")

    def blocks(mode: str, size: int) -> list[np.ndarray]:
        stats = CorpusStats()
        sentences = list(iter_sentences(read_documents(str(data), "auto", "text", stats.read), tokenizer, stats=stats))
        return list(pack_blocks(sentences, size, mode, tokenizer.sep_id)), sentences, stats

    per_sentence, sentences, stats = blocks("sentence", 1000)
    assert [b.tolist() for b in per_sentence] == [s.ids.tolist() for s in sentences]
    assert len(blocks("line", 1000)[0]) == 4
    packed = blocks("packed", 1000)[0]
    assert len(packed) == 1 and int((packed[0] == tokenizer.sep_id).sum()) == 1  # one separator between the documents
    small = blocks("packed", 7)[0]
    assert all(len(b) <= 7 for b in small)
    assert sum(len(b) for b in small) == stats.tokens + int(sum((b == tokenizer.sep_id).sum() for b in small))


# -- ELMo ----------------------------------------------------------------------------------------


def test_elmo_forward_and_backward_losses_match_the_training_forward():
    from ptmcli.evaluation.bidirectional import has_scoring, score_bidirectional

    torch.manual_seed(0)
    config = elmo.preset_config("elmo-small", vocab_size=60, token_encoder="word")
    model = elmo.ElmoBiLM(config).eval()
    assert has_scoring(model)
    rng = np.random.default_rng(0)
    blocks = [rng.integers(4, 60, size=n) for n in (5, 9, 3)]
    sums = score_bidirectional(model, blocks, begin_id=1, end_id=2, pad_id=0, batch_size=2, device=torch.device("cpu"), precision="fp32")
    fwd = bwd = 0.0
    count = 0
    for block in blocks:
        ids = torch.tensor([[1, *block.tolist(), 2]])
        with torch.no_grad():
            out = model(ids, torch.ones_like(ids))
        fwd, bwd, count = fwd + float(out["fwd_loss_sum"]), bwd + float(out["bwd_loss_sum"]), count + int(out["fwd_count"])
    assert sums["tokens_scored"] == count == sum(len(b) + 1 for b in blocks)
    assert sums["fwd_nll_sum"] == pytest.approx(fwd, rel=1e-4)
    assert sums["bwd_nll_sum"] == pytest.approx(bwd, rel=1e-4)


# -- errors --------------------------------------------------------------------------------------


def _one_line_error(capsys, *args) -> str:
    code, out, err = ptm(capsys, "eval", *args, "--no-progress")
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptm: error: "), err
    return lines[0]


def test_cli_errors_are_one_line_exit_2(gpt_ckpt, bert_ckpt, tok_dir, tmp_path, capsys):
    ckpt, model = gpt_ckpt
    good = tmp_path / "good.txt"
    good.write_text(TEXT, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nnot \xff fine\n")
    assert "no-such" in _one_line_error(capsys, "-c", tmp_path / "no-such", "--data", good)
    assert "empty.txt" in _one_line_error(capsys, "-c", ckpt, "--data", empty)
    assert "bad.txt:2" in _one_line_error(capsys, "-c", ckpt, "--data", bad)
    assert "missing.txt" in _one_line_error(capsys, "-c", ckpt, "--data", tmp_path / "missing.txt")
    assert "--stride 40" in _one_line_error(capsys, "-c", ckpt, "--data", good, "--context", 32, "--stride", 40)
    assert "--context 129" in _one_line_error(capsys, "-c", ckpt, "--data", good, "--context", 129)
    assert "--data" in _one_line_error(capsys, "-c", ckpt)
    assert "--precision" in _one_line_error(capsys, "-c", ckpt, "--data", good, "--precision", "fp8")
    assert "--sample" in _one_line_error(capsys, "-c", bert_ckpt[0], "--sample", "hello")
    assert "--stride" in _one_line_error(capsys, "-c", bert_ckpt[0], "--data", good, "--stride", 4)
    labeled = _save(model, "gpt", "clm", tok_dir, tmp_path / "labeled", 32, task={"type": "classification", "labels": ["a", "b"]})
    # A config that claims a task head the weights do not have is refused, naming the missing tensor.
    assert "missing 'classifier" in _one_line_error(capsys, "-c", labeled, "--data", good)


# -- real data -----------------------------------------------------------------------------------


def test_wikitext2_valid_slice(gpt_ckpt, bert_ckpt, tmp_path, capsys):
    source = shared_file("wikitext-2-raw/wiki.valid.raw")
    with open(source, encoding="utf-8") as handle:
        lines = list(islice(handle, 40))
    data = tmp_path / "wiki.valid.raw"
    data.write_text("".join(lines), encoding="utf-8")
    words = sum(len(line.split()) for line in lines)
    result = eval_json(capsys, "-c", gpt_ckpt[0], "--data", data)
    assert result["words"] == words
    assert result["documents"] == sum(1 for line in lines if line.startswith(" = ") and not line.startswith(" = = "))
    assert math.isfinite(result["word_ppl"]) and result["word_ppl"] > result["ppl"] > 1
    capped = eval_json(capsys, "-c", bert_ckpt[0], "--data", data, "--max-tokens", 100)
    assert 100 <= capped["tokens_scored"] < 200 and capped["truncated"] is True


def test_elmo_through_the_cli(tok_dir, tmp_path, capsys):
    vocab = PtmTokenizer.load(tok_dir).vocab_size
    torch.manual_seed(0)
    model = elmo.ElmoBiLM(elmo.preset_config("elmo-small", vocab_size=vocab, token_encoder="word")).eval()
    ckpt = _save(model, "elmo", "bilm", tok_dir, tmp_path / "elmo", 24)
    data = tmp_path / "e.txt"
    data.write_text(TEXT, encoding="utf-8")
    result = eval_json(capsys, "-c", ckpt, "--data", data, "--sequences", "sentence", "--context", 64)
    assert result["tokens_scored"] == result["text_tokens"] + result["sequences"]  # <end> forward, <begin> backward
    assert result["sequences"] == 6  # the sentences of TEXT
    assert result["loss"] == pytest.approx((result["fwd_loss"] + result["bwd_loss"]) / 2, rel=1e-6)
    assert result["word_ppl"] == pytest.approx(math.exp(result["loss"] * result["tokens_scored"] / result["words"]), rel=1e-6)
    assert "--sample" in _one_line_error(capsys, "-c", ckpt, "--sample", "hello")


def test_invalid_utf8_stops_eval_unless_errors_says_otherwise(gpt_ckpt, tmp_path, capsys):
    ckpt, _ = gpt_ckpt
    data = tmp_path / "bad.txt"
    data.write_bytes(TEXT.encode("utf-8") + b"\nsome \xff\xfe bytes here\n")
    code, _, err = ptm(capsys, "eval", "--checkpoint", ckpt, "--data", data, "--no-progress")
    assert code == 2 and str(data) in err and "--errors" in err
    skipped = eval_json(capsys, "--checkpoint", ckpt, "--data", data, "--errors", "skip")
    replaced = eval_json(capsys, "--checkpoint", ckpt, "--data", data, "--errors", "replace")
    assert skipped["skipped_lines"] == 1 and "replaced_lines" not in skipped
    assert replaced["replaced_lines"] == 1 and replaced["text_tokens"] > skipped["text_tokens"]
