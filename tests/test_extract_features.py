"""`ptm extract-features`: layer semantics, word alignment, pooling, determinism, every output format, errors."""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections import OrderedDict
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli as ptm
from conftest import shared_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.errors import PtmError
from ptmcli.features.alignment import encode_with_words
from ptmcli.features.extract import FeatureExtractor
from ptmcli.features.layers import build_plan
from ptmcli.features.model import load_feature_model
from ptmcli.features.readers import TextRecord, iter_records
from ptmcli.models import bert, elmo, gpt
from ptmcli.pretraining.sample import SAMPLE
from ptmcli.textio.inputs import iter_texts
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Anarchism is a political philosophy.",
    "Who was Jim Henson ? ||| Jim Henson was a puppeteer",
    "",
    "A much longer sentence follows here, with commas, numbers like 1987 and unusual words such as anarchosyndicalism.",
    "Short.",
    "Albedo is the measure of the diffuse reflection of solar radiation.",
]
SINGLE = [t for t in TEXTS if "|||" not in t]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    return list(islice(iter_texts([str(SAMPLE)]), 300))


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, sample_texts) -> Path:
    path = tmp_path_factory.mktemp("feat_tok") / "tok"
    train_tokenizer(sample_texts, "wordpiece", 500).save(path)
    return path


def _save(model, arch: str, tok_dir: Path, target: Path, extra: dict | None = None, task: dict | None = None) -> Path:
    weights = state_dict_for_saving(model, model.tied_weights())
    weights.update(extra or {})
    config = {"arch": arch, "model": model.config.to_dict(), "objective": None, "task": task, "training": {"seq_len": 40}}
    return save_checkpoint(target, config=config, weights=weights, tokenizer_dir=tok_dir)


