"""Word vectors: the file formats, the similarity and analogy probes of ``ptm eval``, and vector files in ``ptm convert``.

Vectors are built here with known answers (planted analogies, cosines in a
known order); gensim and scipy, when installed, are the references for the
file formats, 3CosAdd and Spearman's rho. The real test sets in
``../shared/data/word-similarity`` are used when present.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, shared_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.checkpoint.loading import load_checkpoint
from ptmcli.errors import PtmError
from ptmcli.evaluation.contextual_words import split_off_punctuation
from ptmcli.static.analogy import EPSILON, evaluate_analogies, read_analogies
from ptmcli.static.similarity import read_similarity_pairs
from ptmcli.static.vector_files import (
    GLOVE,
    WORD2VEC_BINARY,
    WORD2VEC_TEXT,
    read_vectors,
    write_vectors,
)
from ptmcli.static.word_table import WordTable
from ptmcli.tasks.metrics import spearman

WORD_SIMILARITY = "word-similarity"


def vectors_file(path: Path, words: list[str], matrix: np.ndarray, fmt: str = WORD2VEC_TEXT) -> Path:
    write_vectors(path, words, np.asarray(matrix, dtype=np.float32), fmt)
    return path


def eval_json(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, "eval", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def fails_in_one_line(capsys, *args) -> str:
    code, out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ptm: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- Spearman ------------------------------------------------------------------------------------------


def test_spearman_equals_scipy_on_random_data_and_on_ties():
    stats = pytest.importorskip("scipy.stats", reason="scipy is the reference for Spearman's rho")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.normal(size=50), rng.normal(size=50)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        ties_x, ties_y = rng.integers(0, 5, size=40), rng.integers(0, 3, size=40) + 0.5 * rng.integers(0, 2, size=40)
        assert spearman(ties_x, ties_y) == pytest.approx(stats.spearmanr(ties_x, ties_y).statistic, abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)


# -- similarity ----------------------------------------------------------------------------------------


def _angle_vectors(angles_degrees: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """Words as unit vectors in a plane at the given angles: cosines are known exactly."""
    words = list(angles_degrees)
    radians = np.radians([angles_degrees[w] for w in words])
    return words, np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1)


def test_similarity_on_hand_built_vectors_counts_oov_and_matches_the_cosines(tmp_path, capsys):
    words, matrix = _angle_vectors({"car": 0, "automobile": 10, "truck": 40, "banana": 100, "Paris": 170})
    vectors = vectors_file(tmp_path / "v.txt", words, matrix)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# a comment\n# word1\tword2\tscore\ncar\tautomobile\t9.5\ncar\ttruck\t6\n"
                     "car\tbanana\t1.5\nautomobile\tbanana\t1.0\nPARIS\tcar\t0.5\ncar\tzeppelin\t4\n", encoding="utf-8")
    result = eval_json(capsys, "-c", vectors, "--probe", "similarity", "--data", pairs)
    # The vocabulary has an uppercase word: lookups are exact, so PARIS and zeppelin are missing.
    assert (result["pairs"], result["oov_pairs"], result["scored_pairs"]) == (6, 2, 4)
    assert result["lowercased"] is False and result["oov_words"] == 2
    # Angles 10, 40, 100 and 90 degrees for gold 9.5, 6, 1.5 and 1.0: ranks 4 3 1 2 against 4 3 2 1, rho 0.8.
    assert result["spearman"] == pytest.approx(0.8)
    lowered = eval_json(capsys, "-c", vectors, "--probe", "similarity", "--data", pairs, "--lowercase")
    assert lowered["lowercased"] is True and lowered["oov_pairs"] == 1  # rows are matched lowercased too: PARIS is Paris


def test_similarity_lowercases_by_default_for_a_lowercase_vocabulary(tmp_path):
    words, matrix = _angle_vectors({"paris": 0, "france": 20, "tokyo": 90})
    table = WordTable(words, matrix)
    assert table.lowercase and table.rows(["Paris", "FRANCE", "Tokyo", "berlin"]) == [0, 1, 2, None]
    assert not WordTable(["Paris", "france"], matrix[:2]).lowercase
    assert WordTable(["[CLS]", "paris"], matrix[:2], specials=["[CLS]"]).lowercase


def test_similarity_reads_the_published_layouts(tmp_path):
    full = tmp_path / "SimLex-999.txt"
    full.write_text("word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\n"
                    "old\tnew\tA\t1.58\t2.72\t2.81\nsmart\tintelligent\tA\t9.2\t1.75\t2.46\n", encoding="utf-8")
    data = read_similarity_pairs(full)
    assert data.score_column == "SimLex999"
    assert [(p.first, p.second, p.score, p.line) for p in data.pairs] == [("old", "new", 1.58, 2), ("smart", "intelligent", 9.2, 3)]
    spaced = tmp_path / "men.txt"
    spaced.write_text("sun sunlight 50.0\n\nautomobile car 50\n", encoding="utf-8")
    assert [p.score for p in read_similarity_pairs(spaced).pairs] == [50.0, 50.0]


def test_similarity_gets_vectors_from_the_missing_word_hook(tmp_path):
    words, matrix = _angle_vectors({"car": 0, "truck": 30, "banana": 100})

    class Subwords(WordTable):
        builds_missing = True

        def missing_vector(self, word):
            return self.vectors[0] if word == "cars" else None

    pairs = tmp_path / "p.tsv"
    pairs.write_text("cars\ttruck\t8\ncar\tbanana\t1\ncar\tkiwi\t2\n", encoding="utf-8")
    from ptmcli.static.similarity import evaluate_similarity

    result = evaluate_similarity(read_similarity_pairs(pairs), Subwords(words, matrix))
    assert (result["oov_pairs"], result["built_vectors"], result["spearman"]) == (1, 1, pytest.approx(1.0))


# -- analogies -----------------------------------------------------------------------------------------


def _planted(distractors: int = 50, dim: int = 64, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """king - man + woman = queen exactly (and the like), among random distractors."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    royal, common, male, female, capital_of, greece, japan = (basis[i] for i in range(7))
    athens, tokyo = capital_of + greece, capital_of + japan
    planted = {"king": royal + male, "queen": royal + female, "man": common + male, "woman": common + female,
               "athens": athens, "greece": greece, "tokyo": tokyo, "japan": japan}
    words = list(planted) + [f"noise{i}" for i in range(distractors)]
    matrix = np.concatenate([np.stack(list(planted.values())), rng.normal(size=(distractors, dim)) * 0.1])
    return words, matrix


