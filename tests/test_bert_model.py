"""ptm's BERT against transformers' on tiny random configs, plus the shared layers it is built from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.models import layers
from ptmcli.models.bert import (
    PRESETS,
    BertConfig,
    BertForPreTraining,
    preset_config,
    pretraining_loss,
    state_dict_from_hf,
    state_dict_to_hf,
)
from ptmcli.models.registry import find_preset, get_family

transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 97, "hidden_size": 32, "num_layers": 3, "num_heads": 4, "intermediate_size": 48}


def hf_config(**values):
    return transformers.BertConfig(
        vocab_size=values["vocab_size"],
        hidden_size=values["hidden_size"],
        num_hidden_layers=values["num_layers"],
        num_attention_heads=values["num_heads"],
        intermediate_size=values["intermediate_size"],
        max_position_embeddings=64,
        layer_norm_eps=1e-12,
    )


def random_pair(seed: int = 0):
    """A transformers BertForPreTraining with every weight random (LN and biases too) and ptm's copy."""
    torch.manual_seed(seed)
    hf = transformers.BertForPreTraining(hf_config(**TINY))
    with torch.no_grad():
        for param in hf.parameters():
            param.normal_(0.0, 0.3)
    ours = BertForPreTraining(BertConfig(**TINY, max_position_embeddings=64))
    ours.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return hf.eval(), ours.eval()


def padded_batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    batch, length = 4, 13
    ids = torch.randint(0, TINY["vocab_size"], (batch, length), generator=gen)
    types = torch.randint(0, 2, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 9:] = 0
    mask[3, 5:] = 0
    ids[mask == 0] = 0
    chosen = (torch.rand(batch, length, generator=gen) < 0.3) & mask.bool()
    chosen[0, 2] = True
    labels = torch.where(chosen, torch.randint(0, TINY["vocab_size"], (batch, length), generator=gen), -100)
    nsp = torch.tensor([0, 1, 1, 0])
    return ids, types, mask, labels, nsp


def test_forward_matches_transformers():
    hf, ours = random_pair()
    ids, types, mask, labels, nsp = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        ref_pooled = hf.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
        last, states = ours.bert(ids, types, mask, output_hidden_states=True)
        out = ours(ids, types, mask, mlm_labels=labels, nsp_labels=nsp)
    assert len(states) == TINY["num_layers"] + 1
    for mine, theirs in zip(states, ref.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, ref.hidden_states[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.bert.pool(last), ref_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["mlm_logits"], ref.prediction_logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["nsp_logits"], ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "training_fused_loss"])
