"""Word analogies (a : b :: c : d) answered by 3CosAdd and 3CosMul over the most frequent words.

Reads Google's ``questions-words.txt`` layout: ``: section`` lines, then
questions of four words, ``a b c d`` meaning a is to b as c is to d. Sections
whose name starts with ``gram`` are syntactic, the others semantic (in
Google's file, the first five).

Answers are searched among the first ``restrict`` rows of the table (the
most frequent words of a vector file). A question with a word outside them
is skipped and counted, not scored. The three question words are never an
answer. With unit vectors, and x ranging over those rows (Levy and Goldberg,
2014, "Linguistic Regularities in Sparse and Explicit Word Representations"):

- 3CosAdd: argmax_x cos(x, b) - cos(x, a) + cos(x, c);
- 3CosMul: argmax_x cos'(x, b) cos'(x, c) / (cos'(x, a) + 0.001), with
  cos' = (cos + 1) / 2 so that every factor is positive.

Accuracy is over the questions answered. The cosines of each question word
with every candidate are one matrix product per batch of questions, each
distinct word of the batch computed once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.static.word_table import WordTable
from ptmcli.textio.lines import TextLines

METHODS = ("3cosadd", "3cosmul")
EPSILON = 0.001
SYNTACTIC_PREFIX = "gram"
_MEMORY_BUDGET = 1 << 28  # bytes of cosine matrices per batch
_MATRICES_PER_QUESTION = 10  # float32 rows over the candidates that one question holds at once


@dataclass
class AnalogySet:
    path: str
    sections: list[str] = field(default_factory=list)
    questions: list[tuple[str, str, str, str]] = field(default_factory=list)
    section_of: list[int] = field(default_factory=list)
    """The index in ``sections`` of each question."""


def is_syntactic(section: str) -> bool:
    return section.startswith(SYNTACTIC_PREFIX)


def read_analogies(path: str | Path) -> AnalogySet:
    """Every question of an analogy file, with its section."""
    name = str(path)
    result = AnalogySet(name)
    with TextLines(name) as lines:
        for number, line in lines:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith(":"):
                result.sections.append(stripped[1:].strip())
                continue
            words = stripped.split()
            if len(words) != 4:
                shown = stripped if len(stripped) <= 80 else stripped[:77] + "..."
                raise PtmError(f"{name}:{number}: expected four words (a is to b as c is to d) or ': section', "
                               f"found {shown!r}")
            if not result.sections:
                result.sections.append("")
            result.questions.append((words[0], words[1], words[2], words[3]))
            result.section_of.append(len(result.sections) - 1)
    if not result.questions:
        raise PtmError(f"{name}: no analogy questions")
    return result


def evaluate_analogies(data: AnalogySet, table: WordTable, restrict: int | None = None) -> dict:
    """Accuracy of both methods, overall, semantic, syntactic and per section."""
    started = time.perf_counter()
    limit = len(table.words) if not restrict else min(restrict, len(table.words))
    words = sorted({w for question in data.questions for w in question})
    found = dict(zip(words, table.rows(words)))
    rows = np.array([[_row(found[w], limit) for w in question] for question in data.questions], dtype=np.int64)
    answered = (rows >= 0).all(axis=1)
    candidates = _unit_rows(table.vectors[:limit])
    keys = table.keys()[:limit]
    predicted = {method: np.full(len(rows), -1, dtype=np.int64) for method in METHODS}
    todo = np.flatnonzero(answered)
    variants = _variants(keys)
    batch = max(1, _MEMORY_BUDGET // (4 * _MATRICES_PER_QUESTION * max(limit, 1)))
    for start in range(0, len(todo), batch):
        chosen = todo[start:start + batch]
        for method, answer in _answer(candidates, rows[chosen, :3], variants).items():
            predicted[method][chosen] = answer
    expected_keys = [keys[r] if r >= 0 else None for r in rows[:, 3]]
    correct = {method: np.array([p >= 0 and keys[p] == k for p, k in zip(predicted[method], expected_keys)])
               for method in METHODS}
    syntactic = np.array([is_syntactic(data.sections[s]) for s in data.section_of], dtype=bool)
    result: dict = {
        "probe": "analogy",
        "data": data.path,
        "restrict": limit,
        "vocabulary": len(table.words),
        "lowercased": table.lowercase,
        "questions": len(rows),
        "skipped": int((~answered).sum()),
        "answered": int(answered.sum()),
        "semantic_questions": int((~syntactic).sum()),
        "syntactic_questions": int(syntactic.sum()),
    }
    for method in METHODS:
        result[method] = {
            "accuracy": _accuracy(correct[method], answered),
            "semantic_accuracy": _accuracy(correct[method], answered & ~syntactic),
            "syntactic_accuracy": _accuracy(correct[method], answered & syntactic),
            "correct": int(correct[method].sum()),
            "questions": len(rows),
            "skipped": int((~answered).sum()),
        }
    section_of = np.array(data.section_of)
    result["sections"] = []
    for index, name in enumerate(data.sections):
        mine = section_of == index
        entry = {"section": name, "kind": "syntactic" if is_syntactic(name) else "semantic",
                 "questions": int(mine.sum()), "skipped": int((mine & ~answered).sum())}
        entry.update({method: _accuracy(correct[method], answered & mine) for method in METHODS})
        result["sections"].append(entry)
    result["seconds"] = time.perf_counter() - started
    return result


def _row(row: int | None, limit: int) -> int:
    return row if row is not None and row < limit else -1


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _variants(keys: list[str]) -> dict[int, list[int]]:
    """For rows whose key other rows share (a word listed twice, or cased forms when lowercasing): every such row."""
    rows_of: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    return {row: rows for rows in rows_of.values() if len(rows) > 1 for row in rows}


def _answer(candidates: np.ndarray, abc: np.ndarray, variants: dict[int, list[int]]) -> dict[str, np.ndarray]:
    """The best candidate row for each question ``[a, b, c]`` by each method."""
    distinct, inverse = np.unique(abc, return_inverse=True)
    inverse = inverse.reshape(abc.shape)
    cosines = candidates[distinct] @ candidates.T  # each distinct question word against every candidate
    cos_a, cos_b, cos_c = (cosines[inverse[:, i]] for i in range(3))
    excluded = _excluded(abc, variants)
    scores = {
        "3cosadd": cos_b - cos_a + cos_c,
        "3cosmul": ((cos_b + 1) / 2) * ((cos_c + 1) / 2) / ((cos_a + 1) / 2 + EPSILON),
    }
    answers = {}
    for method, score in scores.items():
        score[excluded] = -np.inf
        answers[method] = score.argmax(axis=1)
    return answers


def _excluded(abc: np.ndarray, variants: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(question, candidate) index pairs of each question's own words, every row of the same word included."""
    questions = np.repeat(np.arange(len(abc)), 3)
    rows = abc.reshape(-1)
    if variants:
        extra = [(q, other) for q, row in zip(questions.tolist(), rows.tolist()) for other in variants.get(row, ())]
        if extra:
            more = np.array(extra, dtype=np.int64)
            questions, rows = np.concatenate([questions, more[:, 0]]), np.concatenate([rows, more[:, 1]])
    return questions, rows


def _accuracy(correct: np.ndarray, mask: np.ndarray) -> float:
    """Share of the questions in ``mask`` answered right; NaN when there are none."""
    total = int(mask.sum())
    return int((correct & mask).sum()) / total if total else math.nan