@pytest.fixture(scope="module")
def ckpts(tok_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("feat_ckpt")
    tok = PtmTokenizer.load(tok_dir)
    vocab = tok.vocab_size
    torch.manual_seed(0)
    small = dict(vocab_size=vocab, hidden_size=32, num_heads=2, intermediate_size=64, num_layers=3,
                 hidden_dropout=0.0, attention_dropout=0.0)
    bert_model = bert.BertForPreTraining(bert.preset_config("bert-tiny", max_position_embeddings=64, **small))
    gpt_model = gpt.GPTForCausalLM(gpt.preset_config("gpt-tiny", max_position_embeddings=64, **small))
    elmo_config = elmo.preset_config("elmo-small", vocab_size=vocab, char_filters=[[1, 8], [2, 8], [3, 16]], projection_dim=16,
                                     lstm_dim=32, max_chars_per_token=12, dropout=0.0)
    elmo_model = elmo.ElmoBiLM(elmo_config)
    elmo_model.set_char_table(elmo.char_table_for_tokenizer(tok, 12))
    mix = {"scalar_mix.weights": torch.tensor([0.5, -1.0, 2.0, 0.0]), "scalar_mix.gamma": torch.tensor([0.7])}
    return {
        "bert": _save(bert_model, "bert", tok_dir, root / "bert"),
        "gpt": _save(gpt_model, "gpt", tok_dir, root / "gpt"),
        "elmo": _save(elmo_model, "elmo", tok_dir, root / "elmo"),
        "bert-mix": _save(bert_model, "bert", tok_dir, root / "bert-mix", mix),
    }


@pytest.fixture(scope="module")
def models(ckpts) -> dict:
    return {name: load_feature_model(path) for name, path in ckpts.items()}


def records(texts: list[str]) -> list[TextRecord]:
    out = []
    for i, text in enumerate(texts):
        head, sep, tail = text.rpartition(" ||| ")
        out.append(TextRecord(i, i + 1, head if sep else text, tail if sep else None, text))
    return out


def extract(model, texts, layers=None, combine="none", **options):
    mix = options.pop("mix_weights", None)
    plan = build_plan(layers, model.num_layers, combine, model.family.features_all_layers, mix, options.pop("mix_gamma", None), model.scalar_mix, "ckpt")
    extractor = FeatureExtractor(model, plan, **options)
    return list(extractor.rows(records(texts))), extractor




# -- layers ---------------------------------------------------------------------------------


def _bert_inputs(model, text_a, text_b=None):
    tok = model.tokenizer
    ids = [tok.cls_id, *tok.encode_batch([text_a])[0], tok.sep_id]
    types = [0] * len(ids)
    if text_b is not None:
        b = [*tok.encode_batch([text_b])[0], tok.sep_id]
        ids, types = ids + b, types + [1] * len(b)
    return torch.tensor([ids]), torch.tensor([types])


def test_layer_indices_follow_google_bert_and_all_adds_the_embeddings(models):
    model = models["bert"]
    ids, types = _bert_inputs(model, TEXTS[0])
    with torch.no_grad():
        _, states = model.model.bert(ids, types, None, output_hidden_states=True)
    rows, _ = extract(model, [TEXTS[0]], layers="-1,0,-3")
    assert rows[0].values.shape == (3, ids.shape[1], 32)
    for k, state in enumerate((states[3], states[1], states[1])):
        np.testing.assert_allclose(rows[0].values[k], state[0].numpy(), atol=1e-5)
    rows, _ = extract(model, [TEXTS[0]], layers="all")
    assert rows[0].values.shape[0] == 4
    np.testing.assert_allclose(rows[0].values[0], states[0][0].numpy(), atol=1e-5)
    # The default is google's -1,-2,-3,-4, cut to the 3 blocks this model has.
    _, extractor = extract(model, [TEXTS[0]])
    assert extractor.layout.labels == (-1, -2, -3)
    with pytest.raises(PtmError, match="out of range"):
        extract(model, [TEXTS[0]], layers="-4")


def test_gpt_last_layer_is_the_final_normed_state_and_its_start_token_is_context(models):
    model = models["gpt"]
    tok = model.tokenizer
    ids = torch.tensor([[tok.sep_id, *tok.encode_batch([TEXTS[1]])[0]]])
    with torch.no_grad():
        last, states = model.model.gpt(ids, output_hidden_states=True)
    rows, _ = extract(model, [TEXTS[1]], layers="-1,-2")
    assert rows[0].units == tok.convert_ids_to_tokens(ids[0, 1:].tolist())
    np.testing.assert_allclose(rows[0].values[0], last[0, 1:].numpy(), atol=1e-5)
    np.testing.assert_allclose(rows[0].values[1], states[2][0, 1:].numpy(), atol=1e-5)


def test_elmo_features_are_its_representations_without_the_sentence_boundaries(models):
    model = models["elmo"]
    begin, end = elmo.sentence_boundary_ids(model.tokenizer)
    ids = torch.tensor([[begin, *model.tokenizer.encode_batch([TEXTS[1]])[0], end]])
    with torch.no_grad():
        layers = model.model.representations(ids)
    rows, extractor = extract(model, [TEXTS[1]])
    assert extractor.layout.labels == (0, 1, 2)  # ELMo defaults to all 2L + 1 representations
    assert rows[0].values.shape == (3, ids.shape[1] - 2, 32)
    for k in range(3):
        np.testing.assert_allclose(rows[0].values[k], layers[k][0, 1:-1].numpy(), atol=1e-5)
    with pytest.raises(PtmError, match="pair"):
        extract(model, [TEXTS[2]])


def test_parity_with_transformers_bert_and_gpt2(models):
    transformers = pytest.importorskip("transformers")
    model = models["bert"]
    cfg = model.model.config
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    state = {k.removeprefix("bert."): v for k, v in bert.state_dict_to_hf(model.model.state_dict()).items() if k.startswith("bert.")}
    hf.load_state_dict(state, strict=False)
    ids, types = _bert_inputs(model, *TEXTS[2].split(" ||| "))
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types, output_hidden_states=True).hidden_states
    rows, _ = extract(model, [TEXTS[2]], layers="all")
    for k in range(4):
        np.testing.assert_allclose(rows[0].values[k], expected[k][0].numpy(), atol=1e-4)

    model = models["gpt"]
    cfg = model.model.config
    hf = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_embd=32, n_layer=3, n_head=2, n_inner=64, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new")).eval()
    state = {k.removeprefix("transformer."): v for k, v in gpt.state_dict_to_hf(model.model.state_dict()).items()}
    hf.load_state_dict(state, strict=False)
    ids = torch.tensor([[model.tokenizer.sep_id, *model.tokenizer.encode_batch([TEXTS[0]])[0]]])
    with torch.no_grad():
        expected = hf(input_ids=ids, output_hidden_states=True).hidden_states
    rows, _ = extract(model, [TEXTS[0]], layers="all")
    for k in range(4):
        np.testing.assert_allclose(rows[0].values[k], expected[k][0, 1:].numpy(), atol=1e-4)


