"""ELMo: the character table, the biLM's shapes, padding and directions, learning, and resumable pretraining."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sample_corpus

from ptmcli import checkpoint as ck
from ptmcli.data.shards import ShardDataset
from ptmcli.errors import PtmError
from ptmcli.models import elmo
from ptmcli.models.elmo import (
    ElmoBiLM,
    ElmoConfig,
    char_table_for_tokenizer,
    char_table_for_vocab,
    preset_config,
)
from ptmcli.pretraining.elmo_task import ElmoPretrainTask, ElmoSpecials
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.training.loop import LoopSettings, train
from ptmcli.training.optim import build_adamw

VOCAB = 120
# Smaller than elmo-small where only behaviour is tested, to keep the suite fast.
TINY = {"char_filters": [[1, 8], [2, 8], [3, 16]], "projection_dim": 16, "intermediate_size": 32, "max_chars_per_token": 12}


def tiny_model(encoder: str = "char", dropout: float = 0.0, vocab: int = VOCAB, seed: int = 0) -> ElmoBiLM:
    torch.manual_seed(seed)
    model = ElmoBiLM(preset_config("elmo-small", vocab_size=vocab, token_encoder=encoder, hidden_dropout=dropout, **TINY))
    if encoder == "char":
        model.set_char_table(char_table_for_vocab([f"tok{i}" for i in range(vocab)], 12, bos_id=1, eos_id=2, special_ids=[0, 1, 2, 3]))
    return model


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths) + 3
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(4, VOCAB, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread runs their many small LSTM steps faster than two
    fighting over shared cores, where thread hand-offs cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A 1,000-word-piece tokenizer and shards for the first articles of the bundled sample."""
    return sample_corpus(tmp_path_factory.mktemp("elmo_corpus"), articles=8, vocab_size=1000, tokenizer_lines=2000)


# -- the character table -------------------------------------------------------------------


def test_char_table_spells_bytes_between_word_markers():
    table = char_table_for_vocab(["ab", "é", "x" * 20, "[SEP]", "<S>", "</S>"], 8, bos_id=4, eos_id=5, special_ids=[3, 4, 5])
    assert table.shape == (6, 8) and table.dtype == torch.long
    B, E = elmo.BOW_CHAR, elmo.EOW_CHAR
    assert table[0].tolist() == [B, ord("a") + 1, ord("b") + 1, E, 0, 0, 0, 0]
    assert table[1].tolist()[:4] == [B, 0xC3 + 1, 0xA9 + 1, E]  # UTF-8 bytes of é
    assert table[2].tolist() == [B] + [ord("x") + 1] * 6 + [E]  # truncated to max_chars - 2 bytes
    assert table[3, :2].tolist() == [B, elmo.SPECIAL_CHAR] and table[3, 2] == ord("[") + 1
    assert table[4, :3].tolist() == [B, elmo.BOS_CHAR, E] and table[5, :3].tolist() == [B, elmo.EOS_CHAR, E]
    assert int(table.max()) < elmo.NUM_CHARS


def test_char_table_of_a_real_tokenizer_has_distinct_rows(corpus):
    _shards, tok_dir = corpus
    tokenizer = PtmTokenizer.load(tok_dir)
    table = char_table_for_tokenizer(tokenizer, 50)
    assert table.shape == (tokenizer.vocab_size, 50)
    assert len({tuple(row) for row in table.tolist()}) == tokenizer.vocab_size
    specials = tokenizer.all_special_ids
    assert {int(table[i, 1]) for i in specials} <= {elmo.SPECIAL_CHAR, elmo.BOS_CHAR, elmo.EOS_CHAR}
    assert table[tokenizer.cls_id, 1] == elmo.BOS_CHAR and table[tokenizer.sep_id, 1] == elmo.EOS_CHAR
    plain = tokenizer.token_to_id("the")
    assert table[plain, 1 : 1 + 3].tolist() == [ord(c) + 1 for c in "the"]


def test_char_table_is_saved_with_the_weights():
    model = tiny_model()
    assert "char_table" in model.state_dict()
    with pytest.raises(PtmError, match="does not fit"):
        model.set_char_table(torch.zeros(VOCAB + 1, 12, dtype=torch.long))


