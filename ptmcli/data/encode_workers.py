"""Encoding chunks of documents into flat token buffers, here or in worker processes.

A chunk is a list of documents, each a list of paragraphs. ``encode_documents``
splits the paragraphs into sentences, encodes all of them with one batched
tokenizer call and flattens the result into numpy buffers (``EncodedChunk``),
which the shard writer turns into Arrow arrays without a Python list per row.
``ChunkEncoder`` runs that over a stream of chunks in worker processes, with a
bounded number in flight, returning results in input order.

Workers are forked on Linux (no interpreter start-up per worker) and spawned
elsewhere. Each runs the tokenizer on one thread (TOKENIZERS_PARALLELISM=false):
N single-threaded processes keep N cores busier than one process with N
tokenizer threads, because the Python work around each call runs in parallel
too. It is also what makes forking safe: Hugging Face ``tokenizers`` keeps a
Rust thread pool that does not survive a fork, so a forked worker must never
use it. The variable is set while the workers fork as well, so the library
does not warn in them should this process have used its pool before. With one
worker everything runs in this process, on the tokenizer's own threads.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np

from ptmcli.data.sentences import split_sentences as _split
from ptmcli.tokenization.word_segmenters import encode_words

CHUNK_DOCUMENTS = 256
CHUNK_CHARS = 128 * 1024
IN_FLIGHT_PER_WORKER = 3
START_METHOD: str | None = None  # None: "fork" on Linux, "spawn" elsewhere


@dataclass
class EncodedChunk:
    """Encoded documents, flattened: what an encoding worker hands to the writer."""

    token_ids: np.ndarray  # int32: tokens of every kept document, back to back
    doc_lengths: np.ndarray  # int64: tokens per kept document
    sentence_ends: np.ndarray  # int32: each document's exclusive sentence end offsets, back to back
    doc_sentences: np.ndarray  # int64: sentences per kept document
    word_starts: np.ndarray | None  # bool, one per token, or None when not written
    empty_documents: int = 0  # documents dropped because they encoded to no tokens

    @property
    def rows(self) -> int:
        return len(self.doc_lengths)


# Pre-tokenizers that split on whitespace: a token never spans two sentences.
_WHITESPACE_PRE_TOKENIZERS = ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")
# Sentence markers to try, best first: punctuation the pre-tokenizer isolates is
# cheaper for the tokenizer than a special token, which it matches separately.
_MARKER_CHARACTERS = ("~", "|", "^", "`", "¶", "§")


@dataclass
class WordPieceShortcut:
    """What lets a WordPiece tokenizer encode a paragraph's sentences at once (see ``wordpiece_shortcut``)."""

    word_table: np.ndarray  # bool per id: the piece starts a word
    markers: list[tuple[str, int]]  # (text, id) of tokens to put after each sentence, best first


def wordpiece_shortcut(tokenizer) -> WordPieceShortcut | None:
    """A faster, exactly equivalent way to encode with a WordPiece tokenizer, or None.

    Two facts about WordPiece with a whitespace-splitting pre-tokenizer make it:
    every piece that continues a word carries the continuation prefix (``##``)
    and every other piece starts one, so the flags of ``encode_batch_words`` are
    a lookup by id and the tokenizer's fast path (no offsets, no word ids) will
    do; and tokens never cross whitespace, so a paragraph's sentences can be
    encoded as one text with a marker token after each sentence (one that does
    not occur in the text), whose positions then give the sentence ends. The
    tokenizer's cost per input text is then paid per paragraph rather than per
    sentence, and no Python work is done per token.
    """
    if getattr(tokenizer, "kind", None) != "wordpiece":
        return None
    backend = getattr(tokenizer, "backend", None)
    prefix = getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)
    pre_tokenizer = type(getattr(backend, "pre_tokenizer", None)).__name__
    if not prefix or pre_tokenizer not in _WHITESPACE_PRE_TOKENIZERS or not hasattr(backend, "get_vocab"):
        return None
    vocab = backend.get_vocab(with_added_tokens=True)
    added = set(backend.get_added_tokens_decoder())
    table = np.ones(max(vocab.values()) + 1, dtype=np.bool_)
    for token, token_id in vocab.items():
        if token.startswith(prefix) and token_id not in added:
            table[token_id] = False
    specials = tokenizer.special_tokens
    candidates = list(_MARKER_CHARACTERS) + [specials[r] for r in ("sep", "cls", "pad") if r in specials]
    a, b = tokenizer.encode_batch(["a", "b"])
    markers = []
    for marker in candidates:
        marker_id = tokenizer.token_to_id(marker)
        # It must come out as that one token wherever it stands, and never be [UNK].
        if marker_id is not None and marker_id != tokenizer.unk_id and tokenizer.encode_batch(
            [f"a {marker} b {marker} "]
        ) == [a + [marker_id] + b + [marker_id]]:
            markers.append((marker, marker_id))
    return WordPieceShortcut(table, markers) if markers else None


