"""UniLM sequence-to-sequence finetuning on a BERT encoder: the seq2seq attention mask, what a target token can
see, cached and uncached decoding, greedy decoding against a re-run-everything loop, the dev loss layout, a tiny
BERT that learns to copy from the command line, ``ptm eval`` and ``ptm generate`` of it, and refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import run_cli, shared_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.finetuning import unilm_seq2seq
from ptmcli.models.generation import Settings, decode
from ptmcli.models.prefix_lm import PrefixLM, hidden_states, seq2seq_pattern
from ptmcli.models.registry import get_family
from ptmcli.pretraining.unified_lm import seq2seq_mask
from ptmcli.tasks.seq2seq_data import TextPair
from ptmcli.tokenization.train import train_tokenizer
from tests.test_seq2seq_finetune import QUIET, WORDS
from tests.test_seq2seq_finetune import _pairs as _copy_pairs


def _pairs(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """The copy task with 2 to 4 colour words: sources and targets fit the tiny model's 24 positions."""
    return _copy_pairs(rng, count, longest=4)


def _tiny_bert(tok, positions: int = 24, seed: int = 0, **overrides):
    family = get_family("bert")
    torch.manual_seed(seed)
    values = dict(hidden_size=64, num_heads=4, intermediate_size=128, num_layers=2, max_position_embeddings=positions,
                  hidden_dropout=0.0, attention_dropout=0.0)
    config = family.model_config("bert-tiny", tok, **{**values, **overrides})
    return family, config, family.build(config).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("unilm")
    rng = random.Random(0)
    tok = train_tokenizer(iter([" ".join(WORDS)] * 20), "wordpiece", 120, min_frequency=1)
    tok.save(root / "tok")
    family, config, model = _tiny_bert(tok)
    ckpt = save_checkpoint(root / "ckpt", config={"arch": "bert", "model": config.to_dict(), "objective": "unilm", "task": None},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=root / "tok")
    train, dev = root / "train.tsv", root / "dev.tsv"
    train.write_text("".join(f"{s}\t{t}\n" for s, t in _pairs(rng, 512)), encoding="utf-8")
    dev.write_text("".join(f"{s}\t{t}\n" for s, t in _pairs(rng, 40)), encoding="utf-8")
    return {"root": root, "tok": tok, "ckpt": Path(ckpt), "train": train, "dev": dev, "model": model, "family": family}


def _sources(tok, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(count)]
    return [[tok.cls_id, *ids, tok.sep_id] for ids in tok.encode_batch(texts)]


# -- the mask and what a target token sees --------------------------------------------------------------


def test_the_seq2seq_mask_position_by_position():
    # [CLS] a [SEP] | x y [SEP] | pad
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])
    real = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    expected = torch.tensor([
        # keys: CLS a SEP x y SEP pad
        [1, 1, 1, 0, 0, 0, 0],  # [CLS]: the source only
        [1, 1, 1, 0, 0, 0, 0],  # a
        [1, 1, 1, 0, 0, 0, 0],  # [SEP]
        [1, 1, 1, 1, 0, 0, 0],  # x: the source and itself
        [1, 1, 1, 1, 1, 0, 0],  # y: the source, x, itself
        [1, 1, 1, 1, 1, 1, 0],  # the closing [SEP]: everything real on its left
        [0, 0, 0, 0, 0, 0, 1],  # padding: itself only among padding (its output is never read)
    ], dtype=torch.bool)
    pattern = seq2seq_pattern(segments, real)[0]
    assert torch.equal(pattern[:6], expected[:6])
    assert pattern[6, 6] and not pattern[:6, 6].any()
    # The same pattern UniLM's pretraining trains its seq2seq regime under.
    assert torch.equal(seq2seq_pattern(segments, real), seq2seq_mask(segments, real))


def test_a_target_tokens_output_does_not_see_later_target_tokens(data):
    tok, model, family = data["tok"], data["model"], data["family"]
    source = _sources(tok, 1, 3)[0]
    target = tok.encode_batch(["red blue green black"])[0] + [tok.sep_id]
    ids = torch.tensor([source + target])
    segments = torch.tensor([[0] * len(source) + [1] * len(target)])
    pattern = seq2seq_pattern(segments, torch.ones_like(ids))
    with torch.no_grad():
        before = hidden_states(family.encoder(model), ids, segments, pattern)
        changed = ids.clone()
        changed[0, len(source) + 2 :] = tok.mask_id  # every target token from the third on
        after = hidden_states(family.encoder(model), changed, segments, pattern)
    keep = len(source) + 2
    assert torch.allclose(before[:, :keep], after[:, :keep], atol=1e-6)
    assert not torch.allclose(before[:, keep:], after[:, keep:], atol=1e-3)  # the changed tokens' own outputs move