# -- combining, pooling, words --------------------------------------------------------------


def test_combinations_are_mean_concat_and_a_softmax_weighted_mix(models):
    model = models["bert"]
    base, _ = extract(model, SINGLE, layers="all")
    mean, _ = extract(model, SINGLE, layers="all", combine="mean")
    concat, _ = extract(model, SINGLE, layers="-1,-2", combine="concat")
    mixed, extractor = extract(model, SINGLE, layers="all", combine="scalar-mix", mix_weights="1,0,0,2", mix_gamma=0.5)
    weights = torch.tensor([1.0, 0, 0, 2]).softmax(0).numpy()
    assert extractor.layout.labels == ("scalar-mix",)
    for b, m, c, s in zip(base, mean, concat, mixed):
        np.testing.assert_allclose(m.values[0], b.values.mean(0), atol=1e-5)
        np.testing.assert_allclose(c.values[0], np.concatenate([b.values[3], b.values[2]], -1), atol=1e-6)
        np.testing.assert_allclose(s.values[0], 0.5 * np.tensordot(weights, b.values, 1), atol=1e-5)
    with pytest.raises(PtmError, match="3 weights but 4 layers"):
        extract(model, SINGLE, layers="all", combine="scalar-mix", mix_weights="1,2,3")


def test_scalar_mix_learned_by_a_checkpoint_is_used_and_its_absence_is_explained(models):
    learned, _ = extract(models["bert-mix"], SINGLE, combine="scalar-mix")
    given, _ = extract(models["bert"], SINGLE, combine="scalar-mix", mix_weights="0.5,-1,2,0", mix_gamma=0.7)
    for a, b in zip(learned, given):
        np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    with pytest.raises(PtmError, match="scalar_mix.weights"):
        extract(models["bert"], SINGLE, combine="scalar-mix")


def test_a_gpt_mix_runs_on_the_top_layer_it_was_learned_on(models, tok_dir, tmp_path):
    """Task checkpoints say whether their mix saw GPT's top layer after the final LayerNorm; older ones did not."""
    source = models["gpt"].model
    mix = {"scalar_mix.weights": torch.tensor([0.5, -1.0, 2.0, 0.0]), "scalar_mix.gamma": torch.tensor([0.7])}
    ids = torch.tensor([[5, 9, 13, 7]])
    with torch.no_grad():
        last, states = source.gpt(ids, output_hidden_states=True)
    assert not torch.allclose(last, states[-1])
    for task, top in (({"type": "classification", "normed_top_layer": True}, last), ({"type": "classification"}, states[-1])):
        model = load_feature_model(_save(source, "gpt", tok_dir, tmp_path / str(len(task)), mix, task))
        with torch.no_grad():
            stack = model.stack(ids, None, None)
        torch.testing.assert_close(stack[-1], top)
        torch.testing.assert_close(stack[1], states[1])


