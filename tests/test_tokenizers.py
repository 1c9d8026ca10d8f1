"""Tokenizer training, the PtmTokenizer object, save/load, and parity with transformers' BERT tokenizer."""

from __future__ import annotations

import json
import unicodedata
from itertools import islice
from pathlib import Path

import pytest
from conftest import shared_file

from ptmcli.errors import PtmError
from ptmcli.textio.inputs import iter_texts
from ptmcli.tokenization import specials
from ptmcli.tokenization.tokenizer import PtmTokenizer
from ptmcli.tokenization.train import train_tokenizer

CJK = (0x4E00, 0x9FFF)


def is_cjk(char: str) -> bool:
    return CJK[0] <= ord(char) <= CJK[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """1500 lines of English Wikipedia plus 300 Chinese reviews, as plain text."""
    wiki = list(islice(iter_texts([str(shared_file("enwiki-sample/enwiki_sample.txt"))]), 1500))
    chinese = list(islice(iter_texts([str(shared_file("chinese/train.tsv"))], tsv_column="text_a"), 300))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(wiki + chinese) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def probe_lines() -> list[str]:
    """Held-out text: WikiText-2 lines and Chinese reviews the tokenizers were not trained on."""
    wiki = [line for line in islice(iter_texts([str(shared_file("wikitext-2-raw/wiki.valid.raw"))]), 400)]
    chinese = list(islice(iter_texts([str(shared_file("chinese/dev.tsv"))], tsv_column="text_a"), 100))
    return wiki + chinese + ["Ünïcödé naïve façade, [MASK] and [cls]\u200b\ttab\x07 end"]


SIZES = {"wordpiece": 1500, "bpe": 1500, "bytelevel": 1200, "unigram": 1000, "sp-bpe": 1000, "word": 1500}


@pytest.fixture(scope="module")
def trained(corpus) -> dict[str, PtmTokenizer]:
    # sentencepiece's unigram trainer is slow, and sentencepiece needs a vocabulary
    # larger than the Chinese character set: its models see 500 English lines only.
    english = list(islice(iter_texts([str(corpus)]), 500))
    return {model: train_tokenizer(english if model in specials.SENTENCEPIECE_MODELS else iter_texts([str(corpus)]),
                                   model, size) for model, size in SIZES.items()}


@pytest.mark.parametrize("model", specials.MODELS)
def test_train_save_load_round_trip(model, trained, probe_lines, tmp_path):
    tokenizer = trained[model]
    assert tokenizer.kind == model
    assert 0.5 * SIZES[model] < tokenizer.vocab_size
    ids = tokenizer.encode_batch(probe_lines)
    assert all(0 <= i < tokenizer.vocab_size for row in ids for i in row)
    assert sum(map(len, ids)) > sum(len(line.split()) for line in probe_lines)  # subwords, not whole lines

    tokenizer.save(tmp_path / "tok")
    files = sorted(p.name for p in (tmp_path / "tok").iterdir())
    model_file = "tokenizer.model" if model in specials.SENTENCEPIECE_MODELS else "tokenizer.json"
    assert model_file in files and "tokenizer_config.json" in files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    loaded = PtmTokenizer.load(tmp_path / "tok")
    assert loaded.encode_batch(probe_lines) == ids
    assert loaded.sha256 == tokenizer.sha256
    assert (loaded.kind, loaded.vocab_size, loaded.special_tokens, loaded.lowercase) == (
        tokenizer.kind, tokenizer.vocab_size, tokenizer.special_tokens, tokenizer.lowercase)
    assert loaded.convert_ids_to_tokens(ids[0]) == tokenizer.convert_ids_to_tokens(ids[0])
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert (config["format"], config["version"], config["vocab_size"]) == ("ptm-tokenizer", 1, tokenizer.vocab_size)
    assert config["do_lower_case"] == tokenizer.lowercase and config["model_max_length"] == 512

    if model_file == "tokenizer.json":
        from tokenizers import Tokenizer

        raw = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
        assert [e.ids for e in raw.encode_batch(probe_lines, add_special_tokens=False)] == ids
    else:
        import sentencepiece

        raw = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "tokenizer.model"))
        assert raw.encode(probe_lines) == ids


