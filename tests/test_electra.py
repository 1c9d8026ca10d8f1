"""ptm's ELECTRA against transformers on tiny random configs, the rtd loss by hand, and the CLI end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, sample_corpus
from conftest import run_cli_err as ptm
from safetensors.torch import load_file

from ptmcli.checkpoint import list_step_checkpoints, read_config
from ptmcli.convert import hf_electra
from ptmcli.errors import PtmError
from ptmcli.models.electra import (
    PRESETS,
    ElectraConfig,
    ElectraForPreTraining,
    preset_config,
    sample_rows,
)

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 97, "embedding_size": 12, "hidden_size": 32, "num_layers": 3, "num_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 64, "generator_size": 0.5}
ATOL = 1e-5


def hf_configs(cfg: ElectraConfig):
    common = dict(vocab_size=cfg.vocab_size, embedding_size=cfg.embedding_size, num_hidden_layers=cfg.num_layers,
                  max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size)
    disc = transformers.ElectraConfig(hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_heads,
                                      intermediate_size=cfg.intermediate_size, **common)
    gen = transformers.ElectraConfig(hidden_size=cfg.generator_hidden_size, num_attention_heads=cfg.generator_heads,
                                     intermediate_size=cfg.generator_intermediate_size, **common)
    return disc, gen


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight random, LayerNorms and biases too, so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def random_trio(seed: int = 0):
    """ptm's ELECTRA with random weights, and the transformers discriminator and generator made from it
    through the conversion key map."""
    cfg = ElectraConfig(**TINY)
    ours = randomise(ElectraForPreTraining(cfg), seed)
    ours.tie_weights()
    state = ours.state_dict()
    disc_cfg, gen_cfg = hf_configs(cfg)
    disc = transformers.ElectraForPreTraining(disc_cfg).eval()
    gen = transformers.ElectraForMaskedLM(gen_cfg).eval()
    for model, cls in ((disc, "ElectraForPreTraining"), (gen, "ElectraForMaskedLM")):
        missing, unexpected = model.load_state_dict(hf_electra.weights_to_hf(state, hf_electra.CLASSES[cls]), strict=False)
        assert not unexpected and set(missing) <= set(hf_electra.ALIASES), (missing, unexpected)
        model.tie_weights()
    return ours, disc, gen


def padded_batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, TINY["vocab_size"], (4, 13), generator=gen)
    types = torch.randint(0, 2, (4, 13), generator=gen)
    mask = torch.ones(4, 13, dtype=torch.long)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    return ids, types, mask


def worst(pairs) -> float:
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


def test_discriminator_and_generator_match_transformers():
    ours, disc, gen = random_trio()
    ids, types, mask = padded_batch()
    with torch.no_grad():
        ref_d = disc(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        ref_g = gen(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        last, states = ours.electra(ids, types, mask, output_hidden_states=True)
        g_last, g_states = ours.generator_hidden(ids, types, mask, output_hidden_states=True)
        d_logits = ours.rtd(last)
        g_logits = ours.generator.logits(g_last)
    real = mask.bool()
    assert len(states) == len(ref_d.hidden_states) == TINY["num_layers"] + 1
    assert worst([(a[real], b[real]) for a, b in zip(states, ref_d.hidden_states, strict=True)]) < ATOL
    assert worst([(d_logits[real], ref_d.logits[real])]) < ATOL
    assert worst([(a[real], b[real]) for a, b in zip(g_states, ref_g.hidden_states, strict=True)]) < ATOL
    assert worst([(g_logits[real], ref_g.logits[real])]) < ATOL


def test_joint_loss_by_hand_with_fixed_replacements():
    ours, disc, gen = random_trio(seed=2)
    ids, types, mask = padded_batch(seed=3)
    labels = torch.full_like(ids, -100)
    spots = [(0, 1), (0, 5), (1, 2), (2, 7), (3, 3)]
    for row, col in spots:
        labels[row, col] = ids[row, col]
    masked = torch.where(labels != -100, torch.tensor(3), ids)  # 3 plays [MASK]
    # The second replacement equals the original token: labelled "original".
    replacements = torch.tensor([10, int(ids[0, 5]), 11, 12, 13])
    with torch.no_grad():
        out = ours(masked, types, mask, mlm_labels=labels, replacements=replacements)
        g_logits = gen(input_ids=masked, token_type_ids=types, attention_mask=mask).logits
        corrupted = masked.clone()
        for (row, col), token in zip(spots, replacements, strict=True):
            corrupted[row, col] = token
        d_logits = disc(input_ids=corrupted, token_type_ids=types, attention_mask=mask).logits
    mlm = F.cross_entropy(g_logits[labels != -100], labels[labels != -100])
    replaced = (corrupted != torch.where(labels != -100, labels, masked)).float()
    assert int(replaced.sum()) == 4
    real = mask.bool()
    bce = F.binary_cross_entropy_with_logits(d_logits[real], replaced[real])
    assert abs(float(out["mlm_loss_sum"] / out["mlm_count"] - mlm)) < ATOL
    assert abs(float(out["disc_loss_sum"] / out["disc_count"] - bce)) < ATOL
    assert int(out["disc_count"]) == int(mask.sum()) and int(out["replaced_count"]) == 4
    said = d_logits > 0
    assert int(out["disc_correct_replaced"]) == int((said & (replaced > 0) & real).sum())
    assert int(out["disc_correct"]) - int(out["disc_correct_replaced"]) == int((~said & (replaced == 0) & real).sum())
    total = out["mlm_loss_sum"] / out["mlm_count"] + 50 * out["disc_loss_sum"] / out["disc_count"]
    assert abs(float(total - (mlm + 50 * bce))) < 50 * ATOL


def test_sampling_inverts_the_softmax_and_never_backpropagates():
    logits = torch.tensor([[0.0, 0.0, 100.0], [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    picks = sample_rows(logits, torch.tensor([0.5, 0.99, 0.5]))
    assert picks.tolist() == [2, 0, 1] and not picks.requires_grad
    ours, _, _ = random_trio()
    ids, types, mask = padded_batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, ids, -100)
    uniforms = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1))
    first = ours(ids, types, mask, mlm_labels=labels, sample_uniforms=uniforms)
    again = ours(ids, types, mask, mlm_labels=labels, sample_uniforms=uniforms)
    assert torch.equal(first["disc_logits"], again["disc_logits"]), "keyed draws give the same replacements"
    first["disc_loss_sum"].backward()
    assert all(p.grad is None or not p.grad.any() for p in ours.generator.layers.parameters()), \
        "the discriminator's loss reaches the generator only through the shared embeddings"


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    cfg = preset_config(name)
    ours = ElectraForPreTraining(cfg)
    disc_cfg, gen_cfg = hf_configs(cfg)
    with torch.device("meta"):
        disc, gen = transformers.ElectraForPreTraining(disc_cfg), transformers.ElectraForMaskedLM(gen_cfg)
    params = dict(ours.named_parameters())
    pooler = sum(p.numel() for k, p in params.items() if k.startswith("electra.pooler."))
    embeddings = sum(p.numel() for p in ours.electra.embeddings.parameters())
    generator_own = sum(p.numel() for k, p in params.items() if k.startswith("generator."))
    assert ours.num_parameters() - pooler - generator_own == disc.num_parameters()
    assert generator_own + embeddings == gen.num_parameters()
    assert ours.num_parameters() == disc.num_parameters() + gen.num_parameters() - embeddings + pooler


def test_published_shapes_and_generator_sizing():
    small = preset_config("electra-small")
    assert (small.hidden_size, small.num_layers, small.num_heads, small.intermediate_size, small.embedding_size) == (256, 12, 4, 1024, 128)
    assert (small.generator_hidden_size, small.generator_heads, small.generator_intermediate_size) == (64, 1, 256)
    base = preset_config("electra-base")
    assert (base.generator_hidden_size, base.generator_heads, base.generator_intermediate_size) == (256, 4, 1024)
    for bad in (0.0, 1.5, -0.25):
        with pytest.raises(PtmError, match="--generator-size"):
            preset_config("electra-tiny", generator_size=bad)
    model = ElectraForPreTraining(preset_config("electra-tiny"))
    bert_like = 6 * sum(m.weight.numel() for m in model.electra.layers.modules() if isinstance(m, torch.nn.Linear))
    assert model.flops_per_token(128) > bert_like, "the generator's work is counted too"


# -- the CLI ---------------------------------------------------------------------------------------

RUN = ["--arch", "electra", "--preset", "electra-tiny", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
       "--num-layers", "2", "--embedding-size", "16", "--seq-len", "48", "--batch-size", "4", "--eval-rows", "4",
       "--eval-batches", "2", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return sample_corpus(tmp_path_factory.mktemp("corpus"), articles=12, vocab_size=1500, tokenizer_lines=3000)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_step_checkpoints(run)[-1] / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A short rtd run on the sample slice (its stderr kept for the asserts)."""
    import io
    from contextlib import redirect_stderr

    from ptmcli.cli.main import main

    shards, tok = corpus
    run = tmp_path_factory.mktemp("electra") / "run"
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            code = main(["pretrain", "--data", str(shards), "--tokenizer", str(tok), "-o", str(run), *RUN, "--max-steps", "40",
                         "--lr", "3e-3", "--eval-every", "20"])
        except SystemExit as stop:
            code = stop.code
    assert code in (0, None), err.getvalue()
    return run, err.getvalue()