def test_pooling_is_over_the_output_positions(models):
    for name in ("bert", "gpt"):
        model = models[name]
        tokens, _ = extract(model, SINGLE, layers="-1")
        for how, reduce in (("mean", lambda v: v.mean(1)), ("max", lambda v: v.max(1)), ("last", lambda v: v[:, -1])):
            pooled, _ = extract(model, SINGLE, layers="-1", pool=how)
            for t, p in zip(tokens, pooled):
                expected = reduce(t.values) if t.values.shape[1] else np.zeros_like(p.values)
                np.testing.assert_allclose(p.values, expected, atol=1e-5)
    cls, _ = extract(models["bert"], SINGLE, layers="-1", pool="cls")
    tokens, _ = extract(models["bert"], SINGLE, layers="-1")
    for t, p in zip(tokens, cls):
        np.testing.assert_allclose(p.values, t.values[:, 0], atol=1e-6)
    with pytest.raises(PtmError, match="CLS"):
        extract(models["gpt"], SINGLE, pool="cls")


def test_word_vectors_come_from_each_words_sub_tokens(models):
    model = models["bert"]
    text = "anarchosyndicalism differs , Albedo's measure"
    tokens, _ = extract(model, [text], layers="-1")
    first, _ = extract(model, [text], layers="-1", words="first")
    mean, _ = extract(model, [text], layers="-1", words="mean")
    assert first[0].units == text.split()
    ids, word_ids, _ = encode_with_words(model.tokenizer, [text])[0]
    assert len(set(word_ids)) == 5 and len(ids) > 5  # some word is split into several pieces
    word_ids = np.array([-1, *word_ids, -1])  # [CLS] ... [SEP]
    for w in range(5):
        positions = np.flatnonzero(word_ids == w)
        np.testing.assert_allclose(first[0].values[0, w], tokens[0].values[0, positions[0]], atol=1e-6)
        np.testing.assert_allclose(mean[0].values[0, w], tokens[0].values[0, positions].mean(0), atol=1e-5)


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel", "unigram"])
def test_sub_tokens_map_back_to_whitespace_words(kind, sample_texts):
    tok = train_tokenizer(sample_texts, kind, 400)
    text = "Héllo  wörld, it's   Anarchism's 1987 tokens."
    ids, word_ids, words = encode_with_words(tok, [text])[0]
    assert ids == tok.encode_batch([text])[0]
    assert words == text.split()
    assert sorted(set(word_ids) - {-1}) == list(range(len(words)))
    in_words = [w for w in word_ids if w >= 0]
    assert in_words == sorted(in_words)
    if kind == "wordpiece":
        spelled = ["".join(t.removeprefix("##") for t, w in zip(tok.convert_ids_to_tokens(ids), word_ids) if w == i) for i in range(len(words))]
        assert spelled == [w.lower().replace("é", "e").replace("ö", "o") for w in words]


# -- the pipeline: order, determinism, memory -----------------------------------------------


@pytest.mark.parametrize("name", ["bert", "gpt", "elmo"])
def test_vectors_do_not_depend_on_batch_size_or_batch_mates(models, name):
    model = models[name]
    texts = SINGLE if name == "elmo" else TEXTS
    alone = [extract(model, [t], layers="all", batch_size=1)[0][0] for t in texts]
    batched, _ = extract(model, texts, layers="all", batch_size=3)
    others = texts[::-1] + ["filler text " * k for k in range(1, 6)]
    mixed, _ = extract(model, others, layers="all", batch_size=4, chunk_size=5)
    by_text = {t: row for t, row in zip(others, mixed)}
    for text, a, b in zip(texts, alone, batched):
        assert a.values.shape == b.values.shape
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
        np.testing.assert_allclose(a.values, by_text[text].values, atol=1e-5)


