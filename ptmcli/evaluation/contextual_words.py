"""Word vectors from a contextual model: a word's mean top-layer vector over its occurrences in a text.

For each word a probe needs, the text is read (streamed) until the word has
been seen ``cap`` times or the text ends. Each sentence holding a needed word
is framed as the family frames one text and run through the model; an
occurrence's vector is the mean of the top-layer vectors of the word's
sub-tokens, and the word's vector the mean over its occurrences. Words are
the whitespace-separated words of a sentence with punctuation at their edges
split off (``Athens,`` is ``Athens``), matched lowercased when the probe
lowercases. Sentences longer than the context are cut; occurrences cut off
are not counted. Reading stops as soon as every needed word has its
``cap`` occurrences.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ptmcli.data.sentences import split_sentences
from ptmcli.evaluation.corpus import read_documents
from ptmcli.features.alignment import encode_with_words
from ptmcli.textio.records import ReadStats

OCCURRENCES_PER_WORD = 100
_PUNCTUATION = string.punctuation + "«»“”‘’„…"


@dataclass
class ContextualVectors:
    words: list[str]
    """The needed words found in the text (their matching form), most often seen first."""
    vectors: np.ndarray
    """``[len(words), D]`` float32."""
    occurrences: dict[str, int] = field(default_factory=dict)
    sentences_read: int = 0
    sentences_run: int = 0


def split_off_punctuation(sentence: str) -> list[str]:
    """The sentence's whitespace words, with leading and trailing punctuation as words of their own."""
    units: list[str] = []
    for word in sentence.split():
        core = word.strip(_PUNCTUATION)
        if not core:
            units.append(word)
            continue
        start = word.index(core)
        units.extend(p for p in (word[:start], core, word[start + len(core):]) if p)
    return units


def contextual_vectors(loaded, needed: set[str], path: str, *, lowercase: bool, context: int, batch_size: int,
                       device: torch.device, precision: str = "fp32", fmt: str = "auto", text_field: str = "text",
                       errors: str = "strict", split: bool = True, cap: int = OCCURRENCES_PER_WORD) -> ContextualVectors:
    """Mean top-layer vectors of ``needed`` words (their matching form) over their occurrences in ``path``."""
    from ptmcli.runtime.device import autocast

    def match(word: str) -> str:
        return word.lower() if lowercase else word

    wanted = {match(w) for w in needed}
    counts: dict[str, int] = {}
    sums: dict[str, torch.Tensor] = {}
    result = ContextualVectors([], np.zeros((0, 0), dtype=np.float32))
    framing = loaded.family.framing(loaded.tokenizer)
    room = max(1, context - framing.specials(False))

    def run(queued: list[tuple[str, list[tuple[int, str]]]]) -> None:
        encoded = encode_with_words(loaded.tokenizer, [text for text, _ in queued])
        rows, owners = [], []
        for (ids, word_of, _), _ in zip(encoded, queued):
            rows.append([*framing.prefix, *ids[:room], *framing.suffix])
            owners.append(word_of[:room])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), framing.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, : len(row)] = torch.tensor(row)
            mask[b, : len(row)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        types = torch.zeros_like(input_ids) if framing.segments else None
        with torch.no_grad(), autocast(precision, device):
            top = loaded.family.top(loaded.model, input_ids, types, mask).float()
        offset = len(framing.prefix)
        for b, ((_, targets), owner) in enumerate(zip(queued, owners)):
            units = np.asarray(owner)
            for unit, key in targets:
                positions = np.flatnonzero(units == unit)
                if positions.size == 0 or counts.get(key, 0) >= cap:
                    continue  # cut off by the context, or a fuller batch got there first
                vector = top[b, torch.as_tensor(positions + offset, device=top.device)].mean(dim=0).cpu()
                sums[key] = sums[key] + vector if key in sums else vector
                counts[key] = counts.get(key, 0) + 1
                if counts[key] >= cap:
                    wanted.discard(key)
        result.sentences_run += len(queued)

    queued: list[tuple[str, list[tuple[int, str]]]] = []
    for sentence in _sentences(path, fmt, text_field, errors, split):
        if not wanted:
            break
        result.sentences_read += 1
        units = split_off_punctuation(sentence)
        targets = [(i, match(u)) for i, u in enumerate(units) if match(u) in wanted]
        if targets:
            queued.append((" ".join(units), targets))
        if len(queued) >= max(batch_size, 1):
            run(queued)
            queued = []
    if queued and wanted:
        run(queued)
    found = sorted(counts, key=lambda w: -counts[w])
    dim = next(iter(sums.values())).shape[0] if sums else 0
    result.words = found
    result.vectors = np.stack([(sums[w] / counts[w]).numpy() for w in found]).astype(np.float32) if found \
        else np.zeros((0, dim), dtype=np.float32)
    result.occurrences = {w: counts[w] for w in found}
    return result


def _sentences(path: str, fmt: str, text_field: str, errors: str, split: bool) -> Iterator[str]:
    for document in read_documents(path, fmt, text_field, ReadStats(), errors):
        for paragraph in document.paragraphs:
            for sentence in split_sentences(paragraph) if split else [paragraph]:
                if sentence.strip():
                    yield sentence
