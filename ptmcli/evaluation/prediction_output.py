"""Prediction records on a text stream: JSON lines, or TSV.

- ``jsonl``: each record as one JSON object (see ``prediction``).
- ``tsv``: a header, then per example the input's text cells followed by
  ``label`` and ``score`` (classification), ``score`` (regression) or
  ``choice`` and ``score`` (multiple choice: the picked choice's index and
  probability). Token classification writes CoNLL-style lines instead, one
  ``word<TAB>tag`` line per word and a blank line after each sentence, no
  header. Tabs and line breaks inside a text become spaces, so every example
  stays one line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from ptmcli.tasks.examples import LabeledExample

_GENERIC_TEXT_COLUMNS = ("text", "text_b")


def _cell(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


class PredictionWriter:
    """Writes the records of each chunk to ``out`` as soon as they come."""

    def __init__(self, out: TextIO, output_format: str, task: str, text_columns: Sequence[str]) -> None:
        self.out, self.format, self.task = out, output_format, task
        self.text_columns = list(text_columns)
        self._header_written = False

    def write(self, examples: Sequence[LabeledExample], records: Sequence[dict]) -> None:
        if self.format == "jsonl":
            lines = [json.dumps(record, ensure_ascii=False) for record in records]
        elif self.task == "token-classification":
            lines = ["\n".join(f"{_cell(word)}\t{tag}" for word, tag in zip(r["tokens"], r["tags"])) + "\n"
                     for r in records]
        else:
            lines = self._table_lines(examples, records)
        if lines:
            self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def _table_lines(self, examples: Sequence[LabeledExample], records: Sequence[dict]) -> list[str]:
        lines = []
        if not self._header_written and examples:
            width = len(examples[0].texts)
            if len(self.text_columns) != width:
                self.text_columns = [_GENERIC_TEXT_COLUMNS[i] if i < 2 else f"text_{i}" for i in range(width)]
            extra = {"regression": ["score"], "multiple-choice": ["choice", "score"]}.get(self.task, ["label", "score"])
            lines.append("\t".join([*self.text_columns, *extra]))
            self._header_written = True
        for example, record in zip(examples, records):
            texts = [_cell(t) for t in example.texts]
            texts += [""] * (len(self.text_columns) - len(texts))
            if self.task == "regression":
                extra = [str(record["score"])]
            elif self.task == "multiple-choice":
                extra = [str(record["choice"]), str(record["probabilities"][record["choice"]])]
            else:
                extra = [record["label"], str(record["score"])]
            lines.append("\t".join([*texts, *extra]))
        return lines