def test_rows_come_back_in_input_order_across_chunks_and_memory_splits(models):
    model = models["bert"]
    texts = [" ".join(["word"] * (1 + (i * 7) % 11)) for i in range(23)]
    plan = build_plan("-1", model.num_layers, "none", False, None, None, {}, "ckpt")
    extractor = FeatureExtractor(model, plan, batch_size=4, chunk_size=10, buffer_bytes=4 * 32 * 20)
    rows = list(extractor.rows(records(texts)))
    assert [r.index for r in rows] == list(range(23))
    assert [len(r.units) - 2 for r in rows] == [len(ids) for ids in model.tokenizer.encode_batch(texts)]
    assert extractor.stats.texts == 23


def test_long_texts_are_cut_and_pairs_lose_their_longer_text_first(models):
    model = models["bert"]
    a, b = "one two three four five six seven eight", "the"
    a_tokens, b_tokens = (model.tokenizer.convert_ids_to_tokens(ids) for ids in model.tokenizer.encode_batch([a, b]))
    assert len(a_tokens) >= 8 and len(b_tokens) <= 2
    rows, extractor = extract(model, [f"{a} ||| {b}"], layers="-1", max_length=8)
    assert rows[0].units == ["[CLS]", *a_tokens[: 5 - len(b_tokens)], "[SEP]", *b_tokens, "[SEP]"]
    assert extractor.stats.truncated == 1
    with pytest.raises(PtmError, match="positions"):
        extract(model, ["x"], max_length=65)


def test_bf16_features_are_close_to_fp32(models):
    fp32, _ = extract(models["bert"], SINGLE, layers="-1")
    bf16, _ = extract(models["bert"], SINGLE, layers="-1", precision="bf16")
    for a, b in zip(fp32, bf16):
        assert b.values.dtype == np.float32
        assert np.abs(a.values - b.values).max() < 0.15


# -- inputs -----------------------------------------------------------------------------------


