"""Task metrics in plain numpy: classification, correlation, and entity-level scores.

Classification metrics take gold and predicted labels of any hashable kind
(ids or names). Correlations return NaN when a side is constant (the
coefficient is undefined there). Entity scores follow conlleval, the CoNLL
shared tasks' scorer: an entity counts as correct only when its type, first
and last word all match.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


def _pairs(gold: Sequence, pred: Sequence) -> tuple[list, list]:
    gold, pred = list(gold), list(pred)
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items, predictions have {len(pred)}")
    return gold, pred


def accuracy(gold: Sequence, pred: Sequence) -> float:
    gold, pred = _pairs(gold, pred)
    if not gold:
        return math.nan
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def confusion_matrix(gold: Sequence, pred: Sequence, labels: Sequence[Hashable] | None = None) -> np.ndarray:
    """Counts [i, j] of items with gold ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` defaults to the sorted labels seen in either sequence; items
    whose label is not in ``labels`` are left out.
    """
    gold, pred = _pairs(gold, pred)
    if labels is None:
        labels = sorted(set(gold) | set(pred))
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred):
        if g in index and p in index:
            matrix[index[g], index[p]] += 1
    return matrix


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 of each class of a confusion matrix (0 where a class is never gold nor predicted correctly)."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    denominator = predicted + actual
    return np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)


def macro_f1(gold: Sequence, pred: Sequence, labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: every label seen in gold or predictions)."""
    matrix = confusion_matrix(gold, pred, labels)
    return float(per_class_f1(matrix).mean()) if len(matrix) else math.nan


def f1_binary(gold: Sequence, pred: Sequence, positive: Hashable = 1) -> float:
    """F1 of the ``positive`` class (the GLUE score for MRPC and QQP)."""
    gold, pred = _pairs(gold, pred)
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    predicted, actual = sum(p == positive for p in pred), sum(g == positive for g in gold)
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def matthews_corrcoef(gold: Sequence, pred: Sequence) -> float:
    """Matthews correlation coefficient, binary or multiclass (Gorodkin's R_K); 0 when undefined."""
    matrix = confusion_matrix(gold, pred).astype(np.float64)
    samples = matrix.sum()
    correct = np.trace(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    numerator = correct * samples - predicted @ actual
    denominator = math.sqrt(samples**2 - predicted @ predicted) * math.sqrt(samples**2 - actual @ actual)
    return float(numerator / denominator) if denominator else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"pearson needs two 1-d sequences of one length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0:
        return math.nan
    return float(np.clip((a @ b) / denominator, -1.0, 1.0))


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    data = np.asarray(values, dtype=np.float64)
    order = np.argsort(data, kind="mergesort")
    ordered = data[order]
    # Runs of equal values: each gets the mean of the positions it spans.
    boundaries = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    ranks = np.empty(len(data), dtype=np.float64)
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson of the average ranks (ties averaged)."""
    return pearson(average_ranks(x), average_ranks(y))


# -- entities ---------------------------------------------------------------------------------

# Prefixes of IOB1, IOB2, IOBES and BILOU, read as conlleval's B/I/E/S.
_PREFIXES = {"B": "B", "I": "I", "E": "E", "L": "E", "S": "S", "U": "S"}


def _split_tag(tag: str) -> tuple[str, str]:
    """(B|I|E|S|O, type); a tag with no known prefix ("PER") is read as inside an entity of that type."""
    if tag == "O" or tag == "":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in _PREFIXES:
        return _PREFIXES[prefix], kind
    return "I", tag


def _ends(previous: str, previous_type: str, tag: str, kind: str) -> bool:
    """Whether the entity open at the previous word ends before this one."""
    if previous == "O":
        return False
    return tag in ("O", "B", "S") or previous in ("E", "S") or kind != previous_type


def _starts(previous: str, previous_type: str, tag: str, kind: str) -> bool:
    """Whether an entity starts at this word."""
    if tag == "O":
        return False
    return previous == "O" or tag in ("B", "S") or previous in ("E", "S") or kind != previous_type


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The (type, first, last) entities of one sentence's tags, as conlleval finds them.

    Works for IOB1, IOB2, IOBES and BILOU alike: an I- after O, or after a tag
    of another type, starts a new entity; B- and S- always start one; E- and
    S- end one. ``last`` is inclusive.
    """
    found: list[tuple[str, int, int]] = []
    previous, previous_type = "O", ""
    start = -1
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        if start >= 0 and _ends(previous, previous_type, prefix, kind):
            found.append((previous_type, start, i - 1))
            start = -1
        if _starts(previous, previous_type, prefix, kind):
            start = i
        previous, previous_type = prefix, kind
    if start >= 0:
        found.append((previous_type, start, len(tags) - 1))
    return found


@dataclass(frozen=True)
class EntityScore:
    precision: float
    recall: float
    f1: float
    gold: int  # entities in the gold tags (support)
    predicted: int
    correct: int

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.gold,
                "predicted": self.predicted, "correct": self.correct}


def _score(correct: int, gold: int, predicted: int) -> EntityScore:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return EntityScore(precision, recall, f1, gold, predicted, correct)


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """conlleval's scores of predicted tag sequences against gold ones (one sequence per sentence).

    Returns ``{"micro": EntityScore, "per_type": {type: EntityScore}, "macro_f1": float,
    "token_accuracy": float}``: precision, recall and F1 over exact entity
    matches, overall (micro) and per type; ``macro_f1`` is the mean of the
    per-type F1s, and ``token_accuracy`` the share of words whose tag is right.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences, predictions have {len(pred)}")
    gold_set: set[tuple[int, str, int, int]] = set()
    pred_set: set[tuple[int, str, int, int]] = set()
    words = right = 0
    for n, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {n} has {len(g)} gold tags and {len(p)} predicted tags")
        gold_set.update((n, *e) for e in entities(g))
        pred_set.update((n, *e) for e in entities(p))
        words += len(g)
        right += sum(a == b for a, b in zip(g, p))
    correct = gold_set & pred_set
    types = sorted({e[1] for e in gold_set | pred_set})
    per_type = {
        kind: _score(sum(e[1] == kind for e in correct), sum(e[1] == kind for e in gold_set),
                     sum(e[1] == kind for e in pred_set))
        for kind in types
    }
    return {
        "micro": _score(len(correct), len(gold_set), len(pred_set)),
        "per_type": per_type,
        "macro_f1": float(np.mean([s.f1 for s in per_type.values()])) if per_type else 0.0,
        "token_accuracy": right / words if words else math.nan,
    }
