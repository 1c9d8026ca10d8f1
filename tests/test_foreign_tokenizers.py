"""Published tokenizer directories (``tests/foreign_tokenizers.py``) through ptm's commands.

Every directory must tokenize exactly as ``transformers.AutoTokenizer`` does
(``add_special_tokens=False``), whatever padding and truncation its
tokenizer.json stores: no pads in ``tokenize show``, in shards, in features or
in finetuning inputs, and no text cut at the stored 128 tokens. Converting to
ptm and back keeps the files' settings.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli as ptm
from foreign_tokenizers import BUILDERS, PADDED_LENGTH, sample_paragraphs

transformers = pytest.importorskip("transformers")

TEXTS = [
    "The anarchist movement spread across Europe in the nineteenth century.",
    "Caf\u00e9 owners in Z\u00fcrich said ``hello'' to na\u00efve visitors, didn't they?",
    "COVID changed covid policy; [NEW] tokens and a <mask> appear here.",
    "  Leading and trailing   spaces, and tabs\tbetween words  ",
]
# Longer than the 128 tokens the padded tokenizer.json files truncate to, shorter than the
# 256 positions of the models below.
LONG = sample_paragraphs()[3]
BYTE_LEVEL = ("gpt2-files", "gpt2-padded", "roberta-padded")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    return {name: build(root) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (the directory with a tiny random transformers model saved beside its tokenizer
    files, the ptm checkpoint `ptm convert` made of it)."""
    root = tmp_path_factory.mktemp("converted")
    out = {}
    for name, directory in corpus.items():
        source = root / name
        shutil.copytree(directory, source)
        vocab = len(transformers.AutoTokenizer.from_pretrained(directory))
        torch.manual_seed(0)
        if name in BYTE_LEVEL:
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
                vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=256))
        else:
            model = transformers.BertForMaskedLM(transformers.BertConfig(
                vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=256))
        model.save_pretrained(source)
        _convert(source, root / f"{name}-ptm")
        out[name] = (source, root / f"{name}-ptm")
    return out


def _convert(source: Path, target: Path) -> None:
    """`ptm convert` outside a test's capsys (for module fixtures)."""
    from ptmcli.cli.main import main

    try:
        main(["convert", str(source), str(target)])
    except SystemExit as stop:
        assert not stop.code, f"ptm convert {source} {target} failed"


def hf_ids(directory: Path, texts: list[str], special: bool = False) -> list[list[int]]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return [tokenizer(text, add_special_tokens=special)["input_ids"] for text in texts]


def show_ids(capsys, tokenizer_dir: Path, texts: list[str]) -> list[list[int]]:
    code, out, err = ptm(capsys, "tokenize", "show", "--tokenizer", tokenizer_dir, "--json", *texts)
    assert code == 0, err
    return [json.loads(line)["ids"] for line in out.splitlines()]


def pad_id(directory: Path) -> int | None:
    return transformers.AutoTokenizer.from_pretrained(directory).pad_token_id


# -- tokenize show ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_show_gives_transformers_ids_with_no_pads_and_nothing_cut(corpus, capsys, name):
    directory = corpus[name]
    ids = show_ids(capsys, directory, [*TEXTS, LONG])
    assert ids == hf_ids(directory, [*TEXTS, LONG])
    assert len(ids[0]) < 40 and len(ids[-1]) > PADDED_LENGTH
    pad = pad_id(directory)
    assert pad is None or not any(pad in row for row in ids)


@pytest.mark.parametrize("name", BUILDERS)
def test_a_converted_checkpoint_tokenizes_as_its_source(converted, capsys, name):
    source, checkpoint = converted[name]
    assert show_ids(capsys, checkpoint, [*TEXTS, LONG]) == hf_ids(source, [*TEXTS, LONG])
    if (source / "tokenizer.json").is_file():
        # The checkpoint keeps the file as published: its stored padding and truncation too.
        original = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
        kept = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
        for key in ("padding", "truncation", "added_tokens", "post_processor", "normalizer", "pre_tokenizer"):
            assert kept[key] == original[key], key


