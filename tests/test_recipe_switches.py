"""The pre-LN (``--norm pre``) and bias-free (``--no-bias``) switches of BERT and RoBERTa: parity with
transformers' RobertaPreLayerNorm, conversion both ways, and a short pretraining run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers
from conftest import run_cli
from safetensors.torch import load_file
from test_roberta import PAD, TINY, padded_batch, published, randomise  # noqa: F401  (published: a fixture)

from ptmcli.convert.hf_roberta_prelayernorm import state_dict_from_hf
from ptmcli.convert.ptm_model import load_model
from ptmcli.models import bert
from ptmcli.models.roberta import RobertaConfig, RobertaForMaskedLM

ATOL = 1e-5


def hf_config(vocab_size: int = TINY["vocab_size"]) -> transformers.RobertaPreLayerNormConfig:
    return transformers.RobertaPreLayerNormConfig(
        vocab_size=vocab_size, hidden_size=TINY["hidden_size"], num_hidden_layers=TINY["num_layers"],
        num_attention_heads=TINY["num_heads"], intermediate_size=TINY["intermediate_size"],
        max_position_embeddings=TINY["max_position_embeddings"] + PAD + 1, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=PAD, bos_token_id=0, eos_token_id=2)


def test_pre_ln_encoder_matches_transformers_prelayernorm():
    torch.manual_seed(0)
    hf = randomise(transformers.RobertaPreLayerNormForMaskedLM(hf_config()), 0)
    ours = RobertaForMaskedLM(RobertaConfig(**TINY, norm="pre"))
    missing = ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=False).missing_keys
    assert sorted(missing) == ["roberta.pooler.dense.bias", "roberta.pooler.dense.weight"]
    ours.tie_weights()
    ours.eval()
    ids, mask, labels = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        trunk = hf.roberta_prelayernorm(input_ids=ids, attention_mask=mask)
        last, states = ours.roberta(ids, None, mask, output_hidden_states=True)
        out = ours(ids, None, mask, mlm_labels=labels)
    real = mask.bool()
    assert len(states) == len(ref.hidden_states) == TINY["num_layers"] + 1
    # The blocks' outputs; the top entry is before or after the final LayerNorm depending on the
    # transformers version, so the encoder's output is compared with last_hidden_state.
    for mine, theirs in zip(states[:-1], ref.hidden_states[:-1], strict=True):
        assert float((mine - theirs)[real].abs().max()) < ATOL
    assert float((last - trunk.last_hidden_state)[real].abs().max()) < ATOL
    assert float((out["mlm_logits"] - ref.logits[labels != -100]).abs().max()) < ATOL
    assert abs(float(out["mlm_loss_sum"] / out["mlm_count"] - ref.loss)) < ATOL


def test_bias_free_model_has_no_biases_but_the_decoders_and_old_configs_read_as_post_with_bias():
    config = bert.preset_config("bert-tiny", vocab_size=50, norm="pre", bias=False)
    model = bert.BertForPreTraining(config)
    assert [name for name, _ in model.named_parameters() if name.endswith("bias")] == ["mlm.bias"]
    assert model.bert.final_norm is not None and model.bert.final_norm.bias is None
    old = {k: v for k, v in bert.preset_config("bert-tiny").to_dict().items() if k not in ("norm", "bias")}
    restored = RobertaConfig.from_dict({**old, "pad_token_id": 1, "type_vocab_size": 1})
    assert (restored.norm, restored.bias) == ("post", True)
    assert bert.BertModel(bert.BertConfig.from_dict(old)).final_norm is None


def test_hf_prelayernorm_round_trips_through_ptm_from_the_cli(tmp_path, capsys, published):  # noqa: F811
    config = hf_config(vocab_size=1000)
    torch.manual_seed(1)
    model = randomise(transformers.RobertaPreLayerNormForMaskedLM(config), 1)
    src = tmp_path / "hf"
    model.save_pretrained(src)
    for path in published.iterdir():
        shutil.copy(path, src / path.name)
    code, _, err = run_cli(capsys, "convert", src, tmp_path / "ptm")
    assert code == 0, err
    saved = json.loads((tmp_path / "ptm" / "config.json").read_text())
    assert saved["arch"] == "roberta" and saved["model"]["norm"] == "pre"
    module, _, _ = load_model(tmp_path / "ptm")
    ids, mask, _ = padded_batch(vocab=1000)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
        mine = module.mlm(module.roberta(ids, None, mask))
    assert float((mine - ref)[mask.bool()].abs().max()) < ATOL
    code, _, err = run_cli(capsys, "convert", tmp_path / "ptm", tmp_path / "back")
    assert code == 0, err
    before, after = load_file(str(src / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "roberta-prelayernorm"


def test_cramming_pretrain_runs_loads_and_refuses_to_convert(tmp_path, capsys):
    code, _, err = run_cli(capsys, "pretrain", "--arch", "bert", "--preset", "bert-tiny", "--norm", "pre", "--no-bias",
                           "--max-steps", "5", "--batch-size", "8", "--seq-len", "64", "--eval-batches", "1",
                           "--out", tmp_path / "run")
    assert code == 0, err
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in lines if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    ckpt = next((tmp_path / "run" / "checkpoints").iterdir())
    model = json.loads((ckpt / "config.json").read_text())["model"]
    assert (model["norm"], model["bias"]) == ("pre", False)

    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\nhello world\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "extract-features", "-c", ckpt, text, "-o", tmp_path / "f.npy", "--layers", "all", "--pool", "mean")
    assert code == 0, err
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"sample {i} text", "label": str(i % 2)}) + "\n" for i in range(8)),
                    encoding="utf-8")
    code, _, err = run_cli(capsys, "finetune", "--checkpoint", ckpt, "--task", "classification", "--train", data,
                           "--max-steps", "2", "--out", tmp_path / "ft")
    assert code == 0, err

    code, _, err = run_cli(capsys, "convert", ckpt, tmp_path / "hf")
    assert code == 2 and "no biases" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("arch", ["albert", "electra", "distilbert"])
def test_norm_pre_with_a_family_that_cannot_take_it_is_refused_in_one_line(tmp_path, capsys, arch):
    code, _, err = run_cli(capsys, "pretrain", "--arch", arch, "--norm", "pre", "--max-steps", "1",
                           "--out", tmp_path / "run")
    assert code == 2 and "norm" in err and len(err.strip().splitlines()) == 1, err