def test_special_tokens_take_the_first_ids(trained):
    bert = trained["wordpiece"]
    assert [bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id] == [0, 1, 2, 3, 4]
    assert bert.bos_id is None and bert.all_special_ids == [0, 1, 2, 3, 4]
    for model in ("unigram", "sp-bpe", "bpe"):
        tokenizer = trained[model]
        assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        assert tokenizer.encode_batch(["see [MASK] here"])[0].count(tokenizer.mask_id) == 1
    gpt = trained["bytelevel"]
    assert gpt.bos_id == gpt.eos_id == 0 and gpt.pad_id is None
    assert gpt.convert_ids_to_tokens([0]) == ["<|endoftext|>"]


def test_roberta_specials_on_a_bytelevel_model(corpus):
    texts = islice(iter_texts([str(corpus)]), 300)
    tokenizer = train_tokenizer(texts, "bytelevel", 400, special="roberta")
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert (tokenizer.cls_id, tokenizer.bos_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 0, 1, 2, 4)


def test_cjk_characters_are_split(trained, probe_lines):
    chinese = [line for line in probe_lines if any(is_cjk(c) for c in line)]
    assert len(chinese) >= 90
    for model in ("wordpiece", "bpe"):
        tokenizer = trained[model]
        for ids, starts in tokenizer.encode_batch_words(chinese):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            for piece, start in zip(pieces, starts, strict=True):
                cjk = [c for c in piece if is_cjk(c)]
                assert len(cjk) <= 1
                if cjk:
                    assert start  # each ideograph is a word of its own
    # Byte-level BPE splits them too when asked: every ideograph starts a word.
    bytelevel = train_tokenizer(chinese, "bytelevel", 600, split_cjk=True)
    for line, (_, starts) in zip(chinese, bytelevel.encode_batch_words(chinese), strict=True):
        assert sum(starts) >= sum(map(is_cjk, line))
    # Without the split, ideographs merge into longer tokens.
    merged = train_tokenizer(iter_texts([str(shared_file("chinese/dev.tsv"))], tsv_column="text_a"),
                             "wordpiece", 4000, split_cjk=False)
    pieces = [p for row in merged.encode_batch(chinese) for p in merged.convert_ids_to_tokens(row)]
    assert any(sum(map(is_cjk, p)) >= 2 for p in pieces)


def test_word_starts_follow_the_pre_tokenizer(trained, probe_lines):
    lines = probe_lines[:200]
    for model in ("wordpiece", "bpe", "bytelevel"):
        tokenizer = trained[model]
        backend = tokenizer.backend
        for line, (ids, starts) in zip(lines, tokenizer.encode_batch_words(lines), strict=True):
            assert ids == tokenizer.encode_batch([line])[0]
            normalized = backend.normalizer.normalize_str(line) if backend.normalizer else line
            words = backend.pre_tokenizer.pre_tokenize_str(normalized)
            assert sum(starts) == len(words), (model, line)
    wordpiece = trained["wordpiece"]
    for ids, starts in wordpiece.encode_batch_words(lines):
        assert starts == [not p.startswith("##") for p in wordpiece.convert_ids_to_tokens(ids)]
    for model in ("unigram", "sp-bpe"):
        tokenizer = trained[model]
        for ids, starts in tokenizer.encode_batch_words(lines):
            pieces = tokenizer.convert_ids_to_tokens(ids)
            assert starts == [i == 0 or p.startswith("\u2581") for i, p in enumerate(pieces)]
            assert sum(starts) >= 1 if ids else True


def test_normalization_options(corpus):
    texts = list(islice(iter_texts([str(corpus)]), 400))
    lower = train_tokenizer(texts, "wordpiece", 600)
    cased = train_tokenizer(texts, "wordpiece", 600, lowercase=False)
    accents = train_tokenizer(texts, "wordpiece", 600, strip_accents=False)
    assert (lower.lowercase, lower.strip_accents, lower.split_cjk) == (True, True, True)
    assert cased.strip_accents is False
    assert lower.encode_batch(["The Café"]) == lower.encode_batch(["the cafe"])
    assert cased.encode_batch(["The"]) != cased.encode_batch(["the"])
    assert accents.encode_batch(["café"]) != accents.encode_batch(["cafe"])
    bytelevel = train_tokenizer(texts, "bytelevel", 600)
    text = "Ünïcödé naïve 中文 text\twith\x07control"
    assert bytelevel.decode(bytelevel.encode_batch([text])[0]) == text  # byte-level is lossless
    assert unicodedata.normalize("NFC", lower.decode(lower.encode_batch(["hello world"])[0])) == "hello world"