def test_albert_text_steps_are_saved_with_the_checkpoint(converted):
    _, checkpoint = converted["albert"]
    config = json.loads((checkpoint / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["text_steps"] == ["quotes", "strip-accents", "lowercase"]
    assert (checkpoint / "tokenizer.model").is_file()


# -- tokenize encode ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_encoded_shards_hold_no_pads_and_whole_documents(corpus, tmp_path, capsys, name):
    from ptmcli.data.sentences import split_sentences
    from ptmcli.data.shards import ShardDataset

    documents = [[TEXTS[0], TEXTS[1] + " " + TEXTS[3]], [LONG, sample_paragraphs()[1]]]
    source = tmp_path / "in.txt"
    source.write_text("\n\n".join("\n".join(paragraphs) for paragraphs in documents) + "\n", encoding="utf-8")
    code, _, err = ptm(capsys, "tokenize", "encode", source, "--tokenizer", corpus[name], "-o", tmp_path / "shards",
                       "--workers", "1", "--no-progress")
    assert code == 0, err
    rows = list(ShardDataset.open(tmp_path / "shards"))
    assert len(rows) == len(documents)
    pad = pad_id(corpus[name])
    for row, paragraphs in zip(rows, documents, strict=True):
        sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
        expected = [t for ids in hf_ids(corpus[name], sentences) for t in ids]
        assert row.input_ids.tolist() == expected
        assert int(row.sentence_ends[-1]) == len(expected)
        assert pad is None or pad not in expected
    assert len(rows[1].input_ids) > 2 * PADDED_LENGTH


@pytest.mark.parametrize("name", ["albert", "bert-vocab", "gpt2-files"])
def test_pretraining_on_a_published_tokenizer_saves_a_checkpoint_that_tokenizes_alike(corpus, tmp_path, capsys, name):
    """Layouts without a tokenizer.json reach the checkpoint in ptm's layout, not as files it cannot read."""
    source = tmp_path / "in.txt"
    source.write_text("\n\n".join(sample_paragraphs()[:30]) + "\n", encoding="utf-8")
    assert ptm(capsys, "tokenize", "encode", source, "--tokenizer", corpus[name], "-o", tmp_path / "shards",
               "--workers", "1", "--no-progress")[0] == 0
    arch = "gpt" if name == "gpt2-files" else "bert"
    code, _, err = ptm(capsys, "pretrain", "--arch", arch, "--data", tmp_path / "shards", "--tokenizer", corpus[name],
                       "-o", tmp_path / "run", "--preset", f"{arch}-tiny", "--hidden-size", "32", "--num-heads", "2",
                       "--seq-len", "32", "--batch-size", "2", "--max-steps", "1", "--no-progress", "--threads", "1")
    assert code == 0, err
    assert show_ids(capsys, tmp_path / "run", TEXTS) == show_ids(capsys, corpus[name], TEXTS)


# -- extract-features ---------------------------------------------------------------------------


def _features(capsys, checkpoint: Path, texts: list[str], tmp_path: Path) -> list[dict]:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = ptm(capsys, "extract-features", "--checkpoint", checkpoint, source, "-o", tmp_path / "out.jsonl",
                       "--layers", "-1", "--batch-size", "2", "--no-progress")
    assert code == 0, err
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]


def test_bert_features_match_transformers_with_no_pads(converted, capsys, tmp_path):
    source, checkpoint = converted["bert-padded"]
    texts = [*TEXTS[:3], LONG]
    lines = _features(capsys, checkpoint, texts, tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.BertModel.from_pretrained(source).eval()
    for line, text in zip(lines, texts, strict=True):
        inputs = tokenizer(text, return_tensors="pt")  # [CLS] text [SEP], unpadded
        tokens = [feature["token"] for feature in line["features"]]
        assert tokens == tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        assert "[PAD]" not in tokens and tokens[-1] == "[SEP]"
        with torch.no_grad():
            expected = model(**inputs).last_hidden_state[0].numpy()
        values = np.array([feature["layers"][0]["values"] for feature in line["features"]])
        np.testing.assert_allclose(values, expected, atol=1e-5)
    assert len(lines[-1]["features"]) > PADDED_LENGTH


def test_albert_word_vectors_come_from_the_tokens_its_text_steps_give(converted, capsys, tmp_path):
    """--words aligns sub-tokens through offsets: they must be those of the lowercased, accent-free text."""
    _source, checkpoint = converted["albert"]
    texts = ["Caf\u00e9 Owners in Z\u00fcrich SAID hello", "The ANARCHIST movement"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    common = ["extract-features", "--checkpoint", checkpoint, source, "--layers", "-1", "--no-progress"]
    code, out, err = ptm(capsys, *common, "-o", "-", "--words", "first")
    assert code == 0, err
    per_word = [json.loads(line)["features"] for line in out.splitlines()]
    assert [[f["token"] for f in words] for words in per_word] == [t.split() for t in texts]
    code, out, err = ptm(capsys, *common, "-o", "-")
    assert code == 0, err
    per_token = [json.loads(line)["features"] for line in out.splitlines()]
    # Each word's vector is its first sub-token's: the same tokens plain extraction gives.
    for words, tokens in zip(per_word, per_token, strict=True):
        # A word starts at a piece with its own ▁, or right after a bare ▁ (which belongs to no word).
        pieces = [f["token"] for f in tokens]
        starts = [f for i, f in enumerate(tokens) if f["token"] != "\u2581"
                  and (f["token"].startswith("\u2581") or (i > 0 and pieces[i - 1] == "\u2581"))]
        assert len(starts) == len(words)
        for word, token in zip(words, starts, strict=True):
            assert word["layers"][0]["values"] == token["layers"][0]["values"]


def test_gpt2_features_match_transformers_with_no_pads(converted, capsys, tmp_path):
    source, checkpoint = converted["gpt2-padded"]
    texts = [*TEXTS[:3], LONG]
    lines = _features(capsys, checkpoint, texts, tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    model = transformers.GPT2Model.from_pretrained(source).eval()
    for line, text in zip(lines, texts, strict=True):
        # ptm's GPT framing: the end-of-text token first, as context only.
        ids = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        tokens = [feature["token"] for feature in line["features"]]
        assert tokens == tokenizer.convert_ids_to_tokens(ids[1:])
        assert tokenizer.pad_token not in tokens  # the padding token here is the end-of-text token
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([ids])).last_hidden_state[0, 1:].numpy()
        values = np.array([feature["layers"][0]["values"] for feature in line["features"]])
        np.testing.assert_allclose(values, expected, atol=1e-5)
    assert len(lines[-1]["features"]) > PADDED_LENGTH


# -- finetune and eval --------------------------------------------------------------------------


def test_finetune_and_eval_on_the_padded_bert_see_no_pads(converted, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    source, checkpoint = converted["bert-padded"]
    texts = [" ".join(text.split()) for text in [*TEXTS, *(p[:120] for p in sample_paragraphs()[:12])]]
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{text}\t{i % 2}\n" for i, text in enumerate(texts)),
                    encoding="utf-8")
    run = tmp_path / "run"
    code, _, err = ptm(capsys, "finetune", "--checkpoint", checkpoint, "--task", "classification", "--train", data,
                       "--dev", data, "-o", run, "--max-steps", "2", "--batch-size", "4", "--threads", "1",
                       "--no-progress")
    assert code == 0, err
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert 0.0 <= results["best"]["accuracy"] <= 1.0

    # The finetuned model's own inputs: [CLS] text [SEP], nothing after.
    code, _, err = ptm(capsys, "extract-features", "--checkpoint", run / "best", data, "--task", "classification",
                       "-o", tmp_path / "inputs.jsonl", "--layers", "-1", "--no-progress")
    assert code == 0, err
    lines = (tmp_path / "inputs.jsonl").read_text(encoding="utf-8").splitlines()
    expected = hf_ids(source, texts, special=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    for line, ids in zip(lines, expected, strict=True):
        assert [f["token"] for f in json.loads(line)["features"]] == tokenizer.convert_ids_to_tokens(ids)

    code, out, err = ptm(capsys, "eval", "--checkpoint", run / "best", "--data", data, "--json", "--threads", "1",
                         "--no-progress")
    assert code == 0, err
    metrics = json.loads(out)
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), metrics


@pytest.mark.parametrize("name", ["bert-padded", "gpt2-padded"])
def test_eval_counts_the_text_tokens_only(converted, capsys, tmp_path, name):
    from ptmcli.data.sentences import split_sentences

    source, checkpoint = converted[name]
    data = tmp_path / "text.txt"
    data.write_text(f"{TEXTS[0]}\n{LONG}\n", encoding="utf-8")
    args = ["--no-pseudo-perplexity"] if name.startswith("bert") else []
    code, out, err = ptm(capsys, "eval", "--checkpoint", checkpoint, "--data", data, "--json", "--threads", "1",
                         "--no-progress", *args)
    assert code == 0, err
    metrics = json.loads(out)
    sentences = [s for line in (TEXTS[0], LONG) for s in split_sentences(line)]
    assert metrics["text_tokens"] == sum(map(len, hf_ids(source, sentences)))
    loss = metrics["mlm_loss" if name.startswith("bert") else "loss"]
    assert math.isfinite(loss) and loss > 0


# -- back to transformers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_round_trip_through_ptm_keeps_ids_and_the_published_settings(converted, capsys, tmp_path, name):
    source, checkpoint = converted[name]
    code, _, err = ptm(capsys, "convert", checkpoint, tmp_path / "hf", "--to", "hf")
    assert code == 0, err
    texts = [*TEXTS, LONG]
    for special in (False, True):
        assert hf_ids(tmp_path / "hf", texts, special) == hf_ids(source, texts, special), special
    if (source / "tokenizer.json").is_file():
        original = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
        exported = json.loads((tmp_path / "hf" / "tokenizer.json").read_text(encoding="utf-8"))
        for key in ("padding", "truncation", "added_tokens", "post_processor"):
            assert exported[key] == original[key], key
    code, _, err = ptm(capsys, "convert", tmp_path / "hf", tmp_path / "back")
    assert code == 0, err
    assert show_ids(capsys, tmp_path / "back", texts) == hf_ids(source, texts)


# -- what transformers rebuilds from tokenizer_config.json, and what ptm refuses ----------------


def _variant(source: Path, target: Path, config: dict | None = None, tokenizer_json: dict | None = None) -> Path:
    shutil.copytree(source, target)
    if config is not None:
        path = target / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **config}), encoding="utf-8")
    if tokenizer_json is not None:
        path = target / "tokenizer.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **tokenizer_json}), encoding="utf-8")
    return target


