"""Static word vectors in ``ptm convert``: vector files as a source, and ``--to word2vec``.

``--to word2vec`` writes a model's input token embeddings in the word2vec
formats that gensim's ``KeyedVectors.load_word2vec_format`` and fastText read
(``ptmcli.static.vector_files``): a header line ``<count> <dim>``, then one
line per token, the token and its vector, with 9 significant digits (the
float32 value survives exactly); ``--binary`` writes the token, a space and
the vector as little-endian float32, then a newline. Tokens that contain
whitespace cannot be written in either format and are left out (and counted).

A word2vec (text or binary), GloVe or fastText ``.vec`` file read as a source
becomes a checkpoint of arch ``static`` (``ptmcli.models.static``): the
vectors as the tensor ``vectors``, in file order, and a word-level tokenizer
whose id i is row i. Its unknown-word token is the file's own ``<unk>`` or
``[UNK]`` when it has one; otherwise ``[UNK]`` is added as the last row, a zero
vector, recorded in ``converted_from.added_tokens`` and left out when the
vectors are written back, so file -> checkpoint -> file keeps every word,
vector and the order. A word listed twice keeps its first (most frequent)
row; the repeats are left out and counted.

A fastText ``.bin`` model (``ptmcli.static.fasttext_bin``) becomes the same
checkpoint with its character n-gram table besides, as ``ptm pretrain --arch
fasttext`` writes one: the words' vectors (own row and n-grams averaged) and
the ``ngrams`` rows, so words outside the vocabulary get vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ptmcli.convert.archs import ArchSpec
from ptmcli.convert.sources import Model
from ptmcli.errors import PtmError
from ptmcli.models.static import NGRAM_HASH, NGRAMS, VECTORS, StaticConfig, StaticVectors
from ptmcli.static.vector_files import (
    FORMAT_NAMES,
    WORD2VEC_BINARY,
    WORD2VEC_TEXT,
    read_vectors,
    write_vectors,
)
from ptmcli.static.word_table import has_uppercase

_UNKNOWN_WORDS = ("<unk>", "[UNK]")
ADDED_UNKNOWN = "[UNK]"


def _no_transformers_form(*_args):
    raise PtmError("static word vectors have no transformers form; convert them --to word2vec")


SPEC = ArchSpec(
    arch="static",
    model_type="",  # transformers has no such model: no config.json names it
    classes={},
    config_from_hf=_no_transformers_form,
    config_to_hf=_no_transformers_form,
    weights_from_hf=_no_transformers_form,
    weights_to_hf=_no_transformers_form,
    build_model=lambda model: StaticVectors(StaticConfig.from_dict(model)),
    config_class=StaticConfig.from_dict,
    input_embedding=VECTORS,
)


# -- --to word2vec -----------------------------------------------------------------------------


def write_word2vec(model: Model, target: str | Path, binary: bool, overwrite: bool) -> tuple[Path, int, list[str]]:
    """Write the vectors; returns the path, the number of vectors and the tokens left out."""
    if model.tokenizer is None:
        raise PtmError("--to word2vec needs the tokenizer to name each vector, and the source has none")
    matrix = model.state[model.spec.input_embedding].float().numpy()
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(model.tokenizer.vocab_size)))
    added = set(model.source.get("added_tokens") or ())
    kept = [(i, t) for i, t in enumerate(tokens) if t and not any(c.isspace() for c in t) and t not in added]
    skipped = [t for t in tokens if not t or any(c.isspace() for c in t)]
    target = Path(target)
    if target.exists() and not overwrite:
        raise PtmError(f"output {target} already exists; pass --overwrite to replace it")
    if target.is_dir():
        raise PtmError(f"output {target} is a directory; --to word2vec writes one file")
    write_vectors(target, [t for _, t in kept], matrix, WORD2VEC_BINARY if binary else WORD2VEC_TEXT, [i for i, _ in kept])
    return target, len(kept), skipped


def read_word2vec(path: str | Path, binary: bool | None = None) -> tuple[list[str], np.ndarray]:
    """(tokens, vectors) of a word2vec file; ``binary``, when given, must be the file's format."""
    vectors = read_vectors(path)
    if binary is not None and (vectors.format == WORD2VEC_BINARY) != binary:
        raise PtmError(f"{path} holds {FORMAT_NAMES[vectors.format]} vectors, not {'binary' if binary else 'text'} word2vec")
    return vectors.words, vectors.vectors