def test_vocab_file_tokenizes_exactly_like_bert_tokenizer(trained, probe_lines, tmp_path):
    transformers = pytest.importorskip("transformers")
    import inspect

    trained["wordpiece"].save(tmp_path / "tok")
    vocab_file = tmp_path / "tok" / "vocab.txt"
    vocab_lines = vocab_file.read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == trained["wordpiece"].vocab_size
    bert_class = transformers.BertTokenizerFast
    # transformers 5 takes the vocabulary as `vocab` (and ignores `vocab_file`); 4.x as `vocab_file`.
    key = "vocab" if "vocab" in inspect.signature(bert_class.__init__).parameters else "vocab_file"
    for lowercase, strip in [(True, None), (False, None), (True, False), (False, True)]:
        ours = train_tokenizer((), "wordpiece", 0, vocab_file=str(vocab_file), lowercase=lowercase, strip_accents=strip)
        reference = bert_class(**{key: str(vocab_file)}, do_lower_case=lowercase, strip_accents=strip)
        assert len(reference) == ours.vocab_size == len(vocab_lines)
        expected = reference(probe_lines, add_special_tokens=False)["input_ids"]
        assert ours.encode_batch(probe_lines) == expected
        assert ours.unk_id == reference.unk_token_id and ours.mask_id == reference.mask_token_id
    assert any(ours.unk_id in row for row in expected)  # the probe exercises unknown words too


def test_saved_directory_loads_in_transformers(trained, probe_lines, tmp_path):
    transformers = pytest.importorskip("transformers")
    for model in ("wordpiece", "bytelevel"):
        trained[model].save(tmp_path / model)
        hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / model))
        assert hf(probe_lines[:50], add_special_tokens=False)["input_ids"] == trained[model].encode_batch(probe_lines[:50])
    bert = trained["wordpiece"]
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "wordpiece"))
    with_specials = hf(probe_lines[1])["input_ids"]
    assert with_specials[0] == bert.cls_id and with_specials[-1] == bert.sep_id


def test_load_refuses_what_is_not_a_tokenizer(trained, tmp_path):
    with pytest.raises(PtmError, match=r"is not a tokenizer directory: it does not exist"):
        PtmTokenizer.load(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PtmError, match=r"is not a tokenizer directory: it is a file"):
        PtmTokenizer.load(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PtmError, match=r"is not a tokenizer directory: it has neither tokenizer.json nor tokenizer.model"):
        PtmTokenizer.load(tmp_path / "empty")
    trained["wordpiece"].save(tmp_path / "tok")
    config_path = tmp_path / "tok" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "version": 7}))
    with pytest.raises(PtmError, match=r"has version 7; this ptm reads version 1"):
        PtmTokenizer.load(tmp_path / "tok")
    config_path.write_text("{not json")
    with pytest.raises(PtmError, match=r"tokenizer_config.json is not valid JSON"):
        PtmTokenizer.load(tmp_path / "tok")
    config_path.write_text(json.dumps(config))
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    with pytest.raises(PtmError, match=r"cannot read .*tokenizer.json"):
        PtmTokenizer.load(tmp_path / "tok")


