"""SQuAD-style question answering data: the official JSON, or the same questions as JSON lines.

- JSON: ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
  "answer_start"}]}]}]}]}`` (SQuAD v1.1);
- JSONL: one ``{"id", "question", "context", "answers"}`` per line, ``answers`` either
  ``{"text": [...], "answer_start": [...]}`` (the column layout of the datasets library) or a list of
  ``{"text", "answer_start"}``.

Every answer must be found at its offset in its context, since training on a shifted span teaches
the wrong tokens: with ``errors="strict"`` a file where one is not is refused, naming the question;
with ``errors="report"`` such answers are dropped (and a question left with none), and counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ptmcli.errors import PtmError, where


@dataclass(frozen=True)
class Answer:
    text: str
    start: int
    """Character offset of ``text`` in the context."""


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    line: int
    """The line of a JSONL file, else the question's number in the file (from 1)."""


def read_squad(path: str | Path, require_answers: bool = True, errors: str = "strict",
               note: Callable[[str], None] | None = None) -> list[QAExample]:
    """The questions of a SQuAD JSON or JSONL file; ``require_answers=False`` accepts questions without them.
    ``errors="report"`` drops answers not at their offset and says how many through ``note``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PtmError(f"{name}: no such file") from None
    except UnicodeDecodeError:
        raise PtmError(f"{name}: not UTF-8 text") from None
    stripped = text.lstrip()
    whole = None
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # several objects: JSON lines
    if isinstance(whole, dict) and "data" in whole:
        examples = _from_articles(whole["data"], name)
    elif isinstance(whole, dict):
        examples = [_from_record(whole, name, 1)]
    else:
        examples = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise PtmError(f"{where(name, number)}: not SQuAD data (neither the SQuAD JSON with a \"data\" list "
                               "nor JSON lines of {id, question, context, answers})") from None
            examples.append(_from_record(record, name, number))
    kept, dropped, emptied = [], 0, 0
    for example in examples:
        if require_answers and not example.answers:
            raise PtmError(f"{where(name, example.line)}: question {example.id!r} has no answers")
        if errors == "strict":
            _check_offsets(example, name)
            kept.append(example)
            continue
        placed = tuple(a for a in example.answers if _misplaced(example, a) is None)
        dropped += len(example.answers) - len(placed)
        if example.answers and not placed:
            emptied += 1
            if require_answers:
                continue
        kept.append(replace(example, answers=placed))
    if dropped and note is not None:
        left = f"; {emptied:,} question(s) left without answers dropped" if require_answers and emptied else ""
        note(f"ptm: {name}: {dropped:,} answer(s) not at their answer_start skipped{left} (--errors strict refuses them)")
    return kept


def _from_articles(articles, name: str) -> list[QAExample]:
    if not isinstance(articles, list):
        raise PtmError(f"{name}: not SQuAD data (\"data\" is not a list of articles)")
    examples = []
    for article in articles:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise PtmError(f"{name}: not SQuAD data (an article without a \"paragraphs\" list)")
        for paragraph in paragraphs:
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) or not isinstance(paragraph.get("qas"), list):
                raise PtmError(f"{name}: not SQuAD data (a paragraph without \"context\" and \"qas\")")
            for qa in paragraph["qas"]:
                record = dict(qa, context=paragraph["context"]) if isinstance(qa, dict) else qa
                examples.append(_from_record(record, name, len(examples) + 1))
    return examples


def _from_record(record, name: str, line: int) -> QAExample:
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("question", "context")):
        raise PtmError(f"{where(name, line)}: not SQuAD data (a question needs string \"question\" and \"context\" "
                       "fields, in the SQuAD JSON's \"data\" list or one per JSON line)")
    qid = str(record.get("id", line))
    return QAExample(qid, record["question"], record["context"], _answers(record.get("answers"), name, line, qid), line)


def _answers(value, name: str, line: int, qid: str) -> tuple[Answer, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise PtmError(f"{where(name, line)}: question {qid!r}: \"answers\" needs lists \"text\" and \"answer_start\" of one length")
        pairs = list(zip(texts, starts))
    elif isinstance(value, list):
        if not all(isinstance(a, dict) for a in value):
            raise PtmError(f"{where(name, line)}: question {qid!r}: each answer needs \"text\" and \"answer_start\"")
        pairs = [(a.get("text"), a.get("answer_start")) for a in value]
    else:
        raise PtmError(f"{where(name, line)}: question {qid!r}: \"answers\" is neither a list nor {{text, answer_start}}")
    answers = []
    for text, start in pairs:
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise PtmError(f"{where(name, line)}: question {qid!r}: an answer needs a string \"text\" and an integer \"answer_start\"")
        answers.append(Answer(text, start))
    return tuple(answers)


def _misplaced(example: QAExample, answer: Answer) -> str | None:
    """What the context holds at the answer's offset when that is not the answer, else None."""
    found = example.context[answer.start : answer.start + len(answer.text)]
    return None if answer.start >= 0 and found == answer.text else found


def _check_offsets(example: QAExample, name: str) -> None:
    for answer in example.answers:
        found = _misplaced(example, answer)
        if found is not None:
            raise PtmError(f"{where(name, example.line)}: question {example.id!r}: answer {answer.text!r} is not at "
                           f"answer_start {answer.start} of its context (found {found!r}; without --errors strict "
                           "finetuning skips such answers)")