def test_bert_lowercasing_follows_tokenizer_config_as_in_transformers(corpus, capsys, tmp_path):
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    # The file's normalizer lowercases; BertTokenizer rebuilds it from do_lower_case.
    directory = _variant(corpus["bert-padded"], tmp_path / "cased", config={"do_lower_case": False})
    ids = show_ids(capsys, directory, TEXTS)
    assert ids == hf_ids(directory, TEXTS) and ids != hf_ids(corpus["bert-padded"], TEXTS)
    saved = json.loads(PtmTokenizer.load(directory).model_file_bytes())
    assert saved["normalizer"]["lowercase"] is False and saved["padding"]["strategy"] == {"Fixed": PADDED_LENGTH}


def test_gpt2_prefix_space_follows_tokenizer_config_as_in_transformers(corpus, capsys, tmp_path):
    published = json.loads((corpus["gpt2-padded"] / "tokenizer.json").read_text(encoding="utf-8"))
    pre_tokenizer = {**published["pre_tokenizer"], "add_prefix_space": True}
    directory = _variant(corpus["gpt2-padded"], tmp_path / "prefix",
                         tokenizer_json={"pre_tokenizer": pre_tokenizer, "normalizer": {"type": "Lowercase"}})
    assert show_ids(capsys, directory, TEXTS) == hf_ids(directory, TEXTS)