def test_rtd_pretraining_learns_and_records_the_objective(trained):
    run, err = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "disc_loss" in r and "eval_disc_loss" not in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    split = {"disc_acc_replaced", "disc_acc_original", "sampled_original_fraction"}
    assert {"mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "replaced_fraction", *split} <= set(records[0])
    assert {f"eval_{key}" for key in split} <= {key for r in records for key in r}
    assert all(0.0 < r["replaced_fraction"] < 0.3 for r in records if "replaced_fraction" in r)
    for r in records:
        if "disc_acc_replaced" in r:
            # The overall accuracy is the two per-class ones weighted by the share of each class.
            share = r["replaced_fraction"]
            mixed = share * r["disc_acc_replaced"] + (1 - share) * r["disc_acc_original"]
            assert mixed == pytest.approx(r["disc_acc"], abs=1e-6)
            assert 0.0 <= r["sampled_original_fraction"] <= 1.0
    config = read_config(list_step_checkpoints(run)[-1])
    assert config["arch"] == "electra" and config["objective"] == "rtd" and config["model"]["embedding_size"] == 16
    assert "disc_acc" in err.splitlines()[-1] or "disc_acc" in err


def test_resume_reaches_the_same_weights(corpus, tmp_path, capsys):
    shards, tok = corpus
    common = ["--data", shards, "--tokenizer", tok, *RUN, "--seed", "3"]
    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "full", "--max-steps", "6")[0] == 0
    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "cut", "--max-steps", "6", "--save-every", "3", "--keep-last", "0")[0] == 0
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0 and "resuming" in err, err
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # The log after the resume repeats no step, and the interval trained wholly after it logs the same figures.
    logs = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("full", "cut")}
    steps = [r["step"] for r in logs["cut"] if "disc_loss" in r]
    assert steps == sorted(set(steps)) == [2, 4, 6]
    last = {run: next(r for r in reversed(records) if r["step"] == 6 and "disc_loss" in r) for run, records in logs.items()}
    assert {k: v for k, v in last["cut"].items() if k not in ("elapsed_s", "tokens_per_s", "mfu")} == \
        pytest.approx({k: v for k, v in last["full"].items() if k not in ("elapsed_s", "tokens_per_s", "mfu")}, abs=0)


