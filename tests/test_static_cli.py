"""Static word vectors from the command line: word tokenizers, `ptm pretrain --arch word2vec|fasttext|glove|nnlm`,
then `ptm eval --probe similarity` and `ptm convert --to word2vec` on the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, shared_file

from ptmcli.tokenization.tokenizer import PtmTokenizer

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat", "pig", "mouse"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "pliers", "screw", "nail"]


def _clustered_text(sentences: int = 1500, length: int = 8, seed: int = 0) -> str:
    """Two topics: every sentence draws its words from one of them; a blank line every 20 sentences."""
    rng = np.random.default_rng(seed)
    lines = []
    for number in range(sentences):
        words = ANIMALS if rng.integers(2) else TOOLS
        sentence = " ".join(words[i] for i in rng.integers(len(words), size=length))
        lines.append(sentence.capitalize() + ".")
        if number % 20 == 19:
            lines.append("")
    return "\n".join(lines) + "\n"


def _pairs_file(path) -> str:
    """Word pairs scored high within a topic and low across, in WordSim-353's tab-separated layout."""
    rows = ["# Word 1\tWord 2\tHuman (mean)"]
    for i in range(0, 8, 2):
        rows.append(f"{ANIMALS[i]}\t{ANIMALS[i + 1]}\t9.0")
        rows.append(f"{TOOLS[i]}\t{TOOLS[i + 1]}\t8.5")
        rows.append(f"{ANIMALS[i]}\t{TOOLS[i]}\t1.0")
        rows.append(f"{TOOLS[i + 1]}\t{ANIMALS[i]}\t1.5")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def ok(capsys, *args) -> tuple[str, str]:
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return out, err