def _questions(path: Path, sections: dict[str, list[str]]) -> Path:
    path.write_text("".join(f": {name}\n" + "".join(f"{q}\n" for q in qs) for name, qs in sections.items()), encoding="utf-8")
    return path


def test_analogy_finds_planted_answers_with_both_methods(tmp_path, capsys):
    words, matrix = _planted()
    vectors = vectors_file(tmp_path / "planted.txt", words, matrix)
    questions = _questions(tmp_path / "q.txt", {
        "family": ["man woman king queen", "woman man queen king", "king queen man woman"],
        "capital-world": ["athens greece tokyo japan", "Tokyo Japan Athens Greece"],
        "gram8-plural": ["man king woman queen"],
    })
    result = eval_json(capsys, "-c", vectors, "--probe", "analogy", "--data", questions)
    assert (result["questions"], result["skipped"], result["answered"]) == (6, 0, 6)
    assert (result["semantic_questions"], result["syntactic_questions"]) == (5, 1)
    for method in ("3cosadd", "3cosmul"):
        assert result[method]["accuracy"] == 1.0 and result[method]["correct"] == 6
        assert result[method]["semantic_accuracy"] == 1.0 and result[method]["syntactic_accuracy"] == 1.0
    assert [s["section"] for s in result["sections"]] == ["family", "capital-world", "gram8-plural"]


def test_analogy_never_answers_with_a_question_word(tmp_path):
    # With a = b the 3CosAdd target is c itself: king would win unless excluded; queen (cosine 0.5) is next.
    words, matrix = _planted()
    data = read_analogies(_questions(tmp_path / "q.txt", {"s": ["man man king queen"]}))
    result = evaluate_analogies(data, WordTable(words, matrix))
    assert result["3cosadd"]["correct"] == 1