def test_input_formats_text_pairs_tokens_jsonl_and_gzip(tmp_path):
    plain = tmp_path / "in.txt"
    plain.write_text("a b ||| c d\n\n  spaced   words  \n", encoding="utf-8")
    got = list(iter_records(str(plain)))
    assert [(r.text_a, r.text_b) for r in got] == [("a b", "c d"), ("", None), ("spaced   words", None)]
    tokens = list(iter_records(str(plain), "tokens"))
    assert tokens[0].text_b is None and tokens[0].text_a == "a b ||| c d" and tokens[2].text_a == "spaced words"
    lines = tmp_path / "in.jsonl.gz"
    with gzip.open(lines, "wt", encoding="utf-8") as handle:
        handle.write('{"text": "one", "text_b": "two"}\n\n{"text": ["New", "York", "."], "id": 3}\n')
    got = list(iter_records(str(lines)))
    assert [(r.index, r.line, r.text_a, r.text_b) for r in got] == [(0, 1, "one", "two"), (1, 3, "New York .", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": ["two words"]}\n', encoding="utf-8")
    with pytest.raises(PtmError, match="bad.jsonl:1"):
        list(iter_records(str(bad)))


# -- output formats through the command line ------------------------------------------------


def _google_line(index: int, tokens: list[str], layers: dict[int, np.ndarray]) -> str:
    """What google-research/bert's extract_features.py writes for one example (its algorithm, restated)."""
    features = []
    for i, token in enumerate(tokens):
        all_layers = []
        for label, values in layers.items():
            entry = OrderedDict()
            entry["index"] = label
            entry["values"] = [round(float(x), 6) for x in values[i : i + 1].flat]
            all_layers.append(entry)
        feature = OrderedDict()
        feature["token"] = token
        feature["layers"] = all_layers
        features.append(feature)
    line = OrderedDict()
    line["linex_index"] = index
    line["features"] = features
    return json.dumps(line) + "\n"


def test_jsonl_is_byte_for_byte_google_bert_layout(models, ckpts, tmp_path, capsys):
    model = models["bert"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    code, out, err = ptm(capsys, "extract-features", "-c", ckpts["bert"], source, "-o", "-", "--layers", "-1,-2",
                         "--batch-size", "1", "--no-progress")
    assert code == 0, err
    expected = []
    for index, text in enumerate(TEXTS[:3]):
        ids, types = _bert_inputs(model, *text.split(" ||| "))
        with torch.no_grad():
            _, states = model.model.bert(ids, types, None, output_hidden_states=True)
        tokens = model.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        expected.append(_google_line(index, tokens, {-1: states[-1][0].numpy(), -2: states[-2][0].numpy()}))
    assert out == "".join(expected)
    assert "3 texts" in err


def test_hdf5_has_allennlp_elmo_layout(ckpts, tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    source = tmp_path / "in.txt"
    source.write_text("New York is big .\nA b\n", encoding="utf-8")
    out = tmp_path / "elmo.hdf5"
    code, _, err = ptm(capsys, "extract-features", "-c", ckpts["elmo"], source, "--input-format", "tokens", "--words", "first",
                       "-o", out, "--no-progress")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["0", "1", "sentence_to_index"]
        assert f["0"].shape == (3, 5, 32) and f["1"].shape == (3, 2, 32) and f["0"].dtype == np.float32
        assert json.loads(f["sentence_to_index"][0]) == {"New York is big .": "0", "A b": "1"}
    code, _, err = ptm(capsys, "extract-features", "-c", ckpts["elmo"], source, "--combine", "mean", "-o", out, "--overwrite", "--no-progress")
    assert code == 0, err
    with h5py.File(out, "r") as f:
        assert f["0"].ndim == 2


def test_arrow_shards_and_pooled_arrays_hold_the_same_vectors_as_jsonl(ckpts, tmp_path, capsys):
    import pyarrow as pa
    from safetensors.numpy import load_file

    source = tmp_path / "in.txt"
    source.write_text("\n".join(SINGLE) + "\n", encoding="utf-8")
    common = ["extract-features", "-c", ckpts["gpt"], source, "--layers", "-1,-3", "--no-progress"]
    assert ptm(capsys, *common, "-o", tmp_path / "f.jsonl")[0] == 0
    assert ptm(capsys, *common, "-o", tmp_path / "shards")[0] == 0
    assert ptm(capsys, *common, "--pool", "mean", "-o", tmp_path / "p.npy")[0] == 0
    assert ptm(capsys, *common, "--pool", "mean", "--combine", "mean", "-o", tmp_path / "p.safetensors")[0] == 0
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["format"] == "ptm-shards" and manifest["kind"] == "features" and manifest["rows"] == len(SINGLE)
    assert manifest["features"]["layers"] == [-1, -3] and manifest["features"]["dim"] == 32
    table = pa.ipc.open_stream(tmp_path / "shards" / manifest["shards"][0]["file"]).read_all()
    pooled = np.load(tmp_path / "p.npy")
    mixed = load_file(str(tmp_path / "p.safetensors"))["features"]
    assert pooled.shape == (len(SINGLE), 2, 32) and mixed.shape == (len(SINGLE), 32)
    for i, line in enumerate(lines):
        per_token = np.array([[layer["values"] for layer in f["layers"]] for f in line["features"]]).reshape(-1, 2, 32)
        row = np.array(table.column("features")[i].as_py(), dtype=np.float32).reshape(-1, 2, 32)
        assert table.column("tokens")[i].as_py() == [f["token"] for f in line["features"]]
        assert table.column("index")[i].as_py() == line["linex_index"] == i
        np.testing.assert_allclose(row, per_token, atol=1e-6)
        if len(row):
            np.testing.assert_allclose(pooled[i], row.mean(0), atol=1e-5)
            np.testing.assert_allclose(mixed[i], row.mean((0, 1)), atol=1e-5)


def test_stdin_streams_to_stdout(ckpts, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "hello there"}\n{"text": "again"}\n')))
    code, out, err = ptm(capsys, "extract-features", "-c", ckpts["bert"], "-o", "-", "--pool", "cls", "--layers", "-1", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["linex_index"] for r in rows] == [0, 1] and len(rows[0]["layers"][0]["values"]) == 32


# -- errors: one line, exit 2, nothing left behind ------------------------------------------


def test_user_errors_are_one_line_and_leave_no_output(ckpts, tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.txt"
    source.write_bytes(b"fine line\n" * 30 + b"bad \xff byte\n")
    run = ["extract-features", "-c", ckpts["bert"], source, "--no-progress", "--chunk-size", "8"]
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "x.jsonl")
    assert code == 2 and "in.txt:31" in err and "UTF-8" in err
    assert list(tmp_path.iterdir()) == [source]
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "x.npy")
    assert code == 2 and "--pool" in err
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "x.jsonl", "--layers", "-1,x")
    assert code == 2 and "--layers" in err
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "x.jsonl", "--part", "generator")
    assert code == 2 and "--part generator: a bert checkpoint is one network" in err and len(err.strip().splitlines()) == 1
    existing = tmp_path / "exists.jsonl"
    existing.write_text("keep\n")
    code, _, err = ptm(capsys, *run, "-o", existing)
    assert code == 2 and "--overwrite" in err and existing.read_text() == "keep\n"
    monkeypatch.setitem(sys.modules, "h5py", None)
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "x.h5")
    assert code == 2 and "ptm[hdf5]" in err


