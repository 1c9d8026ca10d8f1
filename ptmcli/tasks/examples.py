"""The records labeled-data readers produce."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LabeledExample:
    """One example: its texts, and its label in the task's form.

    - ``texts``: one text (classification), two (pairs), the context of a
      multiple-choice item, or the words joined by spaces (token classification);
    - ``label``: a class name (str), a score (float, regression), the index of
      the right choice (int, multiple choice), or None when the file has none;
    - ``words`` / ``word_labels``: token classification only (``word_labels`` None
      for an unlabeled file);
    - ``choices``: multiple choice only;
    - ``line``: the 1-based line of the file where the example starts.
    """

    texts: tuple[str, ...]
    label: str | float | int | None
    words: tuple[str, ...] | None = None
    word_labels: tuple[str, ...] | None = None
    choices: tuple[str, ...] | None = None
    line: int = 0


@dataclass
class LabeledFile:
    """What a reader found: the examples, the format, and which columns it used."""

    path: str
    format: str
    examples: list[LabeledExample]
    text_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    choice_columns: list[str] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        return any(e.label is not None or e.word_labels is not None for e in self.examples)

    def columns(self) -> dict:
        """The column choices, as recorded in a shard manifest."""
        return {"text": list(self.text_columns), "label": self.label_column, "choices": list(self.choice_columns)}
