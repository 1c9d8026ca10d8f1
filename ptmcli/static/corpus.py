"""Sentences cut into chunks of vocabulary indices: the unit of work a training worker takes.

A chunk is a run of whole sentences (only a sentence longer than a chunk is
split) concatenated into one array, with the offsets where each sentence starts, so
windows can stop at sentence ends without a Python loop over sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ptmcli.static.vocab import Vocabulary

SentenceSource = Callable[[], Iterable[np.ndarray]]  # a fresh pass over the corpus per call


def sentences_of_rows(rows: Iterable, by_sentence: bool = True) -> Iterator[np.ndarray]:
    """Word-id arrays from language-model shard rows (``ShardDataset`` yields them).

    Each row is a document with ``input_ids`` and ``sentence_ends``; windows
    stop at sentence ends, or with ``by_sentence=False`` only at document ends.
    """
    for row in rows:
        ids = np.asarray(row.input_ids)
        if not by_sentence:
            yield ids
            continue
        start = 0
        for end in np.asarray(row.sentence_ends).tolist():
            if end > start:
                yield ids[start:end]
            start = end


@dataclass
class Chunk:
    index: int  # position in the epoch; seeds the chunk's random numbers
    words: np.ndarray  # int64 vocabulary indices of the kept words, sentences back to back
    bounds: np.ndarray  # int64, sentence i is words[bounds[i]:bounds[i + 1]]
    first_word: int  # kept words of the epoch before this chunk (the learning-rate clock)

    def __len__(self) -> int:
        return int(self.words.size)


def iter_chunks(sentences: Iterable[np.ndarray], vocab: Vocabulary, chunk_words: int) -> Iterator[Chunk]:
    """Encode sentences with ``vocab`` and group them into chunks of about ``chunk_words`` words."""
    pieces: list[np.ndarray] = []
    size = 0
    index = 0
    done = 0

    def flush() -> Chunk:
        lengths = np.fromiter((p.size for p in pieces), dtype=np.int64, count=len(pieces))
        bounds = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        return Chunk(index=index, words=np.concatenate(pieces), bounds=bounds, first_word=done)

    for sentence in sentences:
        encoded = vocab.encode(sentence)
        if size and size + encoded.size > chunk_words:
            yield flush()
            index, done, pieces, size = index + 1, done + size, [], 0
        # A sentence longer than a chunk is cut into chunk-sized pieces (windows stop at the cuts).
        for start in range(0, encoded.size, chunk_words):
            piece = encoded[start:start + chunk_words]
            pieces.append(piece)
            size += piece.size
            if size >= chunk_words:
                yield flush()
                index, done, pieces, size = index + 1, done + size, [], 0
    if size:
        yield flush()


def subsample(chunk: Chunk, keep: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drop each occurrence of a frequent word with its subsampling chance; returns (words, bounds)."""
    if keep is None:
        return chunk.words, chunk.bounds
    kept = rng.random(chunk.words.size) < keep[chunk.words]
    sentence_of = np.repeat(np.arange(chunk.bounds.size - 1), np.diff(chunk.bounds))
    lengths = np.bincount(sentence_of[kept], minlength=chunk.bounds.size - 1)
    bounds = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return chunk.words[kept], bounds
