"""Raw text to score -> a stream of encoded sentences, each with its count of words.

Documents come from ``ptmcli.textio.inputs`` (files, globs, stdin, gzip; every
format ptm reads), so memory stays flat on any input and a bad byte is
reported at its file and line. Paragraphs are split into sentences and encoded
as ``ptm tokenize encode`` does for pretraining, so a model is scored on text
tokenized the way it was trained. Sentences are encoded in batches.

Words are the whitespace-separated words of the original text: per-word
perplexity divides by them, so models with different tokenizers compare.

WikiText's raw files (" = Title = " headings, blank lines between paragraphs)
read as plain text would make every paragraph a document; the ``wikitext``
format keeps one document per article instead: a new one starts at each
top-level heading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ptmcli.data.sentences import split_sentences
from ptmcli.errors import PtmError
from ptmcli.textio.inputs import iter_documents
from ptmcli.textio.records import Document, ReadStats

# Sentences encoded per tokenizer call: big enough for its batching, small enough to stream.
_ENCODE_SENTENCES = 1024
_ENCODE_CHARS = 1 << 18

# " = Title = " but not " = = Section = = ".
_ARTICLE_HEADING = re.compile(r"^\s*= (?!=)\S.*? =\s*$")


@dataclass
class Sentence:
    """One encoded sentence (or line) of the input."""

    ids: np.ndarray
    """Token ids (int64), no special tokens."""
    words: int
    """Whitespace-separated words of its text."""
    document_start: bool
    """First sentence of a document."""
    line_start: bool
    """First sentence of a line (paragraph)."""


@dataclass
class CorpusStats:
    """What was read and encoded; filled while the sentences are consumed."""

    documents: int = 0
    lines: int = 0
    sentences: int = 0
    tokens: int = 0
    words: int = 0
    truncated: bool = False
    """Reading stopped at ``max_tokens`` before the end of the input."""
    read: ReadStats = field(default_factory=ReadStats)


def is_article_heading(line: str) -> bool:
    """A WikiText top-level heading such as `` = Homarus gammarus = ``."""
    return bool(_ARTICLE_HEADING.match(line))


def group_wikitext(documents: Iterable[Document], always: bool) -> Iterator[Document]:
    """Merge WikiText paragraphs back into articles: a new document at each top-level heading.

    With ``always`` False a file is regrouped only if its first document is a
    lone top-level heading (how WikiText files begin); other files pass through.
    """
    current: Document | None = None
    source: str | None = None
    regroup = always
    for document in documents:
        if document.source != source:
            if current is not None:
                yield current
                current = None
            source = document.source
            regroup = always or (len(document.paragraphs) == 1 and is_article_heading(document.paragraphs[0]))
        if not regroup:
            yield document
            continue
        if current is None or is_article_heading(document.paragraphs[0]):
            if current is not None:
                yield current
            current = Document(document.source, document.line, list(document.paragraphs), document.title)
        else:
            current.paragraphs.extend(document.paragraphs)
    if current is not None:
        yield current


def read_documents(data: str, fmt: str, text_field: str, stats: ReadStats, errors: str = "strict") -> Iterator[Document]:
    """Documents of ``data`` (a path, glob, directory or -) in ``fmt`` (``wikitext`` included)."""
    base = "text" if fmt == "wikitext" else fmt
    documents = iter_documents([data], fmt=base, text_field=text_field, errors=errors, stats=stats)
    if fmt in ("wikitext", "auto"):
        return group_wikitext(documents, always=fmt == "wikitext")
    return documents


def _pieces(document: Document, split: bool) -> Iterator[tuple[str, bool]]:
    """(text, starts a line) for each sentence (or whole line) of a document."""
    for paragraph in document.paragraphs:
        parts = split_sentences(paragraph) if split else [paragraph.strip()]
        for k, text in enumerate(p for p in parts if p):
            yield text, k == 0


def iter_sentences(
    documents: Iterable[Document],
    tokenizer,
    *,
    split: bool = True,
    max_tokens: int | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Sentence]:
    """Encoded sentences of ``documents`` in order; sentences with no tokens are dropped.

    With ``max_tokens``, stops after the sentence that brings the token count to
    it and sets ``stats.truncated`` if any text was left. ``stats`` counts only
    what was yielded, so its words are exactly those of the scored text.
    """
    if max_tokens is not None and max_tokens < 1:
        raise PtmError(f"--max-tokens {max_tokens}: must be positive")
    stats = stats if stats is not None else CorpusStats()
    pending: list[tuple[str, bool, bool]] = []  # (text, document start, line start)
    chars = 0

    def encoded() -> Iterator[Sentence]:
        ids = tokenizer.encode_batch([text for text, _, _ in pending])
        new_document = False
        for (text, document_start, line_start), sentence_ids in zip(pending, ids):
            new_document |= document_start
            if not sentence_ids:
                continue
            yield Sentence(np.asarray(sentence_ids, dtype=np.int64), len(text.split()), new_document, line_start)
            new_document = False

    def take(batch: Iterator[Sentence]) -> Iterator[Sentence]:
        for sentence in batch:
            if max_tokens is not None and stats.tokens >= max_tokens:
                stats.truncated = True
                return
            stats.sentences += 1
            stats.tokens += len(sentence.ids)
            stats.words += sentence.words
            stats.documents += sentence.document_start
            stats.lines += sentence.line_start
            yield sentence

    for document in documents:
        if max_tokens is not None and stats.tokens >= max_tokens:
            stats.truncated = True  # text is left; not reading it is the point
            return
        first = True
        for text, line_start in _pieces(document, split):
            pending.append((text, first, line_start))
            first = False
            chars += len(text)
            if len(pending) >= _ENCODE_SENTENCES or chars >= _ENCODE_CHARS:
                yield from take(encoded())
                pending, chars = [], 0
                if stats.truncated:
                    return
    if pending:
        yield from take(encoded())