def _encode_sentences(tokenizer, sentences: list[str], per_paragraph: list[int], word_starts: bool,
                      shortcut: WordPieceShortcut | None,
                      segmenter: str = "tokenizer") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(token ids of all sentences back to back, tokens per sentence, word-start flags or None).

    ``segmenter`` names where words begin (``tokenization.word_segmenters``); another than the
    tokenizer's own words goes without the shortcut, whose word starts are the tokenizer's.

    ``per_paragraph`` counts the sentences of each paragraph: with the shortcut
    a paragraph's sentences are encoded as one text (inputs of paragraph size
    are what the tokenizer handles fastest; whole documents are slower).
    """
    if word_starts and segmenter != "tokenizer":
        shortcut = None
    marker = None
    if shortcut is not None and len(per_paragraph) < len(sentences):
        text = "\n".join(sentences)
        marker = next(((m, i) for m, i in shortcut.markers if m not in text), None)
    if marker is not None:
        separator = f" {marker[0]} "
        texts, start = [], 0
        for count in per_paragraph:
            texts.append(separator.join(sentences[start : start + count]) + separator if count else "")
            start += count
        ids = tokenizer.encode_batch(texts)
        joined = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=sum(map(len, ids)))
        is_marker = joined == marker[1]
        ends = np.flatnonzero(is_marker)
        if len(ends) == len(sentences):
            ends -= np.arange(len(ends))  # in tokens without the markers
            token_ids = joined[~is_marker]
            return token_ids, np.diff(ends, prepend=0), shortcut.word_table[token_ids] if word_starts else None
    flags = None
    if word_starts and shortcut is None:
        encoded = encode_words(tokenizer, sentences, segmenter)
        ids = [pair[0] for pair in encoded]
        flags = [pair[1] for pair in encoded]
    else:
        ids = tokenizer.encode_batch(sentences)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    total = int(lengths.sum())
    token_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=total)
    if flags is not None:
        return token_ids, lengths, np.fromiter(chain.from_iterable(flags), dtype=np.bool_, count=total)
    return token_ids, lengths, shortcut.word_table[token_ids] if word_starts else None


def encode_documents(tokenizer, documents: list[list[str]], split_sentences: bool = True,
                     word_starts: bool = True, shortcut: WordPieceShortcut | None = None,
                     segmenter: str = "tokenizer") -> EncodedChunk:
    """Encode documents (each a list of paragraphs) into one flat ``EncodedChunk``.

    All sentences of all documents go through one batched tokenizer call.
    Sentences that encode to no tokens are dropped; documents left without
    tokens are dropped and counted.
    """
    sentences: list[str] = []
    per_paragraph: list[int] = []
    per_document = np.empty(len(documents), dtype=np.int64)
    for d, paragraphs in enumerate(documents):
        before = len(sentences)
        if split_sentences:
            for paragraph in paragraphs:
                split = _split(paragraph)
                sentences.extend(split)
                per_paragraph.append(len(split))
        else:
            sentences.extend(p.strip() for p in paragraphs if p.strip())
        per_document[d] = len(sentences) - before
    if not split_sentences:
        per_paragraph = [1] * len(sentences)
    token_ids, lengths, starts = _encode_sentences(tokenizer, sentences, per_paragraph, word_starts, shortcut, segmenter)

    sentence_document = np.repeat(np.arange(len(documents)), per_document)
    doc_lengths = np.bincount(sentence_document, weights=lengths, minlength=len(documents)).astype(np.int64)
    doc_starts = np.zeros(len(documents), dtype=np.int64)
    np.cumsum(doc_lengths[:-1], out=doc_starts[1:])
    kept_sentences = lengths > 0
    sentence_ends = np.cumsum(lengths)[kept_sentences] - doc_starts[sentence_document[kept_sentences]]
    doc_sentences = np.bincount(sentence_document[kept_sentences], minlength=len(documents))
    kept_documents = doc_lengths > 0
    return EncodedChunk(
        token_ids=token_ids,
        doc_lengths=doc_lengths[kept_documents],
        sentence_ends=sentence_ends.astype(np.int32),
        doc_sentences=doc_sentences[kept_documents].astype(np.int64),
        word_starts=starts,
        empty_documents=int(len(documents) - kept_documents.sum()),
    )


# -- worker processes ---------------------------------------------------------------------

_worker_tokenizer: tuple[str, object] | None = None  # (directory, PtmTokenizer)
_worker_shortcut: WordPieceShortcut | None = None


def _start_worker(tokenizer_dir: str) -> None:
    # Ctrl-C reaches the whole process group; the main process alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _worker_tokenizer, _worker_shortcut
    if _worker_tokenizer is None or _worker_tokenizer[0] != tokenizer_dir:  # not inherited through fork
        from ptmcli.tokenization.tokenizer import PtmTokenizer

        _worker_tokenizer = (tokenizer_dir, PtmTokenizer.load(tokenizer_dir))
    _worker_shortcut = wordpiece_shortcut(_worker_tokenizer[1])


def _encode_in_worker(documents: list[list[str]], split_sentences: bool, word_starts: bool, segmenter: str) -> EncodedChunk:
    return encode_documents(_worker_tokenizer[1], documents, split_sentences, word_starts, _worker_shortcut, segmenter)


def chunk_documents(documents: Iterable[list[str]], max_documents: int = CHUNK_DOCUMENTS,
                    max_chars: int = CHUNK_CHARS) -> Iterator[list[list[str]]]:
    """Group documents (lists of paragraphs) into chunks of bounded count and size."""
    chunk: list[list[str]] = []
    chars = 0
    for paragraphs in documents:
        chunk.append(paragraphs)
        chars += sum(map(len, paragraphs))
        if len(chunk) >= max_documents or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class ChunkEncoder:
    """Encodes chunks of documents in this process or in a pool of worker processes.

    The pool starts (forks) as soon as the encoder is made, so the caller's
    remaining set-up overlaps with the workers' start. Use it as a context
    manager: leaving it stops the workers, also on errors and Ctrl-C.
    """

    def __init__(self, tokenizer, tokenizer_dir: str, workers: int, split_sentences: bool, word_starts: bool,
                 segmenter: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.workers = workers
        self.split_sentences = split_sentences
        self.word_starts = word_starts
        self.segmenter = segmenter
        self._executor: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[Future, object]] = deque()
        if workers > 1:
            self._executor = _start_pool(tokenizer, tokenizer_dir, workers)

    def map(self, chunks: Iterable) -> Iterator[tuple[EncodedChunk, object]]:
        """(encoded chunk, tag) for each (documents, tag) of ``chunks``, in input order.

        With workers, at most ``IN_FLIGHT_PER_WORKER`` chunks per worker are
        waiting or running, so reading never runs far ahead of encoding.
        """
        if self._executor is None:
            shortcut = wordpiece_shortcut(self.tokenizer)
            for documents, tag in chunks:
                yield encode_documents(self.tokenizer, documents, self.split_sentences, self.word_starts,
                                       shortcut, self.segmenter), tag
            return
        pending = self._pending
        for documents, tag in chunks:
            future = self._executor.submit(_encode_in_worker, documents, self.split_sentences, self.word_starts,
                                           self.segmenter)
            pending.append((future, tag))
            if len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                future, oldest_tag = pending.popleft()
                yield future.result(), oldest_tag
        while pending:
            future, tag = pending.popleft()
            yield future.result(), tag

    def close(self) -> None:
        global _worker_tokenizer, _worker_shortcut
        if self._executor is not None:
            for future, _ in self._pending:
                future.cancel()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            _worker_tokenizer = _worker_shortcut = None

    def __enter__(self) -> ChunkEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_pool(tokenizer, tokenizer_dir: str, workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    global _worker_tokenizer
    method = START_METHOD or ("fork" if sys.platform.startswith("linux") else "spawn")
    if method == "fork":
        # Forked workers inherit the loaded tokenizer instead of reading it again.
        _worker_tokenizer = (tokenizer_dir, tokenizer)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_start_worker, initargs=(tokenizer_dir,))
    # A forking pool starts every worker on its first task. With the variable set
    # while they fork, tokenizers does not warn in them about a thread pool this
    # process may have used earlier (the workers never use it: see the top).
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        executor.submit(int)
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    return executor