def test_foreign_tokenizer_json_is_read(trained, tmp_path, probe_lines):
    # A directory with only tokenizer.json, as the tokenizers library writes it.
    (tmp_path / "hf").mkdir()
    trained["wordpiece"].backend.save(str(tmp_path / "hf" / "tokenizer.json"))
    loaded = PtmTokenizer.load(tmp_path / "hf")
    assert (loaded.kind, loaded.lowercase) == ("wordpiece", True)
    assert loaded.special_tokens == trained["wordpiece"].special_tokens
    assert loaded.encode_batch(probe_lines) == trained["wordpiece"].encode_batch(probe_lines)
    # A bare sentencepiece model: its type and special pieces are read from the model itself.
    trained["sp-bpe"].save(tmp_path / "sp")
    (tmp_path / "sp" / "tokenizer_config.json").unlink()
    loaded = PtmTokenizer.load(tmp_path / "sp")
    assert loaded.kind == "sp-bpe" and loaded.special_tokens == trained["sp-bpe"].special_tokens
    assert loaded.encode_batch(probe_lines) == trained["sp-bpe"].encode_batch(probe_lines)


def test_save_refuses_an_existing_directory_and_replaces_it_with_overwrite(trained, tmp_path):
    target = tmp_path / "tok"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(PtmError, match="already exists; pass --overwrite"):
        trained["bpe"].save(target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    trained["bpe"].save(target, overwrite=True)
    assert not (target / "keep.txt").exists() and PtmTokenizer.load(target).kind == "bpe"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_training_streams_and_reports_bad_input_lines(tmp_path, corpus):
    bad = tmp_path / "bad.txt"
    lines = corpus.read_text(encoding="utf-8").splitlines()[:300]
    bad.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe broken\n")
    for model in ("wordpiece", "unigram"):
        with pytest.raises(PtmError, match=rf"bad.txt:{len(lines) + 1}: invalid UTF-8"):
            train_tokenizer(iter_texts([str(bad)]), model, 500)


def test_invalid_requests_are_refused(corpus):
    texts = ["some text"] * 10
    with pytest.raises(PtmError, match="unknown tokenizer model 'bert'"):
        train_tokenizer(texts, "bert", 100)
    with pytest.raises(PtmError, match="leaves no room"):
        train_tokenizer(texts, "wordpiece", 5)
    with pytest.raises(PtmError, match="--strip-accents is not available for unigram"):
        train_tokenizer(texts, "unigram", 100, strip_accents=True)
    with pytest.raises(PtmError, match="--vocab builds a wordpiece tokenizer"):
        train_tokenizer(texts, "bpe", 100, vocab_file="vocab.txt")
    with pytest.raises(PtmError, match="no text to train"):
        train_tokenizer(iter(()), "wordpiece", 100)
    with pytest.raises(PtmError, match="unknown --special-tokens 'xlnet'"):
        train_tokenizer(texts, "wordpiece", 100, special="xlnet")
    with pytest.raises(PtmError, match="sentencepiece could not train"):
        train_tokenizer(texts, "unigram", 5000)


def test_vocab_file_errors(tmp_path):
    with pytest.raises(PtmError, match="does not exist"):
        train_tokenizer((), "wordpiece", 0, vocab_file=str(tmp_path / "none.txt"))
    no_unk = tmp_path / "no_unk.txt"
    no_unk.write_text("[PAD]\na\nb\n")
    with pytest.raises(PtmError, match=r"has no \[UNK\] token"):
        train_tokenizer((), "wordpiece", 0, vocab_file=str(no_unk))
    duplicate = tmp_path / "dup.txt"
    duplicate.write_text("[UNK]\na\nb\na\n")
    with pytest.raises(PtmError, match=r"dup.txt:4: token 'a' already appears on line 2"):
        train_tokenizer((), "wordpiece", 0, vocab_file=str(duplicate))


def test_decode_and_token_lookup(trained):
    tokenizer = trained["wordpiece"]
    ids = tokenizer.encode_batch(["the history of anarchism"])[0]
    assert tokenizer.decode([tokenizer.cls_id, *ids, tokenizer.sep_id]) == "the history of anarchism"
    assert tokenizer.token_to_id("[MASK]") == tokenizer.mask_id and tokenizer.token_to_id("no-such-token") is None
    with pytest.raises(PtmError, match="out of range"):
        tokenizer.convert_ids_to_tokens([tokenizer.vocab_size])
    sp = trained["unigram"]
    assert sp.token_to_id("no-such-piece") is None and sp.token_to_id("[MASK]") == 4
    text = "the history of anarchism"
    assert sp.decode(sp.encode_batch([text])[0]) == text