# -- a vector file as a source -----------------------------------------------------------------


def read_vector_model(path: str | Path) -> Model:
    """A word2vec, GloVe or fastText .vec file, or a fastText .bin model, as a ``static`` model with a
    word-level tokenizer."""
    from ptmcli.static.fasttext_bin import is_fasttext_bin, read_fasttext_bin

    if Path(path).is_file() and is_fasttext_bin(path):
        found = read_fasttext_bin(path)
        subwords = {"buckets": found.buckets, "min_n": found.min_n, "max_n": found.max_n, "ngram_hash": NGRAM_HASH}
        return _static_model(path, found.words, found.vectors, {"format": "fasttext-bin", "class": "fastText .bin"},
                             subwords if found.buckets else {}, found.ngrams if found.buckets else None)
    vectors = read_vectors(path)
    return _static_model(path, vectors.words, vectors.vectors,
                         {"format": vectors.format, "class": FORMAT_NAMES[vectors.format]})


def _static_model(path, file_words: list[str], file_vectors: np.ndarray, kind: dict, subwords: dict | None = None,
                  ngrams: np.ndarray | None = None) -> Model:
    first_rows: dict[str, int] = {}
    for row, word in enumerate(file_words):
        first_rows.setdefault(word, row)
    notes = []
    rows = list(first_rows.values())
    if len(rows) < len(file_words):
        repeated = next(w for i, w in enumerate(file_words) if first_rows[w] != i)
        notes.append(f"left out {len(file_words) - len(rows)} repeated word(s), e.g. {repeated!r}: "
                     "each word keeps its first, most frequent, vector")
    words = list(first_rows)
    matrix = file_vectors if len(rows) == len(file_words) else file_vectors[rows]
    unknown = next((w for w in _UNKNOWN_WORDS if w in first_rows), None)
    added = []
    if unknown is None:
        unknown, added = ADDED_UNKNOWN, [ADDED_UNKNOWN]
        words.append(unknown)
        matrix = np.concatenate([matrix, np.zeros((1, matrix.shape[1]), dtype=np.float32)])
    spaced = sum(any(c.isspace() for c in w) for w in words)
    if spaced:
        notes.append(f"{spaced} word(s) contain whitespace: kept, but no text splits into them, and --to word2vec leaves them out")
    lowercase = not has_uppercase(w for w in words if w != unknown)
    source = {**kind, "path": str(path), "vectors": len(file_words), "added_tokens": added}
    state = {VECTORS: torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))}
    if ngrams is not None:
        state[NGRAMS] = torch.from_numpy(np.ascontiguousarray(ngrams, dtype=np.float32))
    model = {"vocab_size": len(words), "hidden_size": int(matrix.shape[1]), "num_layers": 0, **(subwords or {})}
    return Model(SPEC, model, None, None, state, set(), _word_tokenizer(words, unknown, lowercase), source, notes)


def _word_tokenizer(words: list[str], unknown: str, lowercase: bool):
    """A ``WordLevel`` tokenizer over whitespace-separated words, id i = ``words[i]``."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    from ptmcli.tokenization.backends import HFBackend
    from ptmcli.tokenization.tokenizer import PtmTokenizer, TokenizerSettings

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token=unknown))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if lowercase:  # a lowercase vocabulary (GloVe's 6B file, say) is meant for lowercased text
        tokenizer.normalizer = normalizers.Lowercase()
    settings = TokenizerSettings(kind="wordlevel", lowercase=lowercase, special_tokens={"unk": unknown})
    return PtmTokenizer(HFBackend(tokenizer), settings)
