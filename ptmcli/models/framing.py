"""How a family frames one or two texts for its model: special tokens, segments, and output positions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framing:
    """Where a family puts its special tokens, and which positions are features."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    skip_start: int
    """Leading positions that are context, not output."""
    skip_end: int
    """Trailing positions that are context, not output."""
    segments: bool
    """Whether the model takes segment (token type) ids."""
    pairs: bool
    pad_id: int
    closing_segment: int | None = None
    """A segment id of its own for the last suffix token (XLNet's <cls>: 2); None: it shares the text's."""

    def specials(self, paired: bool) -> int:
        return len(self.prefix) + len(self.suffix) + (len(self.middle) if paired else 0)


def first_token(tokenizer, *roles: str) -> int | None:
    """The id of the first of ``roles`` (``"cls"``, ``"eos"``...) the tokenizer has, else None."""
    for role in roles:
        value = getattr(tokenizer, f"{role}_id")
        if value is not None:
            return int(value)
    return None
