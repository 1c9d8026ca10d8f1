"""The two libraries behind ``PtmTokenizer``: HF ``tokenizers`` and ``sentencepiece``.

Both offer the same small surface, so ``PtmTokenizer`` never asks which one it holds.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable

from ptmcli.errors import PtmError

SP_WORD_START = "\u2581"  # sentencepiece's ▁, the mark of a piece that begins a word

# Steps some published sentencepiece tokenizers take before the model sees the text
# (ALBERT's: LaTeX quotes to ", accents stripped, lowercased), in the order they apply.
TEXT_STEPS = ("quotes", "strip-accents", "lowercase")


def _strip_accents(text: str) -> str:
    # Decompose, then drop the nonspacing marks: what tokenizers' NFKD + StripAccents do.
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")


_STEP_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "quotes": lambda text: text.replace("``", '"').replace("''", '"'),
    "strip-accents": _strip_accents,
    "lowercase": str.lower,
}


def text_preparer(steps: tuple[str, ...]) -> Callable[[str], str] | None:
    """One function applying ``steps`` (names from ``TEXT_STEPS``) in their fixed order; None for none."""
    unknown = [s for s in steps if s not in TEXT_STEPS]
    if unknown:
        raise PtmError(f"unknown text step {unknown[0]!r}; steps are {', '.join(TEXT_STEPS)}")
    functions = [_STEP_FUNCTIONS[s] for s in TEXT_STEPS if s in steps]
    if not functions:
        return None

    def prepare(text: str) -> str:
        for function in functions:
            text = function(text)
        return text

    return prepare


def _out_of_range(token_id: int, size: int) -> PtmError:
    return PtmError(f"token id {token_id} is out of range for a vocabulary of {size}")


class HFBackend:
    """A ``tokenizers.Tokenizer`` (tokenizer.json)."""

    filename = "tokenizer.json"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def from_bytes(cls, data: bytes) -> HFBackend:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        # ptm frames, pads and truncates every sequence itself. A published tokenizer.json
        # often stores fixed-length padding and truncation, which would otherwise leak pads
        # into every text (and cut long ones silently); the file on disk keeps them.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer)

    def model_bytes(self) -> bytes:
        return self.tokenizer.to_str(pretty=True).encode("utf-8")

    def prepare(self, text: str) -> str:
        return text  # the normalizer inside the pipeline does it all, offsets included

    def describe(self) -> dict:
        return json.loads(self.tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # The "fast" variant skips offsets, which ids do not need.
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_batch_words(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        out = []
        for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False):
            words = encoding.word_ids
            starts = [w is None or i == 0 or w != words[i - 1] for i, w in enumerate(words)]
            out.append((encoding.ids, starts))
        return out

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        # The pipeline's normalizer keeps its alignments, so offsets index the original text.
        return [(e.ids, list(e.offsets)) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip: frozenset[int]) -> str:
        # tokenizers skips every token registered as special, which ``skip`` lists too.
        size = self.vocab_size
        for t in ids:
            if not 0 <= t < size:
                raise _out_of_range(t, size)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        token = self.tokenizer.id_to_token(token_id) if token_id >= 0 else None
        if token is None:
            raise _out_of_range(token_id, self.vocab_size)
        return token

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)


class SentencePieceBackend:
    """A ``sentencepiece`` model (tokenizer.model), with the text steps some published ones need first."""

    filename = "tokenizer.model"

    def __init__(self, proto: bytes, text_steps: tuple[str, ...] = ()) -> None:
        import sentencepiece

        self.proto = proto
        self._prepare = text_preparer(tuple(text_steps))
        self.text_steps = tuple(s for s in TEXT_STEPS if s in text_steps)
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
        self.threads = max(1, os.cpu_count() or 1)
        self.piece_types, self.trainer_model_type = read_sentencepiece_proto(proto)
        pieces = [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]
        # Pieces that are not learned text (control and user-defined ones: the special
        # tokens) always count as starting a word.
        self._starts_word = [p.startswith(SP_WORD_START) or self.piece_types[i] in (_CONTROL, _USER_DEFINED)
                             for i, p in enumerate(pieces)]
        self._piece_to_id = {p: i for i, p in enumerate(pieces)}

    @classmethod
    def from_bytes(cls, data: bytes, text_steps: tuple[str, ...] = (), name: str = "tokenizer.model") -> SentencePieceBackend:
        try:
            return cls(data, text_steps)
        except (RuntimeError, ValueError, IndexError) as err:
            raise PtmError(f"{name} is not a sentencepiece model: {err}") from None

    def model_bytes(self) -> bytes:
        return self.proto

    def prepare(self, text: str) -> str:
        """The text the model is given: the text steps applied."""
        return self._prepare(text) if self._prepare is not None else text

    def model_type(self) -> str:
        return {1: "unigram", 2: "sp-bpe"}.get(self.trainer_model_type, "unigram")

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._prepare is not None:
            texts = [self._prepare(t) for t in texts]
        return self.processor.encode(texts, out_type=int, num_threads=self.threads)

    def encode_batch_words(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        starts = self._starts_word
        return [(ids, [i == 0 or starts[t] for i, t in enumerate(ids)]) for ids in self.encode_batch(texts)]

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        out = []
        for text in texts:
            prepared = self.prepare(text)
            if len(prepared) != len(text):
                # Text steps that change the length (stripped accents) lose the way back to the original.
                raise PtmError("this sentencepiece tokenizer's text steps change the text's length; "
                               "character offsets into the original text are not available")
            pieces = self.processor.encode(prepared, out_type="immutable_proto").pieces
            char_at = _char_index_of_bytes(prepared)
            out.append(([p.id for p in pieces], [(char_at[p.begin], char_at[p.end]) for p in pieces]))
        return out

    def special_piece_ids(self) -> list[int]:
        """Ids of the unknown, control and user-defined pieces."""
        return [i for i, t in enumerate(self.piece_types) if t in (_UNKNOWN, _CONTROL, _USER_DEFINED)]

    def decode(self, ids: list[int], skip: frozenset[int]) -> str:
        size = self.vocab_size
        for t in ids:
            if not 0 <= t < size:
                raise _out_of_range(t, size)
        return self.processor.decode([t for t in ids if t not in skip])

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise _out_of_range(token_id, self.vocab_size)
        return self.processor.id_to_piece(token_id)

    def token_to_id(self, token: str) -> int | None:
        # piece_to_id answers unk's id for unknown pieces; a dict tells them apart.
        return self._piece_to_id.get(token)


_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4  # SentencePiece.Type in sentencepiece_model.proto


def _char_index_of_bytes(text: str) -> list[int]:
    """For each UTF-8 byte position of ``text`` (and its end), the index of the character it lies in."""
    index = []
    for i, char in enumerate(text):
        index.extend([i] * len(char.encode("utf-8")))
    index.append(len(text))
    return index


def read_sentencepiece_proto(data: bytes) -> tuple[list[int], int]:
    """(type of each piece, trainer model type) from a serialized ModelProto.

    Read straight off the protobuf wire format: the two fields needed do not
    justify depending on the protobuf package.
    """
    types: list[int] = []
    model_type = 1
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):  # repeated SentencePiece pieces
            piece_type = _NORMAL
            for inner, inner_value in _fields(value):
                if inner == 3:
                    piece_type = inner_value
            types.append(piece_type)
        elif number == 2 and isinstance(value, bytes):  # TrainerSpec
            for inner, inner_value in _fields(value):
                if inner == 3:
                    model_type = inner_value
    return types, model_type


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value if wire != 1 and wire != 5 else None