# -- decoding ---------------------------------------------------------------------------------------------


class _Uncached(torch.nn.Module):
    """The same model, decoded by re-running the whole sequence at every step."""

    def __init__(self, lm: PrefixLM) -> None:
        super().__init__()
        self.lm = lm

    def incremental_decoder(self, context=None):
        return self.lm.incremental_decoder(context, cached=False)


def test_decoding_with_the_cache_equals_decoding_without(data):
    tok, model, family = data["tok"], data["model"], data["family"]
    lm = PrefixLM(model, family, tok.mask_id).eval()
    sources = _sources(tok, 6, 1)  # unequal lengths: right-padded sources, targets at per-row positions
    for settings in (Settings(max_new_tokens=8, stop_ids=(tok.sep_id,), pad_id=tok.pad_id),
                     Settings(max_new_tokens=8, num_beams=3, length_penalty=0.6, num_return_sequences=2,
                              stop_ids=(tok.sep_id,), pad_id=tok.pad_id, min_new_tokens=2)):
        cached, uncached = decode(lm, sources, settings), decode(_Uncached(lm), sources, settings)
        assert [[c.ids for c in row] for row in cached] == [[c.ids for c in row] for row in uncached]
        if settings.num_beams > 1:
            scores = [c.score for row in cached for c in row]
            assert scores == pytest.approx([c.score for row in uncached for c in row], abs=1e-4)


def test_greedy_decoding_equals_a_loop_that_reruns_the_whole_sequence(data):
    tok, model, family = data["tok"], data["model"], data["family"]
    lm = PrefixLM(model, family, tok.mask_id).eval()
    sources = _sources(tok, 5, 2)
    settings = Settings(max_new_tokens=7, stop_ids=(tok.sep_id,), pad_id=tok.pad_id)
    batched = [row[0].ids for row in decode(lm, sources, settings)]
    naive = []
    for source in sources:
        out: list[int] = []
        for _ in range(7):
            ids = torch.tensor([source + out + [tok.mask_id]])
            segments = torch.tensor([[0] * len(source) + [1] * (len(out) + 1)])
            with torch.no_grad():
                hidden = hidden_states(family.encoder(model), ids, segments, seq2seq_pattern(segments, torch.ones_like(ids)))
                token = int(family.masked_lm_head(model)(hidden[0, -1]).argmax())
            if token == tok.sep_id:
                break
            out.append(token)
        naive.append(out)
    assert batched == naive


def test_the_dev_loss_scores_each_target_token_as_decoding_predicts_it(data):
    tok, model, family = data["tok"], data["model"], data["family"]
    pairs = [TextPair("red blue", "blue red green", 1), TextPair("pink gray black white", "gray", 2)]
    framing = family.framing(tok)
    rows = unilm_seq2seq.encode_pairs(pairs, tok, framing, 10, 8)
    batch = unilm_seq2seq.teacher_forcing_batch(rows.rows, tok.pad_id, tok.mask_id)
    seq = unilm_seq2seq.Seq2SeqModel("bert", model).eval()
    with torch.no_grad():
        out = seq(batch)
    decoder = PrefixLM(model, family, tok.mask_id).incremental_decoder(24)
    expected = 0.0
    for row in rows.rows:  # the decoder, fed the true target, at each step
        logits, state = decoder.start(torch.tensor([row["source"].tolist()]))
        for token in row["target"].tolist():
            expected -= float(logits.log_softmax(-1)[0, token])
            logits, state = decoder.step(state, torch.tensor([[token]]))
    assert int(out["count"]) == sum(len(row["target"]) for row in rows.rows)
    assert float(out["nll_sum"]) == pytest.approx(expected, rel=1e-5)