def test_bf16_training_stays_finite_and_learns(corpus, tmp_path, capsys):
    shards, tok = corpus
    run = tmp_path / "bf16"
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", run, *RUN, "--precision", "bf16",
                    "--max-steps", "36", "--lr", "3e-3")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "disc_loss" in r]
    assert len(train) == 18
    assert all(np.isfinite([r["loss"], r["mlm_loss"], r["disc_loss"]]).all() for r in train), train
    losses = [r["loss"] for r in train]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("flag", [["--generator-size", "1.5"], ["--generator-size", "0"], ["--disc-weight", "-1"]])
def test_bad_generator_flags_fail_in_one_line(corpus, tmp_path, capsys, flag):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", *RUN, "--max-steps", "1", *flag)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert flag[0] in err


def test_finetune_features_and_conversion_of_an_rtd_checkpoint(trained, tmp_path, capsys):
    run, _ = trained
    ckpt = list_step_checkpoints(run)[-1]
    data = tmp_path / "sst2.tsv"
    data.write_text("sentence\tlabel\n" + "".join("a fine film\t1\na dull mess\t0\n" for _ in range(8)), encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", ckpt, "--task", "classification", "--train", data, "--dev", data,
                           "-o", tmp_path / "ft", "--max-steps", "2", "--max-len", "16", "--no-progress")
    assert code == 0, err
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat.\n\nThe dog is running.\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "extract-features", "-c", ckpt, text, "-o", tmp_path / "f.npy", "--layers", "all", "--pool", "mean")
    assert code == 0, err
    assert np.load(tmp_path / "f.npy").shape[-2:] == (3, 32)

    # ptm -> transformers: the discriminator by default, the generator on request; each loads and matches.
    assert run_cli(capsys, "convert", ckpt, tmp_path / "disc")[0] == 0
    assert run_cli(capsys, "convert", ckpt, tmp_path / "gen", "--hf-class", "ElectraForMaskedLM")[0] == 0
    model = ElectraForPreTraining(ElectraConfig.from_dict(read_config(ckpt)["model"]))
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    model.tie_weights()
    model.eval()
    ids = torch.tensor([[2, 40, 41, 42, 3]])
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    assert json.loads((tmp_path / "gen" / "config.json").read_text())["hidden_size"] == model.config.generator_hidden_size
    with torch.no_grad():
        assert worst([(model.rtd(model.electra(ids)), disc(input_ids=ids).logits)]) < ATOL
        assert worst([(model.generator.logits(model.generator_hidden(ids)), gen(input_ids=ids).logits)]) < ATOL

    # transformers discriminator -> ptm -> transformers: tensor-identical; the ptm side finetunes.
    assert run_cli(capsys, "convert", tmp_path / "disc", tmp_path / "back")[0] == 0
    assert run_cli(capsys, "convert", tmp_path / "back", tmp_path / "disc2")[0] == 0
    first, second = load_file(str(tmp_path / "disc" / "model.safetensors")), load_file(str(tmp_path / "disc2" / "model.safetensors"))
    assert sorted(first) == sorted(second) and all(torch.equal(first[k], second[k]) for k in first)
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", tmp_path / "back", "--task", "classification", "--train", data,
                           "-o", tmp_path / "ft2", "--max-steps", "1", "--max-len", "16", "--no-progress")
    assert code == 0, err
    # A transformers generator alone is refused in one line.
    code, _, err = run_cli(capsys, "convert", tmp_path / "gen", tmp_path / "nope")
    assert code == 2 and "generator" in err and not (tmp_path / "nope").exists()