def test_losses_and_gradients_match_transformers(grad):
    hf, ours = random_pair(seed=3)
    ids, types, mask, labels, nsp = padded_batch(seed=4)
    count = int((labels != -100).sum())
    with torch.set_grad_enabled(grad):
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=nsp)
        out = ours(ids, types, mask, mlm_labels=labels, nsp_labels=nsp)
    assert int(out["mlm_count"]) == count and int(out["nsp_count"]) == len(nsp)
    ref_mlm = F.cross_entropy(ref.prediction_logits[labels != -100], labels[labels != -100], reduction="sum")
    torch.testing.assert_close(out["mlm_loss_sum"], ref_mlm, atol=1e-4, rtol=1e-5)
    hits = (ref.prediction_logits.argmax(-1) == labels)[labels != -100].sum()
    assert int(out["mlm_correct"]) == int(hits)
    assert int(out["nsp_correct"]) == int((ref.seq_relationship_logits.argmax(-1) == nsp).sum())
    loss = pretraining_loss(out, out["mlm_count"], out["nsp_count"])
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=1e-5)
    if grad:
        loss.backward()
        ref.loss.backward()
        hf_grads = state_dict_from_hf({name: p.grad for name, p in hf.named_parameters()})
        for name, param in ours.named_parameters():
            torch.testing.assert_close(param.grad, hf_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_padding_does_not_change_real_positions():
    _, ours = random_pair()
    ids = torch.randint(1, TINY["vocab_size"], (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        torch.testing.assert_close(ours.bert(padded, attention_mask=mask)[:, :7], ours.bert(ids), atol=1e-5, rtol=1e-5)


def test_state_dict_round_trips_through_transformers_keys():
    hf, ours = random_pair()
    theirs = hf.state_dict()
    back = state_dict_to_hf(ours.state_dict())
    assert set(back) == set(theirs)
    for key, value in theirs.items():
        torch.testing.assert_close(back[key], value, atol=0, rtol=0, msg=key)
    # The encoder alone (transformers' BertModel keys have no "bert." prefix) maps too.
    encoder_only = state_dict_from_hf(hf.bert.state_dict())
    missing = ours.load_state_dict(encoder_only, strict=False).missing_keys
    assert sorted(missing) == sorted(k for k in ours.state_dict() if not k.startswith("bert."))


def test_tied_weights_are_one_parameter_and_retie_after_loading():
    model = BertForPreTraining(BertConfig(**TINY))
    state = model.state_dict()
    for alias, target in model.tied_weights().items():
        assert state[alias].data_ptr() == state[target].data_ptr()
    stored_once = {k: v.clone() for k, v in state.items() if k not in model.tied_weights()}
    fresh = BertForPreTraining(BertConfig(**TINY))
    result = fresh.load_state_dict(stored_once, strict=False)
    assert result.missing_keys == list(model.tied_weights())
    fresh.bert.embeddings.word_embeddings.weight = torch.nn.Parameter(torch.zeros(TINY["vocab_size"], TINY["hidden_size"]))
    fresh.tie_weights()
    assert fresh.mlm.decoder.weight is fresh.bert.embeddings.word_embeddings.weight
    assert model.num_parameters() == sum(v.numel() for v in stored_once.values())


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_transformers(name):
    config = preset_config(name)
    with torch.device("meta"):
        ours = BertForPreTraining(config)
        theirs = transformers.BertForPreTraining(
            transformers.BertConfig(
                vocab_size=config.vocab_size,
                hidden_size=config.hidden_size,
                num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads,
                intermediate_size=config.intermediate_size,
            )
        )
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * config.hidden_size
    assert ours.num_parameters(exclude_embeddings=True) == ours.num_parameters() - embeddings


def test_flops_per_token_counts_mlm_head_only_on_masked_fraction():
    config = BertConfig(**TINY)
    model = BertForPreTraining(config)
    h, v = config.hidden_size, config.vocab_size
    full, none = model.flops_per_token(16, mask_fraction=1.0), model.flops_per_token(16, mask_fraction=0.0)
    assert full - none == pytest.approx(6 * (h * h + v * h))
    # Longer sequences add only the attention term 12*L*H per extra position.
    assert model.flops_per_token(32, 0.0) - none == pytest.approx(
        12 * config.num_layers * h * 16 + 6 * (h * h + 2 * h) * (1 / 32 - 1 / 16)
    )
    encoder_weights = config.num_layers * (4 * h * h + 2 * h * config.intermediate_size)
    assert none > 6 * encoder_weights


def test_config_round_trip_and_errors():
    config = preset_config("bert-mini", vocab_size=1000, hidden_dropout=0.0)
    assert BertConfig.from_dict(config.to_dict()) == config
    assert config.intermediate_size == 4 * config.hidden_size
    with pytest.raises(PtmError, match="colour"):
        BertConfig.from_dict({**config.to_dict(), "colour": 1})
    with pytest.raises(PtmError, match="bert-tiny.*bert-large"):
        preset_config("bert-huge")
    with pytest.raises(PtmError, match="multiple"):
        BertConfig(vocab_size=10, hidden_size=30, num_layers=1, num_heads=4, intermediate_size=8)
    assert get_family("bert").config_class is BertConfig
    assert find_preset("bert-base").name == "bert"
    with pytest.raises(PtmError, match="known: albert, bart, bert"):
        get_family("transformer-xxl")


def test_training_step_without_nsp_and_with_dropout():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**TINY)).train()
    ids, types, mask, labels, _ = padded_batch()
    out = model(ids, types, mask, mlm_labels=labels)
    assert "nsp_logits" not in out and int(out["nsp_count"]) == 0
    loss = pretraining_loss(out, out["mlm_count"], 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.nsp.weight.grad is None


def test_bits_dropout_rate_scale_and_gradient():
    x = torch.ones(300, 1001, requires_grad=True)
    y = layers.dropout(x, 0.1, training=True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.005
    torch.testing.assert_close(y[~dropped], torch.full_like(y[~dropped], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad == 0, dropped)
    assert layers.dropout(x, 0.1, training=False) is x
    torch.manual_seed(5)
    first = layers.dropout(x, 0.3, True)
    torch.manual_seed(5)
    assert torch.equal(first, layers.dropout(x, 0.3, True))


def test_attention_with_dropout_is_sdpa_when_nothing_dropped():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=gen) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(layers.attention_with_dropout(q, k, v, mask, 1e-9), ref, atol=1e-6, rtol=1e-5)


def test_linear_cross_entropy_matches_reference_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=gen, requires_grad=True)
    weight = torch.randn(70001, 16, generator=gen).mul_(0.3).requires_grad_()  # more rows than one chunk
    bias = torch.randn(70001, generator=gen, requires_grad=True)
    targets = torch.randint(0, 70001, (37,), generator=gen)
    loss, correct = layers.linear_cross_entropy(hidden, weight, bias, targets)
    (3 * loss).backward()
    grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    logits = F.linear(hidden, weight, bias)
    ref = F.cross_entropy(logits, targets, reduction="sum")
    (3 * ref).backward()
    torch.testing.assert_close(loss, ref, atol=1e-3, rtol=1e-5)
    assert int(correct) == int((logits.argmax(-1) == targets).sum())
    for mine, t in zip(grads, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(mine, t.grad, atol=1e-5, rtol=1e-4)


def test_linear_cross_entropy_ignores_negative_targets():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    bias = torch.randn(50, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (9,), generator=gen)
    targets[[1, 4, 8]] = -100
    loss, correct = layers.linear_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    logits = F.linear(hidden, weight, bias)
    ref = F.cross_entropy(logits, targets, reduction="sum", ignore_index=-100)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    assert int(correct) == int(((logits.argmax(-1) == targets) & (targets >= 0)).sum())
    assert grads[0][[1, 4, 8]].abs().sum() == 0
    for mine, t in zip(grads, (hidden, weight, bias), strict=True):
        torch.testing.assert_close(mine, t.grad, atol=1e-5, rtol=1e-4)


def test_linear_cross_entropy_under_bf16_autocast_is_close():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 32, generator=gen)
    weight = torch.randn(500, 32, generator=gen).mul_(0.2).requires_grad_()
    bias = torch.zeros(500, requires_grad=True)
    targets = torch.randint(0, 500, (20,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = layers.linear_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    ref = F.cross_entropy(F.linear(hidden, weight.detach(), bias.detach()), targets, reduction="sum")
    assert loss.dtype == torch.float32 and weight.grad.dtype == torch.float32
    torch.testing.assert_close(loss, ref, atol=0.5, rtol=0.02)
