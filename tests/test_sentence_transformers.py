"""sentence-transformers directories: convert reads their pooling, extract-features gives encode()'s vectors.

The models are built here with the library itself (tiny random BERTs whose
tokenizer.json carries fixed padding and truncation, as published ones often
do), in both the current and the classic directory layout.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, run_cli_err

st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "it's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the film is strictly routine .",
    "a",
    # Longer than the model's max_seq_length: encode() cuts it, and so must ptm.
    " ".join(["the story of a man who walks across the country and back again"] * 6),
]


def _vocab(tmp: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from ptmcli.pretraining.sample import SAMPLE

    with open(SAMPLE, encoding="utf-8") as handle:
        lines = [line for line in islice(handle, 400) if not line.startswith("<")]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer.get_vocab()


def _published_bert(directory: Path, vocab: dict[str, int], seed: int = 0) -> None:
    """A transformers BERT directory whose tokenizer.json pads and truncates to 128, as published ones do."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=160)
    BertModel(config).save_pretrained(directory)
    BertTokenizerFast(vocab=vocab).save_pretrained(directory)
    path = directory / "tokenizer.json"
    described = json.loads(path.read_text(encoding="utf-8"))
    described["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
                            "pad_id": vocab["[PAD]"], "pad_type_id": 0, "pad_token": "[PAD]"}
    described["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
    path.write_text(json.dumps(described), encoding="utf-8")


def _sentence_model(base: Path, out: Path, pooling: str, normalize: bool, max_seq_length: int):
    import warnings

    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():  # the module path moved in 5.x; the old one still works everywhere
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers import models as st_models

    transformer = st_models.Transformer(str(base), max_seq_length=max_seq_length)
    modules = [transformer, st_models.Pooling(32, pooling_mode=pooling)]
    if normalize:
        modules.append(st_models.Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(out))
    return model


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> dict[str, int]:
    return _vocab(tmp_path_factory.mktemp("vocab"))


def _extract(capsys, checkpoint: Path, tmp_path: Path, *flags) -> tuple[np.ndarray, str]:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run_cli(capsys, "extract-features", "-c", checkpoint, source, "-o", out, "--overwrite", *flags)
    assert code == 0, err
    return np.load(out).reshape(len(SENTENCES), -1), err


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("max", True), ("lasttoken", False)])
def test_extract_features_by_default_gives_encodes_vectors(tmp_path, capsys, vocab, pooling, normalize):
    _published_bert(tmp_path / "base", vocab)
    model = _sentence_model(tmp_path / "base", tmp_path / "st", pooling, normalize, max_seq_length=40)
    expected = model.encode(SENTENCES, convert_to_numpy=True)

    code, err = run_cli_err(capsys, "convert", tmp_path / "st", tmp_path / "ptm")
    assert code == 0, err
    ptm_pool = {"lasttoken": "last"}.get(pooling, pooling)
    assert f"read modules.json ({ptm_pool} pooling" in err
    assert ("L2 normalisation" in err) == normalize
    config = json.loads((tmp_path / "ptm" / "config.json").read_text())
    assert config["sentence_embedding"] == {"pool": ptm_pool, "normalize": normalize, "max_seq_length": 40}

    vectors, err = _extract(capsys, tmp_path / "ptm", tmp_path)
    assert "as the sentence-transformers model was trained" in err
    assert vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    # Naming its pooling gives the same vectors.
    named, _ = _extract(capsys, tmp_path / "ptm", tmp_path, "--pool", ptm_pool)
    np.testing.assert_allclose(named, expected, atol=1e-5, rtol=0)