def test_training_masks_the_share_of_target_tokens_and_only_those(data):
    tok = data["tok"]
    framing = data["family"].framing(tok)
    pairs = [TextPair("red", " ".join(["blue"] * n), i) for i, n in enumerate((1, 3, 6))]
    rows = unilm_seq2seq.encode_pairs(pairs, tok, framing, 8, 8).rows
    packed = unilm_seq2seq.pack(rows, tok.pad_id)
    closing_sep_masked = 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = unilm_seq2seq.mask_targets(packed, tok.mask_id, 0.7, torch.rand(packed["labels"].shape, generator=generator))
        chosen = batch["labels"] != -100
        assert chosen.sum(1).tolist() == [1, 3, 5]  # round(0.7 * n), at least one, of n = 2, 4, 7 target tokens
        assert torch.equal(batch["input_ids"][chosen], torch.full_like(batch["input_ids"][chosen], tok.mask_id))
        assert torch.equal(batch["labels"][chosen], packed["input_ids"][chosen])
        assert not (chosen & (packed["token_type_ids"] == 0)).any()  # never a source token
        assert torch.equal(batch["input_ids"][~chosen], packed["input_ids"][~chosen])
        closing_sep_masked += int(batch["labels"][0, 4] == tok.sep_id)  # [CLS] red [SEP] blue [SEP]
    assert 0 < closing_sep_masked < 20  # the closing [SEP] is predicted too, in its share of the draws


# -- the command line --------------------------------------------------------------------------------------


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_bert_learns_to_copy_and_eval_and_generate_read_it(data, tmp_path, capsys):
    import sacrebleu

    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--train", data["train"],
                           "--dev", data["dev"], "-o", run, "--max-steps", "400", "--eval-every", "100", "--batch-size", "32",
                           "--lr", "3e-3", "--max-source-len", "12", "--max-target-len", "12", "--log-every", "40", *QUIET)
    assert code == 0, err
    evals = [m for m in _metrics(run) if "eval_bleu" in m]
    assert [m["step"] for m in evals] == [100, 200, 300, 400]
    # Random init: nothing copied at step 80, copying by 240 (measured: BLEU 4 -> 100, dev loss 1.55 -> 0.18, token
    # accuracy 0.38 -> 1.0).
    assert evals[0]["eval_bleu"] < 20 and max(m["eval_bleu"] for m in evals) > 60, evals
    assert evals[-1]["eval_loss"] < 0.5 * evals[0]["eval_loss"], evals
    task = json.loads((run / "best" / "config.json").read_text())["task"]
    assert task["type"] == "seq2seq" and task["target_mask_prob"] == 0.7 and task["max_source_len"] == 12

    predictions = tmp_path / "pred.txt"
    code, out, err = run_cli(capsys, "eval", "-c", run, "--data", data["dev"], "--predictions", predictions, "--json", "--threads", "1")
    assert code == 0, err
    metrics = json.loads(out)
    hypotheses = predictions.read_text(encoding="utf-8").splitlines()
    references = [line.split("\t")[1] for line in data["dev"].read_text(encoding="utf-8").splitlines()]
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score, abs=1e-9)
    best = json.loads((run / "results.json").read_text())["best"]
    assert metrics["bleu"] == pytest.approx(best["bleu"], abs=1e-6) and metrics["loss"] == pytest.approx(best["loss"], rel=1e-4)
    # Copying short sequences exactly: chance is nil (8 words, 2 to 4 of them).
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)
    assert exact > 0.5, list(zip(hypotheses, references, strict=True))[:5]

    sources = tmp_path / "sources.txt"
    sources.write_text("".join(line.split("\t")[0] + "\n" for line in data["dev"].read_text().splitlines()), encoding="utf-8")
    code, generated, err = run_cli(capsys, "generate", "-c", run, "--input", sources, "--threads", "1")
    assert code == 0 and generated.splitlines() == hypotheses, err
    code, beams, err = run_cli(capsys, "generate", "-c", run, "--input", sources, "--num-beams", "3", "--threads", "1")
    assert code == 0 and len(beams.splitlines()) == 40, err