@pytest.mark.parametrize("config", [{"do_lower_case": False}, {"keep_accents": True}])
def test_albert_keys_decide_its_text_steps(corpus, capsys, tmp_path, config):
    directory = _variant(corpus["albert"], tmp_path / "albert", config=config)
    assert show_ids(capsys, directory, TEXTS) == hf_ids(directory, TEXTS)


def test_a_sentencepiece_model_without_a_class_honours_do_lower_case(corpus, capsys, tmp_path):
    import sentencepiece

    directory = tmp_path / "plain"
    directory.mkdir()
    shutil.copyfile(corpus["albert"] / "spiece.model", directory / "sentencepiece.bpe.model")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    model = sentencepiece.SentencePieceProcessor(model_file=str(directory / "sentencepiece.bpe.model"))
    assert show_ids(capsys, directory, TEXTS) == [model.encode(text.lower()) for text in TEXTS]


@pytest.mark.parametrize("name,config,message", [
    ("albert", {"tokenizer_class": "XLMRobertaTokenizer"},
     r"tokenizer_config.json: tokenizer_class XLMRobertaTokenizer: ptm cannot tokenize spiece.model as XLMRobertaTokenizer"),
    ("gpt2-files", {"tokenizer_class": "OpenAIGPTTokenizer"},
     r"tokenizer_config.json: tokenizer_class OpenAIGPTTokenizer: ptm reads vocab.json \+ merges.txt as GPT-2's"),
    ("bert-vocab", {"tokenizer_class": "BertJapaneseTokenizer"},
     r"tokenizer_config.json: tokenizer_class BertJapaneseTokenizer: ptm reads vocab.txt as BERT's WordPiece"),
    ("bert-padded", {"added_tokens_decoder": {"1000": {"content": "[OLD]", "special": True}}},
     r"tokenizer_config.json: added_tokens_decoder gives id 1000 to '\[OLD\]', but tokenizer.json gives it to '\[NEW\]'"),
    ("albert", {"add_prefix_space": False}, r"tokenizer_config.json: add_prefix_space false is not supported"),
])
def test_what_transformers_would_tokenize_differently_is_refused(corpus, capsys, tmp_path, name, config, message):
    directory = _variant(corpus[name], tmp_path / name, config=config)
    code, out, err = ptm(capsys, "tokenize", "show", "--tokenizer", directory, "a text")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
