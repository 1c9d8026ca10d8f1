"""Word similarity: Spearman's rho between the cosine of word pairs and human scores.

Reads WordSim-353 and SimLex-999 as published and in the 3-column layout:
``word1 word2 score`` per line, tab- or space-separated; ``#`` lines are
comments. A header line (cells after the two words that are not numbers, as
in ``SimLex-999.txt``) names the columns, and the score is then the first
column after the two words that holds a number in the first row
(``SimLex999``). A line that does not fit is one PtmError naming the file and
line.

A pair is scored when the table has (or, through its ``missing_vector`` hook,
makes) a vector for both words; the others are counted as out-of-vocabulary
pairs and left out of the correlation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptmcli.errors import PtmError
from ptmcli.static.word_table import WordTable
from ptmcli.tasks.metrics import pearson, spearman
from ptmcli.textio.lines import TextLines

_SHOWN_OOV = 10


@dataclass(frozen=True)
class WordPair:
    first: str
    second: str
    score: float
    line: int


@dataclass
class SimilaritySet:
    path: str
    pairs: list[WordPair] = field(default_factory=list)
    score_column: str = "3"
    """The column the scores were read from: its header name, or its 1-based number."""


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("\t")] if "\t" in line else line.split()


def read_similarity_pairs(path: str | Path) -> SimilaritySet:
    """Every pair of a word-similarity file, in file order."""
    name = str(path)
    result = SimilaritySet(name)
    header: list[str] | None = None
    column: int | None = None
    with TextLines(name) as lines:
        for number, line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cells = _cells(line)
            if column is None and header is None and len(cells) >= 3 and not any(_is_number(c) for c in cells[2:]):
                header = cells
                continue
            if column is None:
                column = 2
                if header is not None:
                    column = next((i for i in range(2, len(cells)) if _is_number(cells[i])), 2)
                    result.score_column = header[column] if column < len(header) else str(column + 1)
            if len(cells) <= column or not cells[0] or not cells[1] or not _is_number(cells[column]):
                shown = line if len(line) <= 80 else line[:77] + "..."
                raise PtmError(f"{name}:{number}: expected two words and a score (column {column + 1}), found {shown!r}")
            result.pairs.append(WordPair(cells[0], cells[1], float(cells[column]), number))
    if not result.pairs:
        raise PtmError(f"{name}: no word pairs")
    return result


def evaluate_similarity(data: SimilaritySet, table: WordTable) -> dict:
    """spearman, pearson, pairs, oov_pairs (and which words were missing) of ``table`` on ``data``."""
    words = sorted({w for pair in data.pairs for w in (pair.first, pair.second)})
    rows = dict(zip(words, table.rows(words)))
    vectors: dict[str, np.ndarray] = {}
    built, missing = 0, []
    for word in words:
        if rows[word] is not None:
            vectors[word] = table.vectors[rows[word]]
            continue
        made = table.missing_vector(word)
        if made is None:
            missing.append(word)
        else:
            vectors[word] = made
            built += 1
    gold, predicted = [], []
    for pair in data.pairs:
        if pair.first in vectors and pair.second in vectors:
            gold.append(pair.score)
            predicted.append(cosine(vectors[pair.first], vectors[pair.second]))
    result = {
        "probe": "similarity",
        "data": data.path,
        "score_column": data.score_column,
        "pairs": len(data.pairs),
        "oov_pairs": len(data.pairs) - len(gold),
        "scored_pairs": len(gold),
        "spearman": spearman(gold, predicted) if len(gold) >= 2 else math.nan,
        "pearson": pearson(gold, predicted) if len(gold) >= 2 else math.nan,
        "oov_words": len(missing),
        "oov_examples": missing[:_SHOWN_OOV],
        "lowercased": table.lowercase,
    }
    if table.builds_missing:
        result["built_vectors"] = built
    return result


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors, in float64; 0 when either is zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0
