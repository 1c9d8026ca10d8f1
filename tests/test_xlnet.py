"""XLNet: parity with transformers (two streams, memory, segments), the permutation masks, and `ptm pretrain --objective plm`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli

from ptmcli.checkpoint import list_step_checkpoints, read_config, read_trainer
from ptmcli.models import xlnet
from ptmcli.pretraining.permutation_lm import NumberedBlockStream, PermutationSampler
from ptmcli.pretraining.segment_recurrence import ParallelSegmentStream, RecurrentPermutationLMTask
from tests.test_gpt import _Docs
from tests.test_pretrain import _weights, corpus, ptm  # noqa: F401  (corpus is a fixture)

V, D, L, N, INNER = 97, 32, 2, 2, 64


def _hf_config(transformers, **extra):
    values = dict(vocab_size=V, d_model=D, n_layer=L, n_head=N, d_inner=INNER, dropout=0.0, mem_len=None, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    values.update(extra)
    return transformers.XLNetConfig(**values)


def _ours(**extra) -> xlnet.XLNetForPermutationLM:
    config = xlnet.XLNetConfig(vocab_size=V, hidden_size=D, num_layers=L, num_heads=N, intermediate_size=INNER,
                               hidden_dropout=0.0, attention_dropout=0.0, **extra)
    return xlnet.XLNetForPermutationLM(config).eval()


def _pair(transformers, mem_len=None, clamp_len=-1):
    torch.manual_seed(0)
    hf = transformers.XLNetLMHeadModel(_hf_config(transformers, mem_len=mem_len, clamp_len=clamp_len)).eval()
    with torch.no_grad():  # a non-zero head bias, so the test sees whether it is read
        hf.lm_loss.bias.normal_()
    ours = _ours(mem_len=mem_len, clamp_len=clamp_len)
    ours.load_state_dict(xlnet.state_dict_from_hf(hf.state_dict()), strict=True)
    return hf, ours


def _order_masks(batch: int, length: int, predict: int, generator: torch.Generator):
    """perm_mask and target_mapping of a random order per row, the last ``predict`` of each order predicted."""
    perm_mask = torch.zeros(batch, length, length)
    target_mapping = torch.zeros(batch, predict, length)
    for b in range(batch):
        order = torch.randperm(length, generator=generator)
        rank = torch.empty(length, dtype=torch.long)
        rank[order] = torch.arange(length)
        # i may read j only when j comes earlier in the order; the content stream adds itself.
        perm_mask[b] = (rank[None, :] >= rank[:, None]).float()
        for p, t in enumerate(order[-predict:]):
            target_mapping[b, p, t] = 1.0
    return perm_mask, target_mapping


def test_permutation_lm_matches_transformers_with_and_without_memory():
    transformers = pytest.importorskip("transformers")
    hf, ours = _pair(transformers)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (3, 12), generator=g)
    types = torch.cat([torch.zeros(3, 7, dtype=torch.long), torch.ones(3, 5, dtype=torch.long)], dim=1)
    perm_mask, target_mapping = _order_masks(3, 12, 4, g)
    labels = ids.gather(1, target_mapping.argmax(-1))
    labels[0, 1] = -100
    with torch.no_grad():
        first = hf(ids[:, :5], token_type_ids=types[:, :5], use_mems=True)
        mine_first = ours.xlnet(ids[:, :5], token_type_ids=types[:, :5], return_mems=True)
        for theirs, mine in zip(first.mems, mine_first.mems):
            torch.testing.assert_close(mine, theirs.transpose(0, 1), atol=1e-5, rtol=0)
        for mems, mine_mems in ((None, None), (first.mems, mine_first.mems)):
            ref = hf(ids, perm_mask=perm_mask, target_mapping=target_mapping, token_type_ids=types, mems=mems, labels=labels)
            hidden, _ = ours.encode(ids, perm_mask=perm_mask, target_mapping=target_mapping, token_type_ids=types,
                                    mems=mine_mems)
            torch.testing.assert_close(ours.logits(hidden), ref.logits, atol=1e-5, rtol=0)
            out = ours(ids, perm_mask, target_mapping, labels, token_type_ids=types, mems=mine_mems)
            torch.testing.assert_close(out["lm_loss_sum"] / out["lm_count"], ref.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["empty row", "shared position", "soft weights"])
def test_query_stream_matches_transformers_for_every_target_layout(layout):
    """One-hot rows on distinct positions attend from those positions alone; an empty row (padding) must still
    give what the reference gives, and any other mapping takes the general path."""
    transformers = pytest.importorskip("transformers")
    hf, ours = _pair(transformers)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, V, (2, 10), generator=g)
    perm_mask, target_mapping = _order_masks(2, 10, 3, g)
    if layout == "empty row":
        target_mapping[1, 2] = 0.0
        assert xlnet.query_rows(target_mapping) is not None
    elif layout == "shared position":
        target_mapping[0, 1] = target_mapping[0, 0]
        assert xlnet.query_rows(target_mapping) is None
    else:
        target_mapping[0, 0] *= 0.5
        assert xlnet.query_rows(target_mapping) is None
    with torch.no_grad():
        ref = hf(ids, perm_mask=perm_mask, target_mapping=target_mapping)
        hidden, _ = ours.encode(ids, perm_mask=perm_mask, target_mapping=target_mapping)
    torch.testing.assert_close(ours.logits(hidden), ref.logits, atol=1e-5, rtol=0)


def test_encoder_hidden_states_match_transformers_xlnet_model():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    hf = transformers.XLNetModel(_hf_config(transformers, mem_len=3, clamp_len=4)).eval()
    ours = _ours(mem_len=3, clamp_len=4)
    missing, unexpected = ours.load_state_dict(xlnet.state_dict_from_hf(hf.state_dict()), strict=False)
    assert missing == ["lm_bias"] and not unexpected
    ids = torch.randint(3, V, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        first = hf(ids[:, :4], use_mems=True)
        mine_first = ours.xlnet(ids[:, :4], return_mems=True)
        assert mine_first.mems[0].shape == (2, 3, D)
        for mems, mine_mems in ((None, None), (first.mems, mine_first.mems)):
            ref = hf(ids, attention_mask=mask, mems=mems, output_hidden_states=True)
            mine = ours.xlnet(ids, attention_mask=mask, mems=mine_mems, output_hidden_states=True)
            torch.testing.assert_close(mine.content, ref.last_hidden_state, atol=1e-5, rtol=0)
            assert len(mine.states) == len(ref.hidden_states) == L + 1
            for a, b in zip(mine.states, ref.hidden_states):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_weights_round_trip_to_transformers_keys():
    transformers = pytest.importorskip("transformers")
    hf, ours = _pair(transformers)
    back = xlnet.state_dict_to_hf(ours.state_dict(), N)
    theirs = hf.state_dict()
    assert set(back) == set(theirs)
    for key, tensor in back.items():
        assert torch.equal(tensor, theirs[key]), key


@pytest.mark.parametrize("preset", list(xlnet.PRESETS))
def test_preset_parameter_counts_equal_transformers(preset):
    transformers = pytest.importorskip("transformers")
    config = xlnet.preset_config(preset)
    hf_config = transformers.XLNetConfig(vocab_size=config.vocab_size, d_model=config.hidden_size, n_layer=config.num_layers,
                                         n_head=config.num_heads, d_inner=config.intermediate_size)
    with torch.device("meta"):
        hf = transformers.XLNetLMHeadModel(hf_config)
        ours = xlnet.XLNetForPermutationLM(config)
    count = sum(p.numel() for p in hf.parameters())
    assert ours.num_parameters() == count
    if preset == "xlnet-base":
        assert 116e6 < count < 118e6


def test_masks_position_by_position_and_through_the_model():
    sampler = PermutationSampler(k=3, seq_len=12, context_ids=(1,))
    ids = np.array([[5, 6, 7, 8, 1, 9, 10, 11, 12, 13, 14, 15]])
    batch = sampler(ids, np.array([7]), seed=3)
    perm, mapping, labels = batch["perm_mask"][0].numpy(), batch["target_mapping"][0].numpy(), batch["labels"][0].numpy()
    targets = mapping.sum(0) > 0
    rank = sampler.order(targets, 3, 7)
    assert sorted(rank.tolist()) == list(range(12))
    assert 0 < targets.sum() <= sampler.num_predict == 4 and not targets[4], "the separator stays context"
    assert rank[targets].min() > rank[~targets].max(), "targets are the last of the order"
    for i in range(12):
        for j in range(12):
            # i reads j exactly when j comes earlier in the order; never itself (the query stream's view).
            assert perm[i, j] == (rank[j] >= rank[i]), (i, j)
    where = np.flatnonzero(targets)
    assert np.array_equal(mapping.argmax(1)[:len(where)], where) and mapping[len(where):].sum() == 0
    assert np.array_equal(labels[:len(where)], ids[0, where]) and (labels[len(where):] == -100).all()

    # Through the model: a prediction changes with the tokens earlier in the order only, never its own.
    torch.manual_seed(4)
    model = _ours()
    inputs = torch.from_numpy(ids)
    args = (batch["perm_mask"], batch["target_mapping"])
    with torch.no_grad():
        base = model.encode(inputs, perm_mask=args[0], target_mapping=args[1])[0][0]
        for t in range(12):
            changed = inputs.clone()
            changed[0, t] = (changed[0, t] + 1) % V
            other = model.encode(changed, perm_mask=args[0], target_mapping=args[1])[0][0]
            for p, target in enumerate(where):
                sees = rank[t] < rank[target]
                assert torch.allclose(base[p], other[p]) != sees, (t, target)


def test_about_one_in_k_tokens_predicted_and_draws_keyed_by_example():
    for k in (2, 6):
        sampler = PermutationSampler(k=k, seq_len=64)
        ids = np.arange(10, 74)[None].repeat(400, 0)
        batch = sampler(ids, np.arange(400), seed=0)
        share = float((batch["labels"] != -100).float().mean() * sampler.num_predict / 64)
        assert abs(share - 1 / k) < 0.1 / k, (k, share)
        again = sampler(ids[:3], np.array([5, 6, 7]), seed=0)
        assert torch.equal(again["perm_mask"], batch["perm_mask"][5:8]), "a row's masks depend on its number alone"
    with pytest.raises(Exception, match="--plm-k 0"):
        PermutationSampler(k=0, seq_len=64)


def test_numbered_block_stream_tiles_the_stream_and_resumes():
    docs = [[10 + i] * (3 + i) for i in range(7)]
    make = lambda: NumberedBlockStream(_Docs(docs), np.arange(7), seq_len=5, seed=4, eos_id=1, shuffle=False)  # noqa: E731
    stream = make()
    blocks, numbers = stream.take(3)
    assert blocks.shape == (3, 5) and numbers.tolist() == [0, 1, 2]
    assert np.array_equal(blocks.reshape(-1), np.concatenate([np.array(d + [1]) for d in docs])[:15])
    part, numbers = make().take(3, slice(1, 3))
    assert np.array_equal(part, blocks[1:]) and numbers.tolist() == [1, 2]
    state = json.loads(json.dumps(stream.state_dict()))
    after = stream.take(2)
    resumed = make()
    resumed.load_state_dict(state)
    again = resumed.take(2)
    assert np.array_equal(again[0], after[0]) and again[1].tolist() == after[1].tolist() == [3, 4]


def _memory_docs():
    return _Docs([[10 + i] * (3 + 2 * i) for i in range(9)])  # 9 documents, 108 tokens with their separators


def test_memory_streams_continue_row_by_row_and_wrap_together():
    docs = _memory_docs()
    make = lambda: ParallelSegmentStream(docs, np.arange(9), seq_len=4, seed=4, eos_id=1, streams=3, shuffle=False)  # noqa: E731
    stream = make()
    text = np.concatenate([np.append(docs.docs[i], 1) for i in range(9)])
    per_row = stream.segments_per_epoch * 4
    assert stream.segments_per_epoch == len(text) // 12 == 9
    taken = [stream.take(3) for _ in range(stream.segments_per_epoch)]
    assert [t[2] for t in taken] == list(range(9)) and taken[4][3] == (0, 3)
    for r in range(3):
        # Row r reads part r of the epoch's stream: each segment continues the one before it exactly.
        assert np.array_equal(np.concatenate([t[0][r] for t in taken]), text[r * per_row:(r + 1) * per_row])
    assert [t[1].tolist() for t in taken[:2]] == [[0, 1, 2], [3, 4, 5]], "numbered as without memory"
    blocks, numbers, segment, rows = stream.take(3)
    assert segment == 0 and np.array_equal(blocks, taken[0][0]) and numbers.tolist() == [27, 28, 29], \
        "every row wraps to the next epoch at once"

    part = make()
    part.take(3)
    blocks, numbers, segment, rows = part.take(3, slice(1, 3))
    assert np.array_equal(blocks, taken[1][0][1:]) and numbers.tolist() == [4, 5] and (segment, rows) == (1, (1, 3))
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert np.array_equal(resumed.take(3)[0], taken[2][0])
    with pytest.raises(Exception, match="same data, --seq-len and global batch"):
        ParallelSegmentStream(docs, np.arange(9), seq_len=4, seed=4, eos_id=1, streams=2).load_state_dict(part.state_dict())
    with pytest.raises(Exception, match="fewer than one segment"):
        ParallelSegmentStream(docs, np.arange(9), seq_len=64, seed=4, eos_id=1, streams=3)


def _memory_task(batch_size=3):
    stream = ParallelSegmentStream(_memory_docs(), np.arange(9), seq_len=6, seed=2, eos_id=1, streams=batch_size)
    return RecurrentPermutationLMTask(stream, PermutationSampler(k=3, seq_len=6, context_ids=(1,)), seed=2,
                                      batch_size=batch_size)


def test_step_with_memory_equals_the_model_given_the_previous_segments_mems():
    torch.manual_seed(6)
    model = _ours(mem_len=4)
    task = _memory_task()
    first, second = task.next_micro_batches(2)  # accumulation: the second micro-batch reads the first's memory
    assert (first["segment"], second["segment"]) == (0, 1)
    with torch.no_grad():
        loss_first, _ = task.loss(model, first, task.normalizers([first]))
        loss_second, _ = task.loss(model, second, task.normalizers([second]))
        masks = lambda b: dict(perm_mask=b["perm_mask"], target_mapping=b["target_mapping"])  # noqa: E731
        direct_first = model(first["input_ids"], **masks(first), labels=first["labels"])
        mems = model.xlnet(first["input_ids"], **masks(first), return_mems=True).mems
        assert mems[0].shape == (3, 4, D)
        direct = model(second["input_ids"], **masks(second), labels=second["labels"], mems=mems)
        alone = model(second["input_ids"], **masks(second), labels=second["labels"])
    assert torch.equal(loss_first, direct_first["lm_loss_sum"] / direct_first["lm_count"]), "the first segment reads no memory"
    assert torch.equal(loss_second, direct["lm_loss_sum"] / direct["lm_count"])
    # A random tiny model predicts almost uniformly: the states, not the loss, show that the memory is read.
    assert not torch.allclose(direct["hidden"], alone["hidden"], atol=1e-2) and not torch.equal(direct["lm_loss_sum"], alone["lm_loss_sum"])

    # The memory is what a checkpoint saves; a process holding rows 1..2 continues from it exactly.
    saved = task.training_tensors()
    assert sorted(saved) == [f"mems.{i}" for i in range(L)] and saved["mems.0"].shape == (3, 4, D)
    third = task.next_micro_batches(1)[0]
    resumed = _memory_task()
    resumed.load_state_dict(json.loads(json.dumps(task.state_dict())))
    resumed.stream.taken -= 1  # back to before the third micro-batch, as the checkpoint of the step before it
    resumed.load_training_tensors(saved)
    part = resumed.next_micro_batches(1, rows=slice(1, 3))[0]
    assert torch.equal(part["input_ids"], third["input_ids"][1:]) and part["stream_rows"] == (1, 3)
    with torch.no_grad():
        whole = task._forward(model, third)
        share = resumed._forward(model, part)
    assert torch.equal(share["hidden"], whole["hidden"][1:])
    assert resumed.memory[0].shape[0] == 2 and torch.equal(resumed.memory[0], task.memory[0][1:])


def test_memory_follows_the_micro_batches_whatever_the_accumulation():
    accumulated, single = _memory_task(), _memory_task()
    steps = accumulated.next_micro_batches(2) + accumulated.next_micro_batches(2)
    singles = [single.next_micro_batches(1)[0] for _ in range(4)]
    for a, b in zip(steps, singles):
        assert a["segment"] == b["segment"] and all(torch.equal(a[k], b[k]) for k in ("input_ids", "perm_mask", "labels"))
    assert [b["segment"] for b in steps] == [0, 1, 2, 3]


XLNET_TINY = ["--arch", "xlnet", "--preset", "xlnet-tiny", "--objective", "plm", "--hidden-size", "32", "--num-heads", "2",
              "--intermediate-size", "64", "--num-layers", "2", "--seq-len", "32", "--batch-size", "4", "--eval-rows", "4",
              "--eval-batches", "2", "--log-every", "2", "--no-progress"]


@pytest.mark.parametrize("memory", [[], ["--mem-len", "16", "--grad-accum", "2"]], ids=["alone", "memory"])
def test_pretrain_plm_runs_and_resumes_bit_for_bit(corpus, tmp_path, capsys, memory):  # noqa: F811
    shards, tok = corpus
    common = ["--data", shards, "--tokenizer", tok, *XLNET_TINY, "--seed", "5", "--lr", "3e-3", "--max-steps", "4", *memory]
    code, err = ptm(capsys, "pretrain", *common, "-o", tmp_path / "full")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["lm_loss"]) for r in records if "lm_loss" in r) and any("eval_lm_acc" in r for r in records)
    config = read_config(list_step_checkpoints(tmp_path / "full")[-1])
    assert config["arch"] == "xlnet" and config["objective"] == "plm" and config["model"]["hidden_size"] == 32

    assert ptm(capsys, "pretrain", *common, "-o", tmp_path / "cut", "--save-every", "2", "--keep-last", "0")[0] == 0
    # The memory (every layer's, every row's) is saved with the step, as safetensors beside the optimizer's state.
    saved = read_trainer(list_step_checkpoints(tmp_path / "cut")[0])[0]
    assert {k for k in saved if k.startswith("task/")} == ({"task/mems.0", "task/mems.1"} if memory else set())
    if memory:
        assert saved["task/mems.0"].shape == (4, 16, 32)
    for ckpt in list_step_checkpoints(tmp_path / "cut")[1:]:
        shutil.rmtree(ckpt)
    code, err = ptm(capsys, "pretrain", "--resume", tmp_path / "cut")
    assert code == 0, err
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert set(full) == set(resumed)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


@pytest.mark.parametrize(("flag", "message"), [(["--plm-k", "0"], "--plm-k 0: must be at least 1"),
                                               (["--mem-len", "-1"], "--mem-len -1")])
def test_bad_plm_settings_are_one_line_and_exit_2(corpus, tmp_path, capsys, flag, message):  # noqa: F811
    shards, tok = corpus
    code, err = ptm(capsys, "pretrain", "--data", shards, "--tokenizer", tok, *XLNET_TINY, "--max-steps", "1", *flag,
                    "-o", tmp_path / "run")
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("cls", ["XLNetLMHeadModel", "XLNetModel"])
def test_convert_from_and_back_to_transformers_is_lossless(tmp_path, capsys, cls):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from ptmcli.convert.ptm_model import load_model

    torch.manual_seed(5)
    hf = getattr(transformers, cls)(_hf_config(transformers, mem_len=4)).eval()
    hf.save_pretrained(tmp_path / "hf")
    code, err = ptm(capsys, "convert", tmp_path / "hf", tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "xlnet" and config["objective"] == ("plm" if cls != "XLNetModel" else None)
    assert config["model"]["mem_len"] == 4
    module = load_model(tmp_path / "ckpt")[0].eval()
    ids = torch.randint(3, V, (2, 7))
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(module.xlnet(ids).content, ref, atol=1e-5, rtol=0)
    code, err = ptm(capsys, "convert", tmp_path / "ckpt", tmp_path / "back")
    assert code == 0, err
    before, after = load_file(str(tmp_path / "hf" / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(before) == sorted(after) and all(torch.equal(before[k], after[k]) for k in before)
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["architectures"] == [cls] and written["model_type"] == "xlnet" and written["mem_len"] == 4


# -- after pretraining: XLNet's sentencepiece tokenizer, its task layout, features, finetuning ----------------------

XLNET_SPECIALS = ("<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>")
SP_VOCAB = 800
TEXTS = ["The anarchist movement spread across Europe.", "Caf\u00e9 owners said ``hello'' to na\u00efve visitors!",
         "  Leading and trailing   spaces  ", "In 1936, 250,000 people marched."]


@pytest.fixture(scope="module")
def xlnet_hf_dir(tmp_path_factory):
    """A transformers XLNetModel beside XLNet's tokenizer files: a cased unigram spiece.model with <unk> <s> </s>
    and XLNet's user-defined symbols first, learned from the bundled sample, and XLNetTokenizer's config."""
    import io

    transformers = pytest.importorskip("transformers")
    sentencepiece = pytest.importorskip("sentencepiece")
    from tests.foreign_tokenizers import sample_paragraphs

    root = tmp_path_factory.mktemp("xlnet-hf")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sample_paragraphs(300)), model_writer=model, model_type="unigram", vocab_size=SP_VOCAB,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=list(XLNET_SPECIALS), num_threads=1,
        minloglevel=2)
    (root / "spiece.model").write_bytes(model.getvalue())
    (root / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLNetTokenizer", "do_lower_case": False, "keep_accents": False, "remove_space": True,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>", "pad_token": "<pad>",
        "cls_token": "<cls>", "mask_token": "<mask>", "additional_special_tokens": ["<eop>", "<eod>"],
        "model_max_length": 1000000000000000019884624838656, "padding_side": "left"}), encoding="utf-8")
    torch.manual_seed(6)
    hf = transformers.XLNetModel(_hf_config(transformers, vocab_size=SP_VOCAB, pad_token_id=5)).eval()
    hf.save_pretrained(root)
    return root, hf


def _converted(tmp_path, capsys, source):
    code, err = ptm(capsys, "convert", source, tmp_path / "ckpt")
    assert code == 0, err
    return tmp_path / "ckpt"


def test_xlnet_sentencepiece_tokenizer_converts_both_ways(xlnet_hf_dir, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    source, _ = xlnet_hf_dir
    ckpt = _converted(tmp_path, capsys, source)
    theirs = transformers.AutoTokenizer.from_pretrained(source)
    ours = PtmTokenizer.load(ckpt)
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert {r: ours.special_tokens[r] for r in ("cls", "sep", "pad", "mask")} == {
        "cls": "<cls>", "sep": "<sep>", "pad": "<pad>", "mask": "<mask>"}
    code, err = ptm(capsys, "convert", ckpt, tmp_path / "back")
    assert code == 0, err
    written = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert written["tokenizer_class"] == "XLNetTokenizer" and written["additional_special_tokens"] == ["<eop>", "<eod>"]
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    for text in TEXTS:
        assert again(text, TEXTS[0])["input_ids"] == theirs(text, TEXTS[0])["input_ids"]


def test_task_layout_and_features_are_xlnets(xlnet_hf_dir, tmp_path, capsys):
    """`A <sep> <cls>` and `A <sep> B <sep> <cls>` with segments 0/1 and 2 for <cls>, as XLNetTokenizer frames them;
    extract-features reads the content stream as transformers' XLNetModel computes it on that input."""
    transformers = pytest.importorskip("transformers")
    from ptmcli.tasks.encode import encode_examples
    from ptmcli.tasks.readers import LabeledExample
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    source, hf = xlnet_hf_dir
    ckpt = _converted(tmp_path, capsys, source)
    theirs = transformers.AutoTokenizer.from_pretrained(source)
    ours = PtmTokenizer.load(ckpt)
    a, b = TEXTS[0], TEXTS[3]
    rows = encode_examples([LabeledExample(texts=(a,), label="x", line=1), LabeledExample(texts=(a, b), label="x", line=2)],
                           ours, "classification", "xlnet", 64, ["x"])
    for row, ref in zip(rows, (theirs(a, return_token_type_ids=True), theirs(a, b, return_token_type_ids=True))):
        assert row["input_ids"].tolist() == ref["input_ids"]
        assert row["token_type_ids"].tolist() == ref["token_type_ids"]
    assert rows[0]["input_ids"][-2:].tolist() == [ours.sep_id, ours.cls_id]

    text = tmp_path / "text.txt"
    text.write_text(f"{a}\n{b}\n", encoding="utf-8")
    code, err = ptm(capsys, "extract-features", "-c", ckpt, text, "-o", tmp_path / "f.npy", "--layers", "all",
                    "--pool", "mean")
    assert code == 0, err
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (2, L + 1, D)
    with torch.no_grad():
        encoded = theirs(a, return_tensors="pt", return_token_type_ids=True)
        states = hf(**encoded, output_hidden_states=True).hidden_states
    text_part = slice(0, encoded["input_ids"].shape[1] - 2)  # <sep> <cls> are context, not output
    expected = torch.stack([s[0, text_part].mean(0) for s in states])
    np.testing.assert_allclose(features[0], expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", ["classification", "pair-classification", "token-classification"])
def test_converted_xlnet_finetunes_and_eval_names_what_it_does(xlnet_hf_dir, tmp_path, capsys, monkeypatch, task):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    source, _ = xlnet_hf_dir
    ckpt = _converted(tmp_path, capsys, source)
    data = tmp_path / "train.tsv"
    if task == "classification":
        body = "sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(8))
    elif task == "pair-classification":
        body = "sentence1\tsentence2\tlabel\n" + "".join(f"the cat sat\ton a mat\t{i % 2}\nhello\tworld\t{(i + 1) % 2}\n" for i in range(8))
    else:
        data = tmp_path / "train.conll"
        body = "".join("The\tO\ncat\tB-X\nsat\tO\n\n" for _ in range(8))
    data.write_text(body, encoding="utf-8")
    code, _err = ptm(capsys, "finetune", "--checkpoint", ckpt, "--task", task, "--train", data, "--dev", data,
                     "-o", tmp_path / "ft", "--max-steps", "2", "--max-len", "24", "--no-progress")
    assert code == 0, _err
    code, err = ptm(capsys, "eval", "-c", tmp_path / "ft" / "best", "--data", data)
    assert code == 0, err
    if task == "classification":
        text = tmp_path / "text.txt"
        text.write_text("The cat sat on the mat.\nHello world, again and again.\n", encoding="utf-8")
        code, out, err = run_cli(capsys, "eval", "-c", ckpt, "--data", text, "--json", "--stride", "4", "--context", "8")
        assert code == 0, err
        result = json.loads(out)
        assert result["metric"].startswith("perplexity (permutation LM") and result["tokens_scored"] > 10, out
        assert math.isfinite(result["ppl"]) and result["stride"] == 4


@pytest.mark.parametrize("context,stride", [(40, 40), (8, 3)])
def test_eval_scores_text_left_to_right_as_transformers_computes_it(context, stride):
    """Every window's tokens scored from the tokens before them only: the nll equals transformers' XLNetLMHeadModel
    asked for one target at a time with everything at or after it hidden."""
    transformers = pytest.importorskip("transformers")
    from ptmcli.evaluation.corpus import CorpusStats, Sentence
    from ptmcli.evaluation.permutation import score_permutation
    from ptmcli.evaluation.windows import IGNORE_INDEX, sliding_windows

    hf, ours = _pair(transformers)
    generator = torch.Generator().manual_seed(3)
    docs = [torch.randint(5, V, (n,), generator=generator).numpy() for n in (13, 9, 11)]
    sentences = [Sentence(d, len(d), True, True) for d in docs]
    sums = score_permutation(ours, sentences, CorpusStats(), end_id=2, pad_id=0, context=context, stride=stride,
                             batch_size=3, device=torch.device("cpu"), precision="fp32")
    stream = np.concatenate([[2], docs[0], [2], docs[1], [2], docs[2], [2]])
    assert sums["tokens_scored"] == len(stream) - 1
    expected, count = 0.0, 0
    for window in sliding_windows([stream], context, stride):
        row = torch.tensor(np.concatenate([window.input_ids, window.labels[-1:]]))[None]
        for p in range(1, row.shape[1]):
            if window.labels[p - 1] == IGNORE_INDEX:
                continue
            perm = torch.zeros(1, row.shape[1], row.shape[1])
            perm[:, :, p:] = 1.0
            target = torch.zeros(1, 1, row.shape[1])
            target[0, 0, p] = 1.0
            with torch.no_grad():
                logits = hf(row, perm_mask=perm, target_mapping=target).logits[0, 0]
            expected -= float(torch.log_softmax(logits, -1)[row[0, p]])
            count += 1
    assert count == sums["tokens_scored"]
    assert abs(sums["nll_sum"] - expected) < 1e-4 * count