def test_eval_part_generator_scores_text_with_the_generator(trained, tmp_path, capsys):
    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.models.electra import GENERATOR_FAMILY, GeneratorMaskedLM

    run, _ = trained
    ckpt = list_step_checkpoints(run)[-1]
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. The dog is running in the park.\n\nA second document follows here.\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", "-c", ckpt, "--data", text, "--part", "generator", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["part"] == "generator" and metrics["tokens_scored"] > 0
    assert np.isfinite(metrics["ppl"]) and metrics["mlm_tokens"] > 0 and 0.0 <= metrics["pseudo_accuracy"] <= 1.0

    # What it scores is the generator: at a [MASK], the logits transformers' ElectraForMaskedLM computes.
    assert run_cli(capsys, "convert", ckpt, tmp_path / "gen", "--hf-class", "ElectraForMaskedLM")[0] == 0
    loaded = load_checkpoint(ckpt)
    view = GeneratorMaskedLM(loaded.model).eval()
    ids = torch.tensor([[2, 40, 41, loaded.tokenizer.mask_id, 42, 3]])
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    with torch.no_grad():
        ours = view.mlm(GENERATOR_FAMILY.top(view, ids, None, None))
        assert worst([(ours, gen(input_ids=ids).logits)]) < ATOL

    # The discriminator (the default part) is no language model: refused, pointing at --part generator.
    capsys.readouterr()  # transformers' loading progress
    code, _, err = run_cli(capsys, "eval", "-c", ckpt, "--data", text)
    assert code == 2 and "--part generator" in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_without_a_generator_is_not_scored_or_exported_as_one(trained, tmp_path, capsys):
    run, _ = trained
    ckpt = list_step_checkpoints(run)[-1]
    assert run_cli(capsys, "convert", ckpt, tmp_path / "disc")[0] == 0
    assert run_cli(capsys, "convert", tmp_path / "disc", tmp_path / "alone")[0] == 0  # the discriminator alone
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat.\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "eval", "-c", tmp_path / "alone", "--data", text, "--part", "generator")
    assert code == 2 and "no generator weights" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, "convert", tmp_path / "alone", tmp_path / "gen", "--hf-class", "ElectraForMaskedLM")
    assert code == 2 and "no generator" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "gen").exists()


