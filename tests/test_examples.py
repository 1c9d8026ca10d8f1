"""Pretraining examples planned from sentence lengths: the same examples as BERT's recipe, resumable, buildable in part."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

from ptmcli.errors import PtmError
from ptmcli.objectives.nsp import nsp_examples
from ptmcli.objectives.packing import SentencePacker
from ptmcli.pretraining.block_plans import BlockPlanner, build_block
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.pair_plans import build_pairs, plan_pairs, sentence_spans


class Documents:
    """A stand-in for ShardDataset: documents of sentences of distinct token ids (some sentences empty)."""

    has_word_starts = True

    def __init__(self, count: int = 12, seed: int = 0) -> None:
        gen = np.random.default_rng(seed)
        self.rows, next_id = [], 10
        for _ in range(count):
            lengths = gen.integers(0, 9, size=gen.integers(1, 9))
            ids = np.arange(next_id, next_id + lengths.sum())
            next_id += int(lengths.sum())
            self.rows.append(SimpleNamespace(input_ids=ids, sentence_ends=np.cumsum(lengths), word_starts=ids % 3 != 0))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, row: int):
        return self.rows[row]


def _sentences(doc) -> list[np.ndarray]:
    starts, ends = sentence_spans(doc.sentence_ends)
    return [doc.input_ids[s:e] for s, e in zip(starts, ends)]


def test_pair_plans_draw_as_bert_recipe_and_build_its_examples_when_nothing_is_trimmed():
    docs = Documents()
    budget = 200  # longer than any pair: nothing is trimmed, so the recipe draws nothing more than the plans
    recipe_rng, plan_rng = random.Random(5), random.Random(5)
    for row in range(len(docs)):
        expected = nsp_examples(_sentences(docs[row]), budget, recipe_rng,
                                lambda rng: _sentences(docs[rng.randrange(len(docs))]), short_seq_prob=0.3)

        def random_document(rng):
            other = rng.randrange(len(docs))
            return other, sentence_spans(docs[other].sentence_ends)

        plans = plan_pairs(row, sentence_spans(docs[row].sentence_ends), budget, plan_rng, random_document, short_seq_prob=0.3)
        built = build_pairs(plans, np.arange(len(plans)), docs.__getitem__, budget, seed=1, with_word_starts=False)
        assert [(e.tokens_a.tolist(), e.tokens_b.tolist(), e.is_random_next) for e in expected] == \
               [(e.tokens_a.tolist(), e.tokens_b.tolist(), e.is_random_next) for e in built]


def test_block_plans_pack_as_the_sentence_packer():
    docs = Documents(seed=1)
    packer, planner = SentencePacker(7, separator_id=3, track_word_starts=True), BlockPlanner(7)
    expected, built = [], []
    for row in range(len(docs)):
        doc = docs[row]
        starts, ends = sentence_spans(doc.sentence_ends)
        expected.extend(packer.add_document(_sentences(doc), [doc.word_starts[s:e] for s, e in zip(starts, ends)]))
        built.extend(build_block(plan, docs.__getitem__, 3, True) for plan in planner.add_document(row, (starts, ends)))
    assert len(built) == len(expected) > 5
    for mine, theirs in zip(built, expected):
        assert mine.tokens.tolist() == theirs.tokens.tolist() and mine.word_starts.tolist() == theirs.word_starts.tolist()


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm"])
def test_a_stream_resumes_from_its_json_state_and_builds_any_rows_alike(objective):
    def stream():
        return ExampleStream(Documents(), np.arange(12), objective, 16, 7, separator_id=3, whole_word=True)

    def tokens(drawn):
        return [np.concatenate([e.tokens_a, e.tokens_b]).tolist() if objective == "mlm+nsp" else e.tokens.tolist() for e in drawn.examples]

    first = stream()
    first.take(5)
    state = json.loads(json.dumps(first.state_dict()))
    after = [first.take(6) for _ in range(4)]
    resumed = stream()
    resumed.load_state_dict(state)
    for drawn in after:
        part = resumed.take(6, slice(2, 5))
        assert tokens(part) == tokens(drawn)[2:5]
        assert part.numbers.tolist() == drawn.numbers[2:5].tolist() and part.widest == drawn.widest


def test_a_state_from_the_older_example_buffer_is_refused():
    stream = ExampleStream(Documents(), np.arange(12), "mlm", 16, 7, separator_id=3)
    old = {"order": stream.order.state_dict(), "rng": [3, list(range(625)), None], "pending": [], "packer": None}
    with pytest.raises(PtmError, match="older ptm"):
        stream.load_state_dict(old)