def test_3cosadd_agrees_with_gensim_and_3cosmul_with_its_formula(tmp_path):
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)]
    matrix = rng.normal(size=(300, 16)).astype(np.float32)
    questions = [tuple(f"w{i}" for i in rng.choice(120, size=4, replace=False)) for _ in range(200)]
    path = _questions(tmp_path / "q.txt", {"random": [" ".join(q) for q in questions]})
    table = WordTable(words, matrix)
    restrict = 100  # questions with a word beyond the first 100 are skipped
    result = evaluate_analogies(read_analogies(path), table, restrict)
    unit = matrix[:restrict] / np.linalg.norm(matrix[:restrict], axis=1, keepdims=True)
    index = {w: i for i, w in enumerate(words)}
    answered = [q for q in questions if all(index[w] < restrict for w in q)]
    assert result["skipped"] == len(questions) - len(answered) and result["answered"] == len(answered) > 20
    expected = {"3cosadd": 0, "3cosmul": 0}
    for a, b, c, d in answered:
        cos = {w: unit @ unit[index[w]] for w in (a, b, c)}
        scores = {"3cosadd": cos[b] - cos[a] + cos[c],
                  "3cosmul": (cos[b] + 1) / 2 * (cos[c] + 1) / 2 / ((cos[a] + 1) / 2 + EPSILON)}
        for method, score in scores.items():
            score[[index[a], index[b], index[c]]] = -np.inf
            expected[method] += int(np.argmax(score)) == index[d]
    assert {m: result[m]["correct"] for m in expected} == expected
    gensim = pytest.importorskip("gensim", reason="gensim is the reference for 3CosAdd")
    kv = gensim.models.KeyedVectors(16)
    kv.add_vectors(words, matrix)
    agree = sum(kv.most_similar(positive=[b, c], negative=[a], topn=1, restrict_vocab=restrict)[0][0] == d
                for a, b, c, d in answered)
    assert agree == result["3cosadd"]["correct"]


def test_analogy_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "q.txt"
    bad.write_text(": s\na b c d\na b c\n", encoding="utf-8")
    with pytest.raises(PtmError, match=r"q\.txt:3: expected four words"):
        read_analogies(bad)


# -- vector files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [WORD2VEC_TEXT, WORD2VEC_BINARY, GLOVE])
def test_vector_files_round_trip_and_load_in_gensim(tmp_path, fmt):
    rng = np.random.default_rng(1)
    words = ["</s>", "the", "Café", "中文", "naïve", "x"] + [f"w{i}" for i in range(3000)]
    matrix = rng.normal(size=(len(words), 7)).astype(np.float32)
    path = vectors_file(tmp_path / "v", words, matrix, fmt)
    back = read_vectors(path)
    assert back.format == fmt and back.words == words
    np.testing.assert_array_equal(back.vectors, matrix)
    limited = read_vectors(path, limit=4)
    assert limited.words == words[:4] and limited.vectors.shape == (4, 7)
    gzipped = tmp_path / "v.gz"
    gzipped.write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(read_vectors(gzipped).vectors, matrix)
    gensim = pytest.importorskip("gensim", reason="gensim is the reference reader")
    loaded = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=fmt == WORD2VEC_BINARY, no_header=fmt == GLOVE)
    assert list(loaded.index_to_key) == words
    np.testing.assert_array_equal(loaded.vectors, matrix)


def test_files_gensim_writes_are_read_exactly(tmp_path):
    gensim = pytest.importorskip("gensim", reason="gensim writes the reference files")
    rng = np.random.default_rng(2)
    kv = gensim.models.KeyedVectors(5)
    kv.add_vectors(["a", "b", "Ünïcode", "d"], rng.normal(size=(4, 5)).astype(np.float32))
    for binary in (False, True):
        path = tmp_path / f"g{binary}"
        kv.save_word2vec_format(str(path), binary=binary)
        back = read_vectors(path)
        assert back.format == (WORD2VEC_BINARY if binary else WORD2VEC_TEXT) and back.words == list(kv.index_to_key)
        np.testing.assert_allclose(back.vectors, kv.vectors, rtol=0, atol=0 if binary else 1e-6)