def fails_in_one_line(capsys, *args) -> str:
    code, _out, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ptm: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The clustered text, a word tokenizer of it and its shards."""
    root = tmp_path_factory.mktemp("static-cli")
    text = root / "topics.txt"
    text.write_text(_clustered_text(), encoding="utf-8")
    from ptmcli.cli.main import main

    for args in (["tokenize", "train", str(text), "--model", "word", "--min-count", "2", "-o", str(root / "tok")],
                 ["tokenize", "encode", str(text), "--tokenizer", str(root / "tok"), "-o", str(root / "shards")]):
        try:
            main(args)
        except SystemExit as stop:
            assert not stop.code
    return {"root": root, "text": text, "tok": root / "tok", "shards": root / "shards", "pairs": _pairs_file(root / "pairs.tsv")}


# -- word tokenizers -----------------------------------------------------------------------------


def test_word_tokenizer_keeps_whole_words_lowercased_and_maps_the_rest_to_unk(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The cat sat. The cat ran, the dog sat.\nA zebra!\n", encoding="utf-8")
    ok(capsys, "tokenize", "train", text, "--model", "word", "--min-count", "2", "-o", tmp_path / "tok")
    tok = PtmTokenizer.load(tmp_path / "tok")
    assert tok.word_level and tok.kind == "word" and tok.lowercase
    words = set(tok.convert_ids_to_tokens(list(range(tok.vocab_size)))) - set(tok.special_tokens.values())
    # Seen twice or more, punctuation split off; "ran", "dog", "zebra", "a" once only.
    assert words == {"the", "cat", "sat", "."}
    assert tok.encode_batch(["The CAT saw a zebra"])[0] == [tok.token_to_id("the"), tok.token_to_id("cat")] + [tok.unk_id] * 3
    # --max-vocab keeps the most frequent words (special tokens counted in it, as --vocab-size).
    ok(capsys, "tokenize", "train", text, "--model", "word", "--min-count", "1", "--max-vocab", "7", "--cased",
       "-o", tmp_path / "tok2")
    tok2 = PtmTokenizer.load(tmp_path / "tok2")
    assert tok2.vocab_size == 7 and not tok2.lowercase
    assert {"The", "the", "cat"} & set(tok2.convert_ids_to_tokens(list(range(7))))


def test_word_tokenizer_encodes_ordinary_shards(corpus):
    from ptmcli.data.shards import ShardDataset

    tok = PtmTokenizer.load(corpus["tok"])
    shards = ShardDataset.open(corpus["shards"], verify=True)
    shards.check_tokenizer(tok)
    assert len(shards) == 75
    first = shards[0]
    assert tok.convert_ids_to_tokens(first.input_ids[:9].tolist())[-1] == "."
    assert set(tok.convert_ids_to_tokens(np.unique(first.input_ids).tolist())) <= set(ANIMALS + TOOLS + ["."])


# -- pretraining each family -----------------------------------------------------------------------

RUNS = {
    # --sample 0: in a 17-word text every word is frequent, and subsampling would drop most of it.
    "word2vec-skipgram": ["--arch", "word2vec", "--objective", "skipgram", "--epochs", "3", "--sample", "0",
                          "--workers", "1"],
    "word2vec-cbow-hs": ["--arch", "word2vec", "--objective", "cbow", "--hs", "--negative", "0", "--epochs", "3",
                         "--workers", "1"],
    "fasttext": ["--arch", "fasttext", "--epochs", "3", "--sample", "0", "--buckets", "5000", "--minn", "3",
                 "--maxn", "4", "--workers", "1"],
    "glove": ["--arch", "glove", "--objective", "glove", "--epochs", "20", "--x-max", "10", "--alpha", "0.75",
              "--window", "4", "--workers", "1"],
    "nnlm": ["--arch", "nnlm", "--objective", "nnlm", "--epochs", "1", "--window", "3", "--hidden-size", "16",
             "--batch-size", "512"],
}


@pytest.mark.parametrize("name", RUNS)
def test_each_family_trains_evaluates_and_exports(name, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    _out, err = ok(capsys, "pretrain", "--data", corpus["shards"], "-o", run, "--dim", "16", "--min-count", "2",
                   *RUNS[name])
    assert "checkpoint" in err.strip().splitlines()[-1]
    config = json.loads(next((run / "checkpoints").glob("step-*/config.json")).read_text())
    # 16 words and "." and [UNK] (the NNLM's sentence-boundary row)
    assert config["arch"] == ("nnlm" if name == "nnlm" else "static") and config["model"]["vocab_size"] == 18
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics)

    out, _err = ok(capsys, "eval", "-c", run, "--probe", "similarity", "--data", corpus["pairs"], "--json")
    result = json.loads(out)
    assert result["scored_pairs"] == 16 and result["oov_pairs"] == 0
    if name != "nnlm":  # the language model's embeddings separate the topics less reliably in one epoch
        assert result["spearman"] > 0.5, result

    ok(capsys, "convert", run, tmp_path / "vectors.txt", "--to", "word2vec")
    lines = (tmp_path / "vectors.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "17 16"  # the unknown token's zero row is left out
    assert {line.split(" ")[0] for line in lines[1:]} == set(ANIMALS + TOOLS + ["."])


def test_nnlm_reports_held_out_perplexity(corpus, tmp_path, capsys):
    code, _out, err = run_cli(capsys, "pretrain", "--arch", "nnlm", "--data", corpus["shards"], "-o", tmp_path / "run",
                              "--dim", "8", "--min-count", "2", "--epochs", "1", "--window", "2", "--eval-rows", "10")
    assert code == 0, err
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # Eight equally likely words per topic, plus the full stop: a perplexity well under the 17 words.
    assert 1.0 < final["heldout_ppl"] < 17.0


def test_fasttext_checkpoint_gives_unseen_words_vectors_from_its_ngrams(corpus, tmp_path, capsys):
    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.evaluation.token_words import TokenWordTable
    from ptmcli.static.subwords import ngram_buckets

    run = tmp_path / "run"
    ok(capsys, "pretrain", "--data", corpus["shards"], "-o", run, "--dim", "16", "--min-count", "2", *RUNS["fasttext"])
    loaded = load_checkpoint(run)
    config = loaded.config["model"]
    assert (config["buckets"], config["min_n"], config["max_n"], config["ngram_hash"]) == (5000, 3, 4, "fnv1a32")
    ngrams = loaded.model.ngrams.detach().numpy()
    assert ngrams.shape == (5000, 16)

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("cats\tcat\t9\nhorses\tcow\t8\nhammers\tsaw\t7\ncats\thammer\t1\ndog\tdrill\t1.5\n", encoding="utf-8")
    out, _err = ok(capsys, "eval", "-c", run, "--probe", "similarity", "--data", pairs, "--json")
    result = json.loads(out)
    assert (result["oov_pairs"], result["oov_words"], result["built_vectors"]) == (0, 0, 3), result

    table = TokenWordTable(loaded.tokenizer, loaded.family.input_embeddings(loaded.model).detach().numpy(), None,
                           loaded.family.subwords(loaded.model))
    assert table.rows(["cats"]) == [None]
    unseen = table.missing_vector("cats")
    ids, _ = ngram_buckets(["cats"], 3, 4, 5000)  # <ca cat ats ts> <cat cats ats>
    np.testing.assert_allclose(unseen, ngrams[ids].mean(axis=0), rtol=1e-6)

    def cosine(word):
        vector = table.vectors[table.rows([word])[0]]
        return float(unseen @ vector / np.linalg.norm(unseen) / np.linalg.norm(vector))

    # It shares <ca, cat, <cat with "cat": close to it, and to its topic rather than the other.
    assert cosine("cat") > 0.9 and cosine("cat") > max(cosine(tool) for tool in TOOLS)
    # --to word2vec writes the words' rows alone, as before.
    ok(capsys, "convert", run, tmp_path / "vectors.txt", "--to", "word2vec")
    assert (tmp_path / "vectors.txt").read_text(encoding="utf-8").splitlines()[0] == "17 16"


def _text_with_rare_words(seed: int = 3) -> str:
    """The clustered text with a word seen once in some sentences: in the tokenizer (--min-count 1), but below
    the run's --min-count 2, so training and scoring both skip it."""
    rng = np.random.default_rng(seed)
    lines = _clustered_text(sentences=600, seed=seed).splitlines()
    for number in rng.choice(len(lines), size=60, replace=False):
        if lines[number]:
            words = lines[number].split(" ")
            words.insert(int(rng.integers(len(words))), f"rare{number}")
            lines[number] = " ".join(words)
    return "\n".join(lines) + "\n"


