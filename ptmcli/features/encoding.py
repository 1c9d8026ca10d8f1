"""Records to model inputs: each family's special tokens, truncation, and which positions are output.

- BERT: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with segment ids 0/1, as
  google-research/bert builds them; every position is output ([CLS] and [SEP]
  included, as its ``extract_features.py`` writes them).
- GPT: the end-of-text token (eos, else [SEP]: what precedes every document
  in pretraining) then the text, and ``a <end> b`` for a pair. The leading token
  is context only: it is not output.
- XLNet: ``a <sep> <cls>`` and ``a <sep> b <sep> <cls>``, <cls> in a segment of its
  own (2); the two closing tokens are context only.
- ELMo: ``<begin> text <end>`` (bos/eos, else [CLS]/[SEP], as pretraining wraps
  blocks); the boundaries are context only, as in allennlp's ELMo. No pairs.

Texts longer than the sequence limit are cut at the end; a pair loses tokens
from its longer text first (google-research/bert's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.errors import PtmError
from ptmcli.features.readers import TextRecord
from ptmcli.models.framing import Framing


@dataclass
class EncodedText:
    record: TextRecord
    input_ids: list[int]
    type_ids: list[int] | None
    output_start: int
    output_end: int
    word_ids: list[int] | None
    """Per input position: the word it belongs to, or -1 (special tokens, spaces, or no --words)."""
    words: list[str] | None
    truncated: bool

    @property
    def num_outputs(self) -> int:
        return self.output_end - self.output_start


def _truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """Cut the longer of the two one token at a time until both fit."""
    keep_a, keep_b = len(a), len(b)
    while keep_a + keep_b > budget:
        if keep_a > keep_b:
            keep_a -= 1
        else:
            keep_b -= 1
    return a[:keep_a], b[:keep_b]


def encode_records(records: list[TextRecord], tokenizer, framing: Framing, max_length: int,
                   with_words: bool) -> list[EncodedText]:
    """Tokenize a group of records in one batched call and frame each for the model."""
    if not framing.pairs:
        paired = next((r for r in records if r.text_b is not None), None)
        if paired is not None:
            raise PtmError(f"input line {paired.line} holds a text pair (' ||| '), which this model cannot take "
                           "(use --input-format tokens to read ' ||| ' as text)")
    texts = [r.text_a for r in records] + [r.text_b for r in records if r.text_b is not None]
    if with_words:
        from ptmcli.features.alignment import encode_with_words

        encoded = encode_with_words(tokenizer, texts)
    else:
        encoded = [(ids, None, None) for ids in tokenizer.encode_batch(texts)]
    second = iter(encoded[len(records):])
    out = []
    for record, first in zip(records, encoded):
        pair = next(second) if record.text_b is not None else None
        out.append(_frame(record, first, pair, framing, max_length))
    return out


def _frame(record: TextRecord, first, pair, framing: Framing, max_length: int) -> EncodedText:
    ids_a, words_a, names_a = first
    budget = max_length - framing.specials(pair is not None)
    if budget < 1:
        raise PtmError(f"--max-seq-length {max_length} leaves no room for text beside the {framing.specials(pair is not None)} special tokens")
    if pair is None:
        ids_b, words_b, names_b = [], [], []
        truncated = len(ids_a) > budget
        ids_a = ids_a[:budget]
    else:
        ids_b, words_b, names_b = pair
        truncated = len(ids_a) + len(ids_b) > budget
        ids_a, ids_b = _truncate_pair(ids_a, ids_b, budget)
    middle = list(framing.middle) if pair is not None else []
    ids = [*framing.prefix, *ids_a, *middle, *ids_b, *framing.suffix]
    type_ids = None
    if framing.segments:
        first_len = len(framing.prefix) + len(ids_a) + len(middle)
        type_ids = [0] * first_len + [1] * (len(ids) - first_len) if pair is not None else [0] * len(ids)
        if framing.closing_segment is not None and framing.suffix:
            type_ids[-1] = framing.closing_segment
    word_ids = words = None
    if words_a is not None:
        offset = len(names_a)
        shifted_b = [w + offset if w >= 0 else -1 for w in (words_b or [])[: len(ids_b)]]
        word_ids = ([-1] * len(framing.prefix) + list(words_a[: len(ids_a)]) + [-1] * len(middle)
                    + shifted_b + [-1] * len(framing.suffix))
        words = list(names_a) + list(names_b or [])
    return EncodedText(record, ids, type_ids, framing.skip_start, len(ids) - framing.skip_end, word_ids, words, truncated)