def test_a_word_with_spaces_in_a_glove_row_keeps_its_numbers(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 1 2 3\n. . . 4 5 6\nend 7 8 9\n", encoding="utf-8")
    back = read_vectors(path)
    assert back.words == ["the", ". . .", "end"] and back.vectors[1].tolist() == [4, 5, 6]


def test_a_fasttext_bin_model_is_refused_with_a_pointer_to_the_vec_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes((793712314).to_bytes(4, "little") + (12).to_bytes(4, "little") + bytes(64))
    with pytest.raises(PtmError, match=r"fastText \.bin model.*\.vec"):
        read_vectors(path)


def test_a_fasttext_bin_converts_with_its_ngrams_and_gives_gensims_vectors(tmp_path, capsys):
    """gensim's FastText as the reference: ptm's words and unseen words get gensim's vectors (its hashing and
    averaging are fastText's), read from the .bin gensim writes and through ptm eval."""
    gensim = pytest.importorskip("gensim", reason="gensim writes the reference fastText model")
    from gensim.models.fasttext import save_facebook_model

    from ptmcli.evaluation.token_words import TokenWordTable
    from ptmcli.static.similarity import cosine
    from ptmcli.tasks.metrics import pearson

    rng = np.random.default_rng(0)
    words = ["walking", "talking", "baking", "making", "zebra", "zeppelin", "zenith", "zero", "über", "naïve"]
    sentences = [[words[i] for i in rng.integers(len(words), size=8)] for _ in range(200)]
    model = gensim.models.FastText(sentences, vector_size=16, window=3, min_count=1, min_n=3, max_n=5, bucket=3000,
                                   epochs=2, workers=1, seed=1)
    save_facebook_model(model, str(tmp_path / "model.bin"))
    code, _out, err = run_cli(capsys, "convert", tmp_path / "model.bin", tmp_path / "ckpt")
    assert code == 0, err

    loaded = load_checkpoint(tmp_path / "ckpt")
    assert {k: loaded.config["model"][k] for k in ("buckets", "min_n", "max_n", "ngram_hash")} == \
        {"buckets": 3000, "min_n": 3, "max_n": 5, "ngram_hash": "fnv1a32"}
    table = TokenWordTable(loaded.tokenizer, loaded.family.input_embeddings(loaded.model).detach().numpy(), None,
                           loaded.family.subwords(loaded.model))
    for word in words:
        np.testing.assert_allclose(table.vectors[table.rows([word])[0]], model.wv[word], atol=1e-5)
    unseen = ["walked", "zebras", "übel", "naïveté", "baker"]
    assert table.rows(unseen) == [None] * len(unseen)
    for word in unseen:
        np.testing.assert_allclose(table.missing_vector(word), model.wv[word], atol=1e-5)

    pairs = [("walked", "walking", 9), ("zebras", "zebra", 8), ("übel", "über", 6), ("baker", "zero", 2),
             ("naïveté", "talking", 1), ("making", "zenith", 3)]
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs), encoding="utf-8")
    result = eval_json(capsys, "-c", tmp_path / "ckpt", "--probe", "similarity", "--data", tmp_path / "pairs.tsv")
    assert (result["oov_pairs"], result["built_vectors"]) == (0, 5)
    expected = pearson([s for _, _, s in pairs], [cosine(model.wv[a], model.wv[b]) for a, b, _ in pairs])
    assert result["pearson"] == pytest.approx(expected, abs=1e-5)

    # --to word2vec writes the words' vectors alone; read back, they are gensim's.
    code, _out, err = run_cli(capsys, "convert", tmp_path / "ckpt", tmp_path / "words.vec", "--to", "word2vec")
    assert code == 0, err
    back = read_vectors(tmp_path / "words.vec")
    assert sorted(back.words) == sorted(words)
    np.testing.assert_allclose(back.vectors[back.words.index("zebra")], model.wv["zebra"], atol=1e-5)


def test_a_truncated_fasttext_bin_is_one_line(tmp_path, capsys):
    gensim = pytest.importorskip("gensim", reason="gensim writes the fastText model")
    from gensim.models.fasttext import save_facebook_model

    model = gensim.models.FastText([["a", "b", "c"]] * 5, vector_size=4, min_count=1, bucket=100, epochs=1, workers=1)
    save_facebook_model(model, str(tmp_path / "model.bin"))
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    line = fails_in_one_line(capsys, "convert", tmp_path / "cut.bin", tmp_path / "ckpt")
    assert "cut.bin" in line and "truncated" in line
    assert not (tmp_path / "ckpt").exists()


