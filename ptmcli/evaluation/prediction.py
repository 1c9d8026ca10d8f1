"""A finetuned task model's predictions for unlabeled examples, one record per example.

Examples are encoded as ``ptm finetune`` encodes them (the checkpoint's input
style, ``max_len`` and label list) and run through the model in batches
sorted by length, as ``ptm eval`` runs them, so a prediction here equals the
one ``ptm eval --predictions`` writes for the same text. Records, in example
order (``line``: where the example starts in its input):

- classification, pair-classification: ``text`` (and ``text_b``), ``label``,
  ``score`` (its probability), ``probabilities`` (label -> probability);
- regression: ``text`` (and ``text_b``), ``score``;
- token-classification: ``tokens``, ``tags`` (one per word), ``spans``: the
  entities of the tags as conlleval reads BIO/IOB/IOBES tags, ``start`` and
  ``end`` word indices (``end`` exclusive: ``tokens[start:end]``), ``type``
  and ``text``;
- multiple-choice: ``text`` (the context), ``choices``, ``choice`` (the index
  picked), ``probabilities`` (one per choice).

Probabilities are a softmax over the logits, rounded to 6 decimals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ptmcli.finetuning.evaluate import predict, softmax
from ptmcli.tasks.encode import EncodeReport, encode_examples, style_tokens, word_predictions
from ptmcli.tasks.examples import LabeledExample
from ptmcli.tasks.metrics import entities


class TaskPredictor:
    """Turns lists of examples into prediction records with one finetuned checkpoint."""

    def __init__(self, model, config: dict, tokenizer, device: torch.device, precision: str, batch_size: int) -> None:
        task = config["task"]
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.precision, self.batch_size = precision, batch_size
        self.task: str = task["type"]
        self.labels: list[str] = list(task.get("labels") or [])
        self.style: str = task.get("input_style", config["arch"])
        self.max_len = int(task.get("max_len", 128))
        self.pad_id = style_tokens(tokenizer, self.style).pad
        self.positions = getattr(model.lm.config, "max_position_embeddings", None)
        self.report = EncodeReport()

    def predict(self, examples: Sequence[LabeledExample], source: str) -> list[dict]:
        """One record per example (see the module docstring), in the examples' order."""
        rows = encode_examples(examples, self.tokenizer, self.task, self.style, self.max_len, self.labels,
                               source=source, report=self.report)
        logits = self._logits(rows)
        return [self._record(example, row, out) for example, row, out in zip(examples, rows, logits)]

    def _logits(self, rows: list[dict]) -> list[np.ndarray]:
        # A batch of multiple-choice rows must share its number of choices.
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(len(row["lengths"]) if "lengths" in row else 0, []).append(i)
        out: list[np.ndarray | None] = [None] * len(rows)
        for members in groups.values():
            found = predict(self.model, [rows[i] for i in members], batch_size=self.batch_size, device=self.device,
                            precision=self.precision, pad_id=self.pad_id, max_length=self.positions)
            for i, logits in zip(members, found):
                out[i] = logits
        return out  # type: ignore[return-value]

    def _record(self, example: LabeledExample, row: dict, logits: np.ndarray) -> dict:
        record: dict = {"line": example.line}
        if self.task == "token-classification":
            words = list(example.words or ())
            tags = word_predictions(logits.argmax(-1), row["word_index"], self.labels)
            record.update(tokens=words, tags=tags, spans=spans(words, tags))
            return record
        if self.task == "multiple-choice":
            probabilities = softmax(logits.reshape(-1))
            record.update(text=" ".join(example.texts), choices=list(example.choices or ()),
                          choice=int(np.argmax(logits)), probabilities=probabilities)
            return record
        record["text"] = example.texts[0]
        if len(example.texts) > 1:
            record["text_b"] = example.texts[1]
        if self.task == "regression":
            record["score"] = float(logits.reshape(-1)[0])
            return record
        probabilities = softmax(logits)
        best = int(np.argmax(logits))
        record.update(label=self.labels[best], score=probabilities[best],
                      probabilities=dict(zip(self.labels, probabilities)))
        return record


def spans(words: Sequence[str], tags: Sequence[str]) -> list[dict]:
    """The entities of one sentence's tags: word ``start`` to ``end`` (exclusive), ``type`` and ``text``."""
    return [{"start": first, "end": last + 1, "type": kind, "text": " ".join(words[first : last + 1])}
            for kind, first, last in entities(tags)]