# -- config and presets --------------------------------------------------------------------


def test_preset_overrides_take_bert_flag_names_and_refuse_the_others():
    cfg = preset_config("elmo-small", vocab_size=50, pad_token_id=0, hidden_size=64, intermediate_size=256, num_layers=3,
                        hidden_dropout=0.2, max_position_embeddings=None)
    assert (cfg.projection_dim, cfg.lstm_dim, cfg.num_layers, cfg.dropout) == (64, 256, 3, 0.2)
    for flag, value in (("num_heads", 4), ("attention_dropout", 0.1), ("max_position_embeddings", 512)):
        with pytest.raises(PtmError, match="--" + flag.replace("_", "-")):
            preset_config("elmo-small", vocab_size=50, **{flag: value})
    with pytest.raises(PtmError, match="unknown ELMo preset"):
        preset_config("elmo-huge", vocab_size=50)


def test_config_round_trips_through_json():
    cfg = preset_config("elmo-original", vocab_size=1000, pad_token_id=3)
    again = ElmoConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.char_filters[-1] == (7, 1024)
    with pytest.raises(PtmError, match="unknown keys"):
        ElmoConfig.from_dict({**cfg.to_dict(), "num_heads": 2})


def test_original_preset_has_the_published_size():
    model = ElmoBiLM(preset_config("elmo-original", vocab_size=1000))
    without_softmax = model.num_parameters(exclude_embeddings=True)
    # bilm-tf's 93.6M, plus one extra 4 x 4096 bias per LSTM (torch keeps bias_ih and bias_hh).
    assert without_softmax == 93_666_400
    assert abs(without_softmax - 4 * 4 * 4096 - 93.6e6) < 0.01e6
    assert model.num_parameters() - without_softmax == 1000 * 513


# -- the biLM ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["char", "word"])
def test_representations_have_one_layer_per_lstm_layer_plus_tokens(encoder):
    model = tiny_model(encoder).eval()
    ids, mask = padded_batch([7, 5])
    with torch.no_grad():
        layers = model.representations(ids, mask)
    assert len(layers) == model.config.num_layers + 1
    assert all(layer.shape == (2, ids.shape[1], 2 * model.config.projection_dim) for layer in layers)
    half = model.config.projection_dim
    assert torch.equal(layers[0][..., :half], layers[0][..., half:])


@pytest.mark.parametrize("encoder", ["char", "word"])
def test_a_padded_batch_gives_each_row_what_it_gives_alone(encoder):
    model = tiny_model(encoder).eval()
    lengths = [9, 4, 6, 1]
    ids, mask = padded_batch(lengths)
    ids[mask == 0] = 77  # padding must not matter, whatever its ids
    with torch.no_grad():
        batched = model.representations(ids, mask)
        scores = model.score(ids, mask)
        for row, n in enumerate(lengths):
            alone = model.representations(ids[row : row + 1, :n])
            for a, b in zip(alone, batched):
                torch.testing.assert_close(a[0], b[row, :n], atol=1e-5, rtol=0)
            single = model.score(ids[row : row + 1, :n])
            for key in ("fwd_nll", "bwd_nll"):
                torch.testing.assert_close(single[key][0], scores[key][row, :n], atol=1e-5, rtol=0)


def test_forward_sees_only_the_left_and_backward_only_the_right():
    model = tiny_model().eval()
    ids, _ = padded_batch([10])
    ids = ids[:, :10]
    changed = ids.clone()
    k = 4
    changed[0, k] = 5 if int(ids[0, k]) != 5 else 6
    with torch.no_grad():
        _, fwd_a, bwd_a = model.contextualize(ids)
        _, fwd_b, bwd_b = model.contextualize(changed)
    for layer in range(model.config.num_layers):
        fwd_moved = (fwd_a[layer] - fwd_b[layer]).abs().amax(-1)[0] > 1e-5
        bwd_moved = (bwd_a[layer] - bwd_b[layer]).abs().amax(-1)[0] > 1e-5
        assert fwd_moved.tolist() == [t >= k for t in range(10)]
        assert bwd_moved.tolist() == [t <= k for t in range(10)]


