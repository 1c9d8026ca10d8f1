"""SQuAD's exact match and F1, as the SQuAD v1.1 evaluation defines them.

Both compare normalised answers: lowercased, punctuation removed, the articles a/an/the removed,
whitespace collapsed. F1 is over the normalised words (counted with repetition); each question
scores its best over the gold answers, and a file scores the mean, in percent.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent: each prediction against the best of its gold answers."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = sum(max((exact_match(p, g) for g in gold), default=0.0) for p, gold in zip(predictions, golds))
    f1 = sum(max((token_f1(p, g) for g in gold), default=0.0) for p, gold in zip(predictions, golds))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}