def test_resume_reaches_the_same_weights(data, tmp_path, capsys):
    """The target masks are drawn by (seed, epoch, row), so a run resumed from a step checkpoint makes the same
    batches as the uninterrupted one: bit-identical weights. 20 steps of 32 rows cross into the second epoch."""
    import shutil

    from safetensors.torch import load_file

    from ptmcli.checkpoint import list_step_checkpoints

    common = ["finetune", "--task", "seq2seq", "--checkpoint", data["ckpt"], "--train", data["train"], "--max-steps", "20",
              "--batch-size", "32", "--lr", "3e-3", "--max-source-len", "12", "--max-target-len", "12", *QUIET]
    assert run_cli(capsys, *common, "-o", tmp_path / "full")[0] == 0
    assert run_cli(capsys, *common, "-o", tmp_path / "cut", "--save-every", "7", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, _, err = run_cli(capsys, "finetune", "--resume", tmp_path / "cut")
    assert code == 0, err
    full = load_file(str(list_step_checkpoints(tmp_path / "full")[-1] / "model.safetensors"))
    resumed = load_file(str(list_step_checkpoints(tmp_path / "cut")[-1] / "model.safetensors"))
    assert sorted(full) == sorted(resumed)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_refusals_are_one_line(data, tmp_path, capsys):
    tok = data["tok"]
    base = ["finetune", "--task", "seq2seq", "--train", data["train"], "-o", tmp_path / "out", *QUIET]
    # An encoder without its masked-LM head (a class converted without one).
    family, config, model = _tiny_bert(tok)
    weights = {k: v for k, v in state_dict_for_saving(model, model.tied_weights()).items() if not k.startswith("mlm.")}
    headless = save_checkpoint(tmp_path / "headless", config={"arch": "bert", "model": config.to_dict(), "objective": "mlm", "task": None},
                               weights=weights, tokenizer_dir=data["root"] / "tok")
    for flags, message in (
            (["--checkpoint", headless, "--max-len", "12"], "has no masked-LM head"),
            (["--checkpoint", data["ckpt"], "--max-source-len", "16", "--max-target-len", "12"],
             "--max-source-len 16 + --max-target-len 12 exceed the model's 24 positions"),
            (["--checkpoint", data["ckpt"], "--max-len", "12", "--target-mask-prob", "0"], "--target-mask-prob 0.0: must be in (0, 1]")):
        code, _, err = run_cli(capsys, *base, *flags)
        # The loader's note on the missing head may come first; the refusal is one line.
        errors = [line for line in err.splitlines() if "has no mlm weights; initialised at random" not in line]
        assert code == 2 and len(errors) == 1 and message in errors[0], err
    code, _, err = run_cli(capsys, "finetune", "--task", "classification", "--checkpoint", data["ckpt"], "--train", data["train"],
                           "-o", tmp_path / "out", "--target-mask-prob", "0.5", *QUIET)
    assert code == 2 and "--target-mask-prob applies to --task seq2seq" in err, err
    assert not (tmp_path / "out").exists()
    # A pretrained BERT is no generator until it is finetuned as one.
    sources = tmp_path / "s.txt"
    sources.write_text("red blue\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "generate", "-c", data["ckpt"], "--input", sources)
    assert code == 2 and "bert once finetuned with --task seq2seq" in err, err


def test_multi30k_rows_run_end_to_end(data, tmp_path, capsys):
    """A few hundred Multi30k pairs through a BERT tokenizer trained on them: finetune two steps, eval."""
    train_en, train_de = shared_file("multi30k/train.en"), shared_file("multi30k/train.de")
    root = tmp_path
    english = train_en.read_text(encoding="utf-8").splitlines()[:300]
    german = train_de.read_text(encoding="utf-8").splitlines()[:300]
    (root / "s.en").write_text("\n".join(english[:260]) + "\n", encoding="utf-8")
    (root / "t.de").write_text("\n".join(german[:260]) + "\n", encoding="utf-8")
    (root / "dev.en").write_text("\n".join(english[260:]) + "\n", encoding="utf-8")
    (root / "dev.de").write_text("\n".join(german[260:]) + "\n", encoding="utf-8")
    tok = train_tokenizer(iter(english + german), "wordpiece", 1000, min_frequency=1)
    tok.save(root / "tok")
    _, config, model = _tiny_bert(tok, positions=64)
    ckpt = save_checkpoint(root / "ckpt", config={"arch": "bert", "model": config.to_dict(), "objective": "mlm", "task": None},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=root / "tok")
    code, _, err = run_cli(capsys, "finetune", "--task", "seq2seq", "--checkpoint", ckpt, "--source-file", root / "s.en",
                           "--target-file", root / "t.de", "--dev-source-file", root / "dev.en", "--dev-target-file", root / "dev.de",
                           "-o", root / "run", "--max-len", "32", "--max-steps", "2", "--batch-size", "16", *QUIET)
    assert code == 0, err
    assert "260 train / 40 dev pairs" in err
    code, out, err = run_cli(capsys, "eval", "-c", root / "run", "--source-file", root / "dev.en", "--target-file", root / "dev.de",
                             "--num-beams", "2", "--json", "--threads", "1")
    assert code == 0, err
    assert json.loads(out)["examples"] == 40