# -- bad input through the command line -----------------------------------------------------------------


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    words, matrix = _angle_vectors({"car": 0, "truck": 30, "banana": 100})
    good = vectors_file(tmp_path / "good.vec", words, matrix)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("car\ttruck\t8\ncar\tbanana\n", encoding="utf-8")
    assert "pairs.tsv:2: expected two words and a score" in fails_in_one_line(capsys, "eval", "-c", good, "--probe", "similarity", "--data", pairs)
    pairs.write_text("car\ttruck\t8\ncar\tbanana\tvery\n", encoding="utf-8")
    assert "pairs.tsv:2:" in fails_in_one_line(capsys, "eval", "-c", good, "--probe", "similarity", "--data", pairs)
    pairs.write_text("car\ttruck\t8\n", encoding="utf-8")

    count = tmp_path / "count.vec"
    count.write_text("3 3\ncar 1 0 0\ntruck 0 1 0\n", encoding="utf-8")
    assert "count.vec:4: the file ends after 2 of the 3 vectors" in fails_in_one_line(
        capsys, "eval", "-c", count, "--probe", "similarity", "--data", pairs)
    width = tmp_path / "width.vec"
    width.write_text("2 3\ncar 1 0 0\ntruck 0 1\n", encoding="utf-8")
    assert "width.vec:3: 2 numbers where the header says 3" in fails_in_one_line(
        capsys, "eval", "-c", width, "--probe", "similarity", "--data", pairs)
    glove = tmp_path / "glove.txt"
    glove.write_text("car 1 0 0\ntruck 0 1 0 5\n", encoding="utf-8")
    assert "glove.txt:2: 4 numbers where the first row has 3" in fails_in_one_line(
        capsys, "eval", "-c", glove, "--probe", "similarity", "--data", pairs)
    assert "glove.txt:2:" in fails_in_one_line(capsys, "convert", glove, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert "applies to --probe" in fails_in_one_line(capsys, "eval", "-c", good, "--data", pairs, "--restrict", "10")
    assert "--restrict applies to --probe analogy" in fails_in_one_line(
        capsys, "eval", "-c", good, "--probe", "similarity", "--data", pairs, "--restrict", "10")
    assert "needs --data" in fails_in_one_line(capsys, "eval", "-c", good, "--probe", "analogy")
    assert "static vectors" in fails_in_one_line(capsys, "eval", "-c", good, "--probe", "similarity", "--data", pairs,
                                                 "--contextual-from", pairs)
    assert "converts to ptm or word2vec" in fails_in_one_line(capsys, "convert", good, tmp_path / "o", "--to", "hf")


# -- ptm convert ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [WORD2VEC_TEXT, WORD2VEC_BINARY, GLOVE])
def test_convert_a_vector_file_to_a_checkpoint_and_back_without_loss(tmp_path, capsys, fmt):
    rng = np.random.default_rng(4)
    words = ["</s>", "the", "Of", "café", "x"] + [f"w{i}" for i in range(50)]
    matrix = rng.normal(size=(len(words), 6)).astype(np.float32)
    source = vectors_file(tmp_path / "src", words, matrix, fmt)
    code, _, err = run_cli(capsys, "convert", source, tmp_path / "ckpt")
    assert code == 0, err
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["arch"] == "static" and config["model"] == {"vocab_size": len(words) + 1, "hidden_size": 6, "num_layers": 0}
    assert config["converted_from"]["added_tokens"] == ["[UNK]"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(loaded.family.input_embeddings(loaded.model).detach().numpy()[:-1], matrix)
    assert loaded.tokenizer.encode_batch(["the café Of zzz"])[0] == [1, 3, 2, len(words)]
    for binary in (False, True):
        out = tmp_path / f"back{binary}"
        code, _, err = run_cli(capsys, "convert", tmp_path / "ckpt", out, "--to", "word2vec", *(["--binary"] if binary else []))
        assert code == 0, err
        back = read_vectors(out)
        assert back.words == words
        np.testing.assert_array_equal(back.vectors, matrix)
    assert "no hf form" in fails_in_one_line(capsys, "convert", tmp_path / "ckpt", tmp_path / "hf")
    (tmp_path / "text.txt").write_text("the café\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "extract-features", "-c", tmp_path / "ckpt", tmp_path / "text.txt", "-o",
                           tmp_path / "features.jsonl", "--no-progress")
    assert code == 0, err  # the stack of a static checkpoint is its vectors
    features = json.loads((tmp_path / "features.jsonl").read_text(encoding="utf-8"))["features"]
    assert [f["token"] for f in features] == ["the", "café"]
    np.testing.assert_allclose(features[1]["layers"][0]["values"], matrix[3], atol=1e-6)


def test_a_converted_checkpoint_and_its_file_give_the_same_probe_results(tmp_path, capsys):
    words, matrix = _planted()
    source = vectors_file(tmp_path / "planted.bin", words, matrix, WORD2VEC_BINARY)
    assert run_cli(capsys, "convert", source, tmp_path / "ckpt")[0] == 0
    questions = _questions(tmp_path / "q.txt", {"family": ["man woman king queen", "athens greece tokyo japan",
                                                          "man woman king zebra"]})
    from_file = eval_json(capsys, "-c", source, "--probe", "analogy", "--data", questions)
    from_checkpoint = eval_json(capsys, "-c", tmp_path / "ckpt", "--probe", "analogy", "--data", questions)
    for key in ("questions", "skipped", "3cosadd", "3cosmul"):
        assert from_file[key] == from_checkpoint[key], key
    assert from_file["skipped"] == 1 and from_file["3cosadd"]["accuracy"] == 1.0


# -- checkpoints of other families --------------------------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "##s", "a", "Big"]


def _bert_checkpoint(root: Path) -> Path:
    from ptmcli.models.bert import BertConfig, BertForPreTraining
    from ptmcli.tokenization.tokenizer import TokenizerSettings
    from ptmcli.tokenization.train import wordpiece_from_vocab

    (root / "vocab.txt").write_text("".join(f"{t}\n" for t in VOCAB), encoding="utf-8")
    roles = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    settings = TokenizerSettings(kind="wordpiece", lowercase=False, special_tokens=roles, special_set="bert")
    wordpiece_from_vocab(str(root / "vocab.txt"), settings).save(root / "tok")
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(len(VOCAB), 16, 2, 2, 24, max_position_embeddings=32)).eval()
    config = {"arch": "bert", "model": model.config.to_dict(), "objective": "mlm", "task": None}
    weights = state_dict_for_saving(model, model.tied_weights())
    return save_checkpoint(root / "bert", config=config, weights=weights, tokenizer_dir=root / "tok")


def test_a_transformer_checkpoint_gives_single_token_words_their_input_embedding(tmp_path, capsys):
    ckpt = _bert_checkpoint(tmp_path)
    embedding = load_checkpoint(ckpt).model.bert.embeddings.word_embeddings.weight.detach().numpy()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("cat\tdog\t9\ncat\tmat\t5\nthe\ta\t2\ncats\tdog\t8\nBig\tcat\t1\n", encoding="utf-8")
    result = eval_json(capsys, "-c", ckpt, "--probe", "similarity", "--data", pairs)
    assert result["lowercased"] is False and result["vectors"] == "input embeddings"
    assert (result["pairs"], result["oov_pairs"]) == (5, 1)  # cats is cat + ##s: two tokens
    row = {t: embedding[i] for i, t in enumerate(VOCAB)}

    def cos(a, b):
        return float(row[a] @ row[b] / np.linalg.norm(row[a]) / np.linalg.norm(row[b]))

    expected = spearman([9, 5, 2, 1], [cos("cat", "dog"), cos("cat", "mat"), cos("the", "a"), cos("Big", "cat")])
    assert result["spearman"] == pytest.approx(expected)
    from ptmcli.evaluation.token_words import TokenWordTable

    table = TokenWordTable(load_checkpoint(ckpt).tokenizer, embedding)
    assert "##s" not in table.words and "[CLS]" not in table.words and "cat" in table.words


def test_contextual_vectors_average_the_top_layer_over_sub_tokens_and_occurrences(tmp_path, capsys):
    ckpt = _bert_checkpoint(tmp_path)
    text = tmp_path / "text.txt"
    text.write_text("the cats sat on a mat.\n\nthe dog sat on the cats!\n\nBig dog\n", encoding="utf-8")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("cats\tdog\t9\ncats\tmat\t5\nBig\tcat\t1\n", encoding="utf-8")
    result = eval_json(capsys, "-c", ckpt, "--probe", "similarity", "--data", pairs, "--contextual-from", text,
                       "--format", "text")
    assert result["oov_pairs"] == 1  # 'cat' alone never occurs in the text
    assert result["contextual_occurrences"] == 2 + 2 + 1 + 1  # cats x2, dog x2, mat, Big
    loaded = load_checkpoint(ckpt)
    from ptmcli.evaluation.contextual_words import contextual_vectors

    found = contextual_vectors(loaded, {"cats"}, str(text), lowercase=False, context=32, batch_size=1,
                               device=torch.device("cpu"), fmt="text")
    ids = loaded.tokenizer.encode_batch(["the cats sat on a mat .", "the dog sat on the cats !"])
    cls, sep = loaded.tokenizer.cls_id, loaded.tokenizer.sep_id
    occurrences = []
    with torch.no_grad():
        for sentence, where in zip(ids, ([1, 2], [5, 6])):  # cat ##s
            top = loaded.model.bert(torch.tensor([[cls, *sentence, sep]]), None, None)[0]
            occurrences.append(top[[w + 1 for w in where]].mean(dim=0))
    assert found.words == ["cats"] and found.occurrences == {"cats": 2}
    np.testing.assert_allclose(found.vectors[0], torch.stack(occurrences).mean(dim=0).numpy(), atol=1e-5)


def test_punctuation_at_word_edges_is_split_off():
    assert split_off_punctuation('"Athens," said (Greece). U.S. -') == ['"', "Athens", ',"', "said", "(", "Greece", ").", "U.S", ".", "-"]


def test_input_embeddings_of_every_family(tmp_path):
    from ptmcli.models import elmo, gpt

    model = gpt.GPTForCausalLM(gpt.GPTConfig(30, 16, 1, 2, 24, max_position_embeddings=16))
    assert gpt.FAMILY.input_embeddings(model) is model.gpt.word_embeddings.weight
    config = elmo.preset_config("elmo-small", vocab_size=20, projection_dim=8, hidden_size=16, num_layers=1)
    biLM = elmo.ElmoBiLM(config).eval()
    with torch.no_grad():
        expected = biLM.encode_tokens(torch.arange(20)[None])[0]
    torch.testing.assert_close(elmo.FAMILY.input_embeddings(biLM), expected)


# -- the real test sets --------------------------------------------------------------------------------------


def test_analogy_on_google_questions_counts_what_the_file_holds(tmp_path, capsys):
    path = shared_file(f"{WORD_SIMILARITY}/questions-words.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    questions, section, kinds = [], "", []
    for line in lines:
        if line.startswith(":"):
            section = line[1:].strip()
        elif line.strip():
            questions.append(line.split())
            kinds.append(section.startswith("gram"))
    words = sorted({w.lower() for q in questions for w in q})
    rng = np.random.default_rng(5)
    # Every third test word is ranked beyond --restrict: their questions must be skipped.
    ranked = [w for i, w in enumerate(words) if i % 3] + [f"filler{i}" for i in range(200)] + [w for i, w in enumerate(words) if not i % 3]
    restrict = len(ranked) - len(words) // 3 - 1
    vectors = vectors_file(tmp_path / "random.vec", ranked, rng.normal(size=(len(ranked), 20)))
    result = eval_json(capsys, "-c", vectors, "--probe", "analogy", "--data", path, "--restrict", restrict)
    top = set(ranked[:restrict])
    skipped = sum(not all(w.lower() in top for w in q) for q in questions)
    assert result["questions"] == len(questions) == 19544
    assert (result["semantic_questions"], result["syntactic_questions"]) == (kinds.count(False), kinds.count(True)) == (8869, 10675)
    assert result["skipped"] == skipped > 0 and result["answered"] == len(questions) - skipped
    assert result["lowercased"] is True and len(result["sections"]) == 14
    for method in ("3cosadd", "3cosmul"):
        assert result[method]["questions"] == len(questions) and result[method]["skipped"] == skipped
        assert 0 <= result[method]["accuracy"] < 0.05  # random vectors


def test_similarity_on_the_real_sets_reads_every_pair(tmp_path, capsys):
    words, matrix = _angle_vectors({"tiger": 0, "cat": 10, "love": 50, "sex": 60, "old": 80, "new": 90})
    vectors = vectors_file(tmp_path / "v.txt", words, matrix)
    for name, pairs in (("wordsim353.tsv", 353), ("simlex999.txt", 999), ("SimLex-999.txt", 999)):
        result = eval_json(capsys, "-c", vectors, "--probe", "similarity", "--data", shared_file(f"{WORD_SIMILARITY}/{name}"))
        assert result["pairs"] == pairs and result["scored_pairs"] >= 1, name
    assert result["score_column"] == "SimLex999"