def test_score_matches_the_training_loss_and_predicts_no_padding():
    model = tiny_model().eval()
    ids, mask = padded_batch([8, 3])
    with torch.no_grad():
        out = model(ids, mask)
        scores = model.score(ids, mask)
    assert int(out["fwd_count"]) == int(out["bwd_count"]) == 7 + 2
    torch.testing.assert_close(scores["fwd_nll"].sum(), out["fwd_loss_sum"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores["bwd_nll"].sum(), out["bwd_loss_sum"], rtol=1e-5, atol=1e-4)
    assert (scores["fwd_nll"][:, 0] == 0).all() and (scores["bwd_nll"][1, 2:] == 0).all()
    assert (scores["fwd_nll"][0, 1:8] > 0).all() and (scores["bwd_nll"][0, :7] > 0).all()


def test_bf16_autocast_trains_close_to_fp32():
    model = tiny_model(dropout=0.1)
    ids, mask = padded_batch([9, 6])
    torch.manual_seed(1)
    full = model(ids, mask)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, mask)
    (low["fwd_loss_sum"] + low["bwd_loss_sum"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    for key in ("fwd_loss_sum", "bwd_loss_sum"):
        assert abs(float(low[key].detach()) - float(full[key].detach())) < 0.05 * float(full[key].detach())


def test_elmo_small_learns_a_repeated_text(corpus):
    _shards, tok_dir = corpus
    tokenizer = PtmTokenizer.load(tok_dir)
    text = "The cat sat on the mat because the mat was warm and the cat was cold."
    ids = [tokenizer.cls_id, *tokenizer.encode_batch([text])[0], tokenizer.sep_id]
    batch = torch.tensor([ids] * 2)
    mask = torch.ones_like(batch)
    torch.manual_seed(0)
    model = ElmoBiLM(preset_config("elmo-small", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id))
    model.set_char_table(char_table_for_tokenizer(tokenizer, model.config.max_chars_per_token))
    opt = build_adamw(model, 3e-3, 0.0)
    losses = []
    for _ in range(30):
        out = model(batch, mask)
        loss = (out["fwd_loss_sum"] + out["bwd_loss_sum"]) / (out["fwd_count"] + out["bwd_count"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[0] > math.log(tokenizer.vocab_size) - 1.0
    assert losses[-1] < 0.25 * losses[0], losses


# -- the pretraining task ------------------------------------------------------------------


def _task(shards: Path, tok_dir: Path, seed: int = 0) -> ElmoPretrainTask:
    """The task as `ptm pretrain` builds it: packed-block streams, specials taken from the tokenizer."""
    tokenizer = PtmTokenizer.load(tok_dir)
    dataset = ShardDataset.open(shards)
    _begin, end = elmo.sentence_boundary_ids(tokenizer)
    train_rows, held_rows = np.arange(2, len(dataset)), np.arange(2)

    def stream(rows, stream_seed, shuffle=True):
        return ExampleStream(dataset, rows, "mlm", 30, stream_seed, separator_id=end, shuffle=shuffle)

    return ElmoPretrainTask(stream(train_rows, seed), tokenizer, batch_size=3, seed=seed,
                            eval_streams={"heldout": stream(held_rows, 999, shuffle=False)}, eval_batches=2)


def test_task_batches_wrap_blocks_and_pad_to_a_multiple_of_8(corpus):
    shards, tok_dir = corpus
    tokenizer = PtmTokenizer.load(tok_dir)
    task = _task(shards, tok_dir)
    assert task.specials == ElmoSpecials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    batches = task.next_micro_batches(2)
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape[1] % 8 == 0 and ids.shape[1] <= 32
        lengths = mask.sum(1)
        assert (ids[:, 0] == tokenizer.cls_id).all()
        assert all(int(ids[r, n - 1]) == tokenizer.sep_id for r, n in enumerate(lengths.tolist()))
        assert (ids[mask == 0] == tokenizer.pad_id).all()
    norms = task.normalizers(batches)
    assert norms["lm"] == 2 * sum(int(b["attention_mask"].sum()) - b["input_ids"].shape[0] for b in batches)
    model = tiny_model(vocab=tokenizer.vocab_size)
    loss, stats = task.loss(model, batches[0], norms)
    assert stats["fwd_count"] == stats["bwd_count"]
    assert float(loss) == pytest.approx(float(stats["fwd_loss_sum"] + stats["bwd_loss_sum"]) / norms["lm"], rel=1e-6)
    summary = task.summarize(stats)
    assert summary["fwd_ppl"] == pytest.approx(math.exp(summary["fwd_loss"]))
    assert {"lm_loss", "bwd_loss", "bwd_ppl", "fwd_acc", "bwd_acc"} <= set(summary)


def _train_run(run_dir: Path, shards: Path, tok_dir: Path, max_steps: int, *, save_every: int = 0, resume_from: Path | None = None):
    tokenizer = PtmTokenizer.load(tok_dir)
    model = tiny_model(dropout=0.1, vocab=tokenizer.vocab_size, seed=7)
    model.set_char_table(char_table_for_tokenizer(tokenizer, 12))
    opt = build_adamw(model, 2e-3, 0.01)
    task = _task(shards, tok_dir, seed=5)
    resume = None
    if resume_from is not None:
        ck.load_weights(resume_from, model, model.tied_weights())
        resume = ck.read_trainer(resume_from)

    def save(step, tensors, state):
        target = run_dir / "checkpoints" / ck.step_dir_name(step)
        ck.save_checkpoint(target, config={"arch": "elmo", "model": model.config.to_dict()}, weights=ck.state_dict_for_saving(model, {}),
                           tokenizer_dir=None, metrics_file=run_dir / "metrics.jsonl", optimizer_tensors=tensors, trainer_state=state)

    settings = LoopSettings(max_steps=max_steps, lr=2e-3, warmup_steps=2, grad_accum=2, log_every=2, eval_every=3, save_every=save_every, progress=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    train(model, opt, task, settings, device=torch.device("cpu"), run_dir=run_dir, save=save, resume=resume)
    return model


def test_pretraining_resumes_bit_for_bit(corpus, tmp_path):
    shards, tok_dir = corpus
    full = _train_run(tmp_path / "full", shards, tok_dir, 6)
    _train_run(tmp_path / "cut", shards, tok_dir, 6, save_every=3)
    resumed = _train_run(tmp_path / "resumed", shards, tok_dir, 6, resume_from=tmp_path / "cut" / "checkpoints" / ck.step_dir_name(3))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_fwd_ppl" in r for r in records) and any("bwd_acc" in r for r in records)
    # Guard: the resumed run really continued from step 3 of a different run directory.
    other = _train_run(tmp_path / "other", shards, tok_dir, 3)
    assert not all(torch.equal(a, b) for a, b in zip(full.parameters(), other.parameters()))


def test_task_refuses_an_nsp_stream(corpus):
    shards, _tok = corpus
    dataset = ShardDataset.open(shards)
    stream = ExampleStream(dataset, np.arange(len(dataset)), "mlm+nsp", 30, 0, separator_id=3)
    with pytest.raises(ValueError, match="objective 'mlm'"):
        ElmoPretrainTask(stream, ElmoSpecials(2, 3, 0), batch_size=2, seed=0)


def test_pretrain_elmo_from_the_command_line(tmp_path, capsys):
    from ptmcli.checkpoint import list_step_checkpoints, read_config
    from tests.test_pretrain import ptm

    code, err = ptm(capsys, "pretrain", "--arch", "elmo", "--preset", "elmo-small", "--hidden-size", "32", "--intermediate-size", "64",
                    "-o", tmp_path / "run", "--max-steps", "4", "--batch-size", "4", "--seq-len", "24", "--eval-batches", "1",
                    "--threads", "1", "--no-progress")
    assert code == 0, err
    ckpt = list_step_checkpoints(tmp_path / "run")[-1]
    config = read_config(ckpt)
    assert config["arch"] == "elmo" and config["objective"] == "bilm" and config["model"]["projection_dim"] == 32
    from safetensors.torch import load_file

    weights = load_file(str(ckpt / "model.safetensors"))
    assert "char_table" in weights and int(weights["char_table"].max()) > 0, "the character table travels with the checkpoint"
    code, err = ptm(capsys, "pretrain", "--arch", "elmo", "-o", tmp_path / "bad", "--num-heads", "4", "--max-steps", "1")
    assert code == 2 and "--num-heads" in err and err.count("\n") == 1