def test_missing_output_directories_are_created(ckpts, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("fine line\n", encoding="utf-8")
    run = ["extract-features", "-c", ckpts["bert"], source, "--no-progress", "--layers", "-1"]
    for target in ("feats/a/x.jsonl", "feats/b/x.npy", "feats/c/shards"):
        extra = ["--pool", "mean"] if target.endswith(".npy") else []
        code, _, err = ptm(capsys, *run, *extra, "-o", tmp_path / target)
        assert code == 0, err
        assert (tmp_path / target).exists()
    (tmp_path / "blocker").write_text("a file")
    code, _, err = ptm(capsys, *run, "-o", tmp_path / "blocker" / "x.jsonl")
    assert code == 2 and "blocker is a file" in err


# -- real data ------------------------------------------------------------------------------


def test_real_conll_words_align_with_their_tags(ckpts, tmp_path, capsys):
    conll = shared_file("conll2003/valid.txt")
    sentences, words = [], []
    for line in conll.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
            words = []
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
        if len(sentences) == 40:
            break
    source = tmp_path / "conll.txt"
    source.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    code, _, err = ptm(capsys, "extract-features", "-c", ckpts["bert"], source, "--input-format", "tokens", "--words", "first",
                       "--layers", "-1", "-o", tmp_path / "conll", "--no-progress")
    assert code == 0, err
    import pyarrow as pa

    table = pa.ipc.open_stream(tmp_path / "conll" / "part-00000.arrow").read_all()
    assert table.column("tokens").to_pylist() == sentences
    assert [len(v) for v in table.column("features").to_pylist()] == [len(s) for s in sentences]


def test_a_reader_that_stops_early_ends_the_pipeline_quietly(ckpts, tmp_path):
    """`ptm extract-features ... -o - | head` exits 0 with nothing on stderr, as Unix tools do."""
    import subprocess

    source = tmp_path / "in.txt"
    source.write_text("the river flows past the old city walls\n" * 400, encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "ptmcli", "extract-features", "-c", str(ckpts["bert"]), str(source),
                                "-o", "-", "--layers", "-1", "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(process.stdout.read(100)) == 100
    process.stdout.close()  # what `head -c 100` does
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "error" not in err