def test_classic_layout_and_round_trip_back_to_sentence_transformers(tmp_path, capsys, vocab):
    """Published models mostly use the classic files: pooling_mode_*_tokens flags, sentence_bert_config.json."""
    from sentence_transformers import SentenceTransformer

    classic = tmp_path / "classic"
    _published_bert(classic, vocab, seed=3)
    (classic / "1_Pooling").mkdir()
    (classic / "2_Normalize").mkdir()
    (classic / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (classic / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24, "do_lower_case": False}))
    (classic / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    expected = SentenceTransformer(str(classic), device="cpu").encode(SENTENCES, convert_to_numpy=True)

    assert run_cli_err(capsys, "convert", classic, tmp_path / "ptm")[0] == 0
    vectors, err = _extract(capsys, tmp_path / "ptm", tmp_path)
    assert "mean pooling, L2-normalised, at most 24 tokens" in err
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)

    code, err = run_cli_err(capsys, "convert", tmp_path / "ptm", tmp_path / "back", "--to", "hf")
    assert code == 0, err
    again = SentenceTransformer(str(tmp_path / "back"), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(again, expected, atol=1e-6, rtol=0)
    # The published tokenizer file travels unchanged, its padding settings included.
    assert json.loads((tmp_path / "back" / "tokenizer.json").read_text())["padding"]["strategy"] == {"Fixed": 128}


def test_other_choices_and_what_convert_cannot_carry(tmp_path, capsys, vocab):
    _published_bert(tmp_path / "base", vocab)
    _sentence_model(tmp_path / "base", tmp_path / "st", "mean", True, max_seq_length=40)
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    for i, module in enumerate(modules):
        module["idx"] = i
    (tmp_path / "st" / "modules.json").write_text(json.dumps(modules))
    code, err = run_cli_err(capsys, "convert", tmp_path / "st", tmp_path / "ptm")
    assert code == 0, err
    assert "2_Dense (Dense), 2_Normalize (Normalize) not converted" in err
    # A Dense layer between pooling and normalisation: the recorded default stops at the pooling.
    assert json.loads((tmp_path / "ptm" / "config.json").read_text())["sentence_embedding"]["normalize"] is False

    # Per-token vectors on request; words exclude the default pooling instead of clashing with it.
    source = tmp_path / "in.txt"
    source.write_text("the film is strictly routine .\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ptm", source, "-o", "-", "--pool", "none")
    assert code == 0, err
    tokens = [f["token"] for f in json.loads(out.splitlines()[0])["features"]]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[PAD]" not in tokens
    code, out, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ptm", source, "-o", "-", "--words", "first")
    assert code == 0, err
    assert len(json.loads(out.splitlines()[0])["features"]) == 6


def test_normalize_flag_errors_are_one_line(tmp_path, capsys, vocab):
    _published_bert(tmp_path / "base", vocab)
    assert run_cli_err(capsys, "convert", tmp_path / "base", tmp_path / "plain")[0] == 0
    source = tmp_path / "in.txt"
    source.write_text("a b c\n", encoding="utf-8")
    code, err = run_cli_err(capsys, "extract-features", "-c", tmp_path / "plain", source, "-o", tmp_path / "o.jsonl",
                            "--normalize")
    assert code == 2 and "--normalize scales pooled vectors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\na b c\t1\n", encoding="utf-8")
    code, err = run_cli_err(capsys, "extract-features", "-c", tmp_path / "plain", tsv, "-o", tmp_path / "feats",
                            "--task", "classification", "--pool", "mean", "--normalize")
    assert code == 2 and "--normalize with --task" in err and len(err.strip().splitlines()) == 1
    # A plain BERT keeps the old default: per-token vectors, no pooling.
    code, out, err = run_cli(capsys, "extract-features", "-c", tmp_path / "plain", source, "-o", "-", "--layers", "-1")
    assert code == 0 and "sentence-transformers" not in err
    assert "features" in json.loads(out.splitlines()[0])


def test_an_old_model_with_its_transformer_in_a_subdirectory(tmp_path, capsys, vocab):
    import shutil

    from sentence_transformers import SentenceTransformer

    _published_bert(tmp_path / "base", vocab, seed=5)
    model = _sentence_model(tmp_path / "base", tmp_path / "st", "cls", False, max_seq_length=32)
    expected = model.encode(SENTENCES, convert_to_numpy=True)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "st", old / "0_Transformer",
                    ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "README.md", "config_sentence_transformers.json"))
    shutil.copytree(tmp_path / "st" / "1_Pooling", old / "1_Pooling")
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (old / "modules.json").write_text(json.dumps(modules))
    np.testing.assert_allclose(SentenceTransformer(str(old), device="cpu").encode(SENTENCES), expected, atol=1e-6)

    code, err = run_cli_err(capsys, "convert", old, tmp_path / "ptm")
    assert code == 0, err
    vectors, _ = _extract(capsys, tmp_path / "ptm", tmp_path)
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