def test_nnlm_checkpoint_scores_text_as_its_run_scored_the_held_out_documents(tmp_path, capsys):
    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.examples import split_rows

    text = tmp_path / "text.txt"
    text.write_text(_text_with_rare_words(), encoding="utf-8")
    ok(capsys, "tokenize", "train", text, "--model", "word", "--min-count", "1", "-o", tmp_path / "tok")
    ok(capsys, "tokenize", "encode", text, "--tokenizer", tmp_path / "tok", "-o", tmp_path / "shards")
    run = tmp_path / "run"
    ok(capsys, "pretrain", "--arch", "nnlm", "--data", tmp_path / "shards", "-o", run, "--dim", "8", "--min-count", "2",
       "--epochs", "1", "--window", "3", "--hidden-size", "12", "--eval-rows", "4")
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])

    # The held-out documents (paragraphs of the text, one shard row each) as a text file of their own.
    shards = ShardDataset.open(tmp_path / "shards")
    _train, held = split_rows(len(shards), 4)
    paragraphs = [p.strip() for p in text.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    assert len(paragraphs) == len(shards)
    held_text = tmp_path / "held.txt"
    held_text.write_text("\n\n".join(paragraphs[i] for i in held) + "\n", encoding="utf-8")
    assert "rare" in held_text.read_text(encoding="utf-8")

    out, err = ok(capsys, "eval", "-c", run, "--data", held_text, "--json")
    result = json.loads(out)
    assert result["arch"] == "nnlm" and "perplexity" in err
    assert result["loss"] == pytest.approx(final["heldout_loss"], abs=1e-4)
    assert result["ppl"] == pytest.approx(final["heldout_ppl"], rel=1e-4)
    # Every word but the rare ones (and nothing of them) is scored; the text's words are all counted.
    rare = held_text.read_text(encoding="utf-8").count("rare")
    assert result["tokens_scored"] == result["text_tokens"] - rare
    assert result["context"] == 3

    line = fails_in_one_line(capsys, "eval", "-c", run, "--data", held_text, "--context", "5")
    assert "--context" in line and "3 words" in line


def test_wikitext_vectors_score_on_the_published_similarity_sets(tmp_path, capsys):
    raw = shared_file("wikitext-2-raw/wiki.valid.raw")
    wordsim = shared_file("word-similarity/wordsim353.tsv")
    simlex = shared_file("word-similarity/SimLex-999.txt")
    text = tmp_path / "wiki.txt"
    with open(raw, encoding="utf-8") as handle:
        text.write_text(handle.read(150_000), encoding="utf-8")
    ok(capsys, "tokenize", "train", text, "--model", "word", "--min-count", "2", "-o", tmp_path / "tok")
    ok(capsys, "tokenize", "encode", text, "--tokenizer", tmp_path / "tok", "-o", tmp_path / "shards")
    ok(capsys, "pretrain", "--arch", "word2vec", "--data", tmp_path / "shards", "-o", tmp_path / "run", "--dim", "24",
       "--epochs", "1", "--min-count", "2", "--workers", "1")
    for pairs, count in ((wordsim, 353), (simlex, 999)):
        out, _err = ok(capsys, "eval", "-c", tmp_path / "run", "--probe", "similarity", "--data", pairs, "--json")
        result = json.loads(out)
        assert result["pairs"] == count and result["scored_pairs"] > 0 and "spearman" in result


# -- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subword_shards(corpus):
    root = corpus["root"]
    from ptmcli.cli.main import main

    for args in (["tokenize", "train", str(corpus["text"]), "--model", "wordpiece", "--vocab-size", "100",
                  "-o", str(root / "wp")],
                 ["tokenize", "encode", str(corpus["text"]), "--tokenizer", str(root / "wp"), "-o", str(root / "wp-shards")]):
        try:
            main(args)
        except SystemExit as stop:
            assert not stop.code
    return root / "wp-shards"


BAD = {
    "objective of another family": (["--arch", "word2vec", "--objective", "mlm"], "not available for --arch word2vec"),
    "window 0": (["--arch", "word2vec", "--window", "0"], "--window 0: must be positive"),
    "glove flag for word2vec": (["--arch", "word2vec", "--x-max", "10"], "--x-max does not apply to --arch word2vec"),
    "transformer flag for glove": (["--arch", "glove", "--seq-len", "64"], "--seq-len does not apply to --arch glove"),
    "static flag for bert": (["--arch", "bert", "--dim", "64"], "--dim is a setting of static word vectors"),
    "no output layer": (["--arch", "fasttext", "--negative", "0"], "--negative 0 leaves no output layer"),
    "empty vocabulary": (["--arch", "glove", "--min-count", "1000000"], "no word occurs at least 1000000 times"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_and_writes_nothing(name, corpus, tmp_path, capsys):
    args, expected = BAD[name]
    line = fails_in_one_line(capsys, "pretrain", "--data", corpus["shards"], "-o", tmp_path / "run", *args)
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_subword_shards_are_refused_for_static_vectors(subword_shards, tmp_path, capsys):
    line = fails_in_one_line(capsys, "pretrain", "--arch", "word2vec", "--data", subword_shards, "-o", tmp_path / "run")
    assert "wordpiece tokenizer" in line and "--model word" in line
    assert not (tmp_path / "run").exists()


def test_static_arch_without_data_is_refused(tmp_path, capsys):
    line = fails_in_one_line(capsys, "pretrain", "--arch", "glove", "-o", tmp_path / "run")
    assert "needs --data" in line
