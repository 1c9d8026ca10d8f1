"""Which input word each sub-token belongs to, from the tokenizer's character offsets.

Words are the whitespace-separated pieces of the text, so a word means the same
thing for every tokenizer (and is exactly a token of pre-tokenized input). A
sub-token belongs to the word holding the first non-space character it covers;
a token covering only spaces (byte-level BPE's lone "Ġ") belongs to no word.
The Hugging Face ``tokenizers`` backend gives character offsets, sentencepiece
gives byte offsets; both map back to the original text, through lowercasing,
accent stripping and other normalisation.
"""

from __future__ import annotations

import re

from ptmcli.errors import PtmError

_WORD = re.compile(r"\S+")


def split_words(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the whitespace-separated words of ``text``."""
    return [match.span() for match in _WORD.finditer(text)]


def _char_words(text: str, spans: list[tuple[int, int]]) -> list[int]:
    owner = [-1] * (len(text) + 1)
    for word, (start, end) in enumerate(spans):
        owner[start:end] = [word] * (end - start)
    return owner


def _token_words(offsets, owner: list[int]) -> list[int]:
    words = []
    for start, end in offsets:
        word = -1
        for position in range(start, min(end, len(owner) - 1)):
            if owner[position] >= 0:
                word = owner[position]
                break
        words.append(word)
    return words


def encode_with_words(tokenizer, texts: list[str]) -> list[tuple[list[int], list[int], list[str]]]:
    """(ids, word index of each id or -1, the words) per text; ids without special tokens."""
    backend = tokenizer.backend
    results = []
    if hasattr(backend, "encode_batch"):  # tokenizers.Tokenizer
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        for text, encoding in zip(texts, encodings):
            spans = split_words(text)
            words = _token_words(encoding.offsets, _char_words(text, spans))
            results.append((list(encoding.ids), words, [text[s:e] for s, e in spans]))
        return results
    if hasattr(backend, "encode") and hasattr(backend, "id_to_piece"):  # sentencepiece
        # Offsets refer to the text after the tokenizer's text steps, whose words are the same.
        prepared = [tokenizer.prepare_text(t) for t in texts]
        protos = backend.encode(prepared, return_type="proto")
        for original, text, proto in zip(texts, prepared, protos):
            spans = split_words(text)
            names = [original[s:e] for s, e in split_words(original)]
            char_owner = _char_words(text, spans)
            # sentencepiece offsets count UTF-8 bytes: give every byte its character's word.
            byte_owner = [w for ch, w in zip(text, char_owner) for _ in range(len(ch.encode("utf-8")))] + [-1]
            offsets = [(piece.begin, piece.end) for piece in proto.pieces]
            results.append(([piece.id for piece in proto.pieces], _token_words(offsets, byte_owner),
                            names if len(names) == len(spans) else [text[s:e] for s, e in spans]))
        return results
    raise PtmError(f"--words needs token offsets, which this tokenizer ({type(backend).__name__}) does not give")
