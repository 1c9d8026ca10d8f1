"""Task metrics against hand computations, scipy where it is installed, and conlleval's chunk rules."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptmcli.tasks.metrics import (
    accuracy,
    average_ranks,
    confusion_matrix,
    entities,
    entity_scores,
    f1_binary,
    macro_f1,
    matthews_corrcoef,
    pearson,
    spearman,
)

GOLD = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "a"]
PRED = ["a", "b", "a", "b", "c", "c", "c", "a", "c", "a"]


def test_accuracy_and_confusion_matrix():
    assert accuracy(GOLD, PRED) == 7 / 10
    assert confusion_matrix(GOLD, PRED).tolist() == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert confusion_matrix(GOLD, PRED, labels=["c", "a"]).tolist() == [[3, 1], [0, 3]]
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="gold has 2 items, predictions have 1"):
        accuracy([1, 2], [1])


def test_macro_f1_by_hand():
    # a: tp 3, predicted 4, gold 4 -> 3/4; b: tp 1, predicted 2, gold 2 -> 1/2; c: tp 3, predicted 4, gold 4 -> 3/4
    assert macro_f1(GOLD, PRED) == pytest.approx((0.75 + 0.5 + 0.75) / 3)
    # A class never predicted nor seen contributes 0 when named.
    assert macro_f1(GOLD, PRED, labels=["a", "b", "c", "d"]) == pytest.approx(2 / 4)
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 * 2 / (3 + 3))
    assert f1_binary([0, 0], [0, 0]) == 0.0


def test_mcc_binary_matches_the_textbook_formula():
    rng = random.Random(0)
    gold = [rng.randint(0, 1) for _ in range(200)]
    pred = [g if rng.random() < 0.7 else 1 - g for g in gold]
    tp = sum(g == p == 1 for g, p in zip(gold, pred))
    tn = sum(g == p == 0 for g, p in zip(gold, pred))
    fp = sum(g == 0 and p == 1 for g, p in zip(gold, pred))
    fn = sum(g == 1 and p == 0 for g, p in zip(gold, pred))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(gold, pred) == pytest.approx(expected)
    assert matthews_corrcoef(gold, gold) == pytest.approx(1.0)
    assert matthews_corrcoef(gold, [1 - g for g in gold]) == pytest.approx(-1.0)
    assert matthews_corrcoef(gold, [1] * len(gold)) == 0.0  # undefined: a constant prediction


def test_mcc_multiclass_by_hand():
    # C = [[3,1,0],[0,1,1],[1,0,3]]: c = 7, s = 10, t = (4,2,4), p = (4,2,4)
    # (7*10 - (16+4+16)) / sqrt((100-36)*(100-36)) = 34 / 64
    assert matthews_corrcoef(GOLD, PRED) == pytest.approx(34 / 64)


def test_average_ranks_and_correlations_by_hand():
    assert average_ranks([10, 20, 20, 30, 20]).tolist() == [1, 3, 3, 5, 3]
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # x - mean = (-1, 0, 1), y - mean = (-1/3, -1/3, 2/3): r = 1 / sqrt(2 * 2/3)
    assert pearson([1, 2, 3], [1, 1, 2]) == pytest.approx(1 / math.sqrt(4 / 3))
    assert spearman([1, 2, 3, 4], [10, 100, 1000, 10_000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([2, 2], [1, 2]))


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=300).astype(float)  # many ties
    y = x + rng.normal(0, 2, size=300).round(1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert np.allclose(average_ranks(y), stats.rankdata(y))


def test_against_sklearn_when_installed():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    gold, pred = rng.integers(0, 4, 500).tolist(), rng.integers(0, 4, 500).tolist()
    assert matthews_corrcoef(gold, pred) == pytest.approx(sk.matthews_corrcoef(gold, pred))
    assert macro_f1(gold, pred) == pytest.approx(sk.f1_score(gold, pred, average="macro"))
    assert confusion_matrix(gold, pred).tolist() == sk.confusion_matrix(gold, pred).tolist()


# -- entities: conlleval's rules --------------------------------------------------------------


@pytest.mark.parametrize("tags,expected", [
    # IOB2
    ("B-PER I-PER O B-LOC", [("PER", 0, 1), ("LOC", 3, 3)]),
    ("B-PER B-PER", [("PER", 0, 0), ("PER", 1, 1)]),
    # An I- after O starts an entity, as conlleval counts it.
    ("O I-PER I-PER O", [("PER", 1, 2)]),
    ("I-ORG", [("ORG", 0, 0)]),
    # An I- of another type starts a new entity.
    ("B-PER I-LOC I-LOC", [("PER", 0, 0), ("LOC", 1, 2)]),
    ("B-PER I-PER I-ORG B-ORG", [("PER", 0, 1), ("ORG", 2, 2), ("ORG", 3, 3)]),
    # IOB1: B- only between two entities of one type.
    ("I-PER I-PER B-PER O I-LOC", [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]),
    # IOBES / BILOU
    ("B-PER E-PER S-LOC", [("PER", 0, 1), ("LOC", 2, 2)]),
    ("S-PER S-PER", [("PER", 0, 0), ("PER", 1, 1)]),
    ("B-PER E-PER I-PER", [("PER", 0, 1), ("PER", 2, 2)]),
    ("B-ORG L-ORG U-LOC", [("ORG", 0, 1), ("LOC", 2, 2)]),
    # Tags without a prefix (IO scheme) read as I-.
    ("PER PER O LOC", [("PER", 0, 1), ("LOC", 3, 3)]),
    ("O O", []),
    ("", []),
])
def test_entities_follow_conlleval(tags, expected):
    assert entities(tags.split()) == expected


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "B-PER"]]
    # gold: PER(0,0-1) LOC(0,3) ORG(1,0) PER(1,2); pred: PER(0,0-1) ORG(0,3) ORG(1,0-1) PER(1,2)
    # correct: the two PER; ORG(1,0) vs ORG(1,0-1) differs in its end, so it does not count.
    scores = entity_scores(gold, pred)
    micro = scores["micro"]
    assert (micro.correct, micro.gold, micro.predicted) == (2, 4, 4)
    assert micro.precision == micro.recall == micro.f1 == 0.5
    per = scores["per_type"]
    assert per["PER"].f1 == 1.0 and (per["LOC"].recall, per["LOC"].predicted) == (0.0, 0)
    assert (per["ORG"].precision, per["ORG"].recall, per["ORG"].f1) == (0.0, 0.0, 0.0)
    assert scores["macro_f1"] == pytest.approx(1 / 3)
    assert scores["token_accuracy"] == pytest.approx(5 / 7)
    assert per["PER"].as_dict()["support"] == 2
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags and 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])


def test_partial_overlap_scores_precision_and_recall_separately():
    scores = entity_scores([["B-MISC", "I-MISC", "O", "O"]], [["B-MISC", "I-MISC", "O", "B-MISC"]])
    assert scores["micro"].precision == 0.5 and scores["micro"].recall == 1.0
    assert scores["micro"].f1 == pytest.approx(2 / 3)


TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(TAG, max_size=12), min_size=1, max_size=5))
def test_entities_are_ordered_disjoint_and_score_themselves_perfectly(sentences):
    for tags in sentences:
        found = entities(tags)
        covered = [i for _, first, last in found for i in range(first, last + 1)]
        assert covered == sorted(set(covered)), "entities overlap or are out of order"
        assert all(tags[i] != "O" for i in covered)
        assert all(tags[i] == "O" for i in set(range(len(tags))) - set(covered)), "a tagged word is in no entity"
    scores = entity_scores(sentences, sentences)
    if scores["micro"].gold:
        assert scores["micro"].f1 == 1.0