def test_generator_features_are_transformers_generator_hidden_states(corpus, tmp_path, capsys):
    """extract-features --part generator on a random checkpoint against ElectraForMaskedLM's hidden states."""
    from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
    from ptmcli.features.arrow_reader import FeatureShards
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    _, tok_dir = corpus
    tok = PtmTokenizer.load(tok_dir)
    cfg = ElectraConfig(**{**TINY, "vocab_size": tok.vocab_size, "hidden_dropout": 0.0, "attention_dropout": 0.0})
    model = randomise(ElectraForPreTraining(cfg), seed=5)
    model.tie_weights()
    config = {"arch": "electra", "model": cfg.to_dict(), "objective": "rtd", "task": None, "training": {"seq_len": 48}}
    ckpt = save_checkpoint(tmp_path / "ckpt", config=config, weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=tok_dir)
    assert run_cli(capsys, "convert", ckpt, tmp_path / "gen", "--hf-class", "ElectraForMaskedLM")[0] == 0
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    texts = ["The cat sat on the mat.", "A much longer second line, so the first one is padded in the batch.",
             "Who was Jim Henson ? ||| Jim Henson was a puppeteer"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "extract-features", "-c", ckpt, source, "--part", "generator", "--layers", "all",
                           "-o", tmp_path / "feats", "--no-progress")
    assert code == 0, err
    shards = FeatureShards.open(tmp_path / "feats")
    assert shards.features["dim"] == cfg.generator_hidden_size and shards.features["part"] == "generator"
    assert shards.features["layers"] == list(range(cfg.num_layers + 1))
    for index, text in enumerate(texts):
        segments = text.split(" ||| ")
        ids, types = [tok.cls_id], [0]
        for segment, pieces in enumerate(tok.encode_batch(segments)):
            ids += [*pieces, tok.sep_id]
            types += [segment] * (len(pieces) + 1)
        with torch.no_grad():
            ref = gen(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]), output_hidden_states=True)
        expected = torch.stack([h[0] for h in ref.hidden_states], dim=1)  # [tokens, L + 1, D]
        assert worst([(torch.from_numpy(shards.vectors(index).copy()), expected)]) < ATOL
    # The default part is still the discriminator, at its own width; the stored generator vectors do not train it.
    code, _, err = run_cli(capsys, "extract-features", "-c", ckpt, source, "--part", "discriminator", "--layers", "-1",
                           "--pool", "mean", "-o", tmp_path / "disc.npy")
    assert code == 0, err
    assert np.load(tmp_path / "disc.npy").shape == (3, 1, cfg.hidden_size)
    labeled = tmp_path / "train.tsv"
    labeled.write_text("sentence\tlabel\n" + "".join(f"{t.split(' ||| ')[0]}\t{i % 2}\n" for i, t in enumerate(texts)))
    code, _, err = run_cli(capsys, "extract-features", "-c", ckpt, labeled, "--task", "classification", "--part", "generator",
                           "--pool", "mean", "--layers", "-1", "-o", tmp_path / "train-feats", "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", ckpt, "--task", "classification", "--train", labeled,
                           "--train-features", tmp_path / "train-feats", "-o", tmp_path / "ft", "--max-steps", "1", "--no-progress")
    assert code == 2 and "--part generator" in err and len(err.strip().splitlines()) == 1, err


def test_generator_features_are_refused_without_a_generator(trained, tmp_path, capsys):
    run, _ = trained
    ckpt = list_step_checkpoints(run)[-1]
    assert run_cli(capsys, "convert", ckpt, tmp_path / "disc")[0] == 0
    assert run_cli(capsys, "convert", tmp_path / "disc", tmp_path / "alone")[0] == 0  # the discriminator alone
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat.\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "alone", text, "--part", "generator", "-o", tmp_path / "f.jsonl")
    assert code == 2 and "no generator weights" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f.jsonl").exists()
    # The discriminator alone still gives its features.
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "alone", text, "-o", tmp_path / "f.jsonl")
    assert code == 0, err


def test_part_and_generator_size_outside_electra_are_refused_in_one_line(corpus, tmp_path, capsys):
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, "-o", tmp_path / "run", "--arch", "bert",
                    "--generator-size", "0.5", "--max-steps", "1")
    assert code == 2 and "--generator-size is not a setting of --arch bert models; it applies to --arch electra" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
