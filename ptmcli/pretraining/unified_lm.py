"""Builder of ``unilm`` (UniLM, Dong et al. 2019): one BERT encoder, masked-token prediction under four attention regimes.

Every micro-batch is trained under one regime, drawn with the shares of
``--unilm-mix`` by a draw keyed by the seed and the number of the
micro-batch's first example, so every process and a resumed run draw alike:

- bidirectional: every token sees every token (BERT's MLM), rows ``[CLS] A [SEP] B [SEP]``;
- left-to-right / right-to-left: a token sees itself and the tokens on its left
  (right), rows ``[CLS] A B [SEP]``, the pair's text as one segment;
- sequence-to-sequence: rows ``[CLS] A [SEP] B [SEP]``; the source ``[CLS] A [SEP]``
  (segment 0) sees the source alone, the target ``B [SEP]`` (segment 1) sees
  the whole source and its own left context.

A and B are consecutive text of one document split at a sentence boundary
(ALBERT's sentence-order plans, never swapped), so each regime reads the same
kind of text. Tokens are masked as for ``mlm`` (15%, 80/10/10, keyed by the
example number) and predicted in every regime. The patterns are pure
functions of the padding and the segment ids, built in the forward pass on
the batch's device; the bidirectional regime keeps BERT's padding-only mask.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.objectives.collate import collate_blocks, collate_pairs
from ptmcli.objectives.packing import Block
from ptmcli.pretraining import mask_units
from ptmcli.pretraining.bert_task import _MLM_KEYS, BertPretrainTask, Specials
from ptmcli.pretraining.examples import Drawn
from ptmcli.pretraining.keyed_random import keyed_uniform
from ptmcli.pretraining.masked_lm import example_streams
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.pair_plans import sentence_spans
from ptmcli.pretraining.sentence_order import SentenceOrderStream
from ptmcli.pretraining.sentence_order_plans import plan_sentence_order

BIDIRECTIONAL, LEFT_TO_RIGHT, RIGHT_TO_LEFT, SEQ2SEQ = range(4)
REGIMES = ("bidirectional", "left-to-right", "right-to-left", "seq2seq")
DEFAULT_MIX = "1/3,1/6,1/6,1/3"
# The draw's purpose (keyed_random): its own stream, apart from the masking draws of the same seed.
_REGIME_DRAW = 101


# -- the attention patterns: [B, T, T] booleans, True where query (row) may attend to key (column) -------------


def _finish(pattern: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hide padded keys; every position sees itself, so no query row is empty (a padded query's output is unread)."""
    length = attention_mask.shape[1]
    itself = torch.eye(length, dtype=torch.bool, device=attention_mask.device)
    return (pattern & attention_mask.bool()[:, None, :]) | itself


def _order(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[T, T]``: True where the key's position is at or before the query's."""
    place = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return place[None, :] <= place[:, None]


def bidirectional_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Every real token sees every real token."""
    length = attention_mask.shape[1]
    return _finish(torch.ones(1, length, length, dtype=torch.bool, device=attention_mask.device), attention_mask)


def left_to_right_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A token sees itself and the real tokens before it."""
    return _finish(_order(attention_mask)[None], attention_mask)


def right_to_left_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A token sees itself and the real tokens after it."""
    return _finish(_order(attention_mask).T[None], attention_mask)


def seq2seq_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Segment 0 (the source, ``[CLS] A [SEP]``) sees itself; segment 1 (``B [SEP]``) sees the source and its own left."""
    source = (token_type_ids == 0) & attention_mask.bool()
    return _finish(source[:, None, :] | (~source[:, :, None] & _order(attention_mask)[None]), attention_mask)


def attention_pattern(regime: int, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The ``[B, T, T]`` pattern of ``regime`` (an index of :data:`REGIMES`) for rows padded as ``attention_mask``."""
    if regime == SEQ2SEQ:
        if token_type_ids is None:
            raise ValueError("the seq2seq regime needs segment ids")
        return seq2seq_mask(token_type_ids, attention_mask)
    return (bidirectional_mask, left_to_right_mask, right_to_left_mask)[regime](attention_mask)


# -- the regime of each micro-batch ----------------------------------------------------------------------------


def parse_mix(text: str) -> tuple[float, ...]:
    """The four shares of ``--unilm-mix`` (``"1/3,1/6,1/6,1/3"`` or decimals); a PtmError unless they sum to 1."""
    parts = [part.strip() for part in str(text).split(",")]
    why = None
    try:
        shares = tuple(float(Fraction(part)) for part in parts)
    except (ValueError, ZeroDivisionError):
        shares, why = (), "each share is a fraction (1/3) or a decimal (0.25)"
    if why is None and len(shares) != len(REGIMES):
        why = f"four shares are needed, one per regime ({', '.join(REGIMES)}); got {len(shares)}"
    elif why is None and any(not math.isfinite(s) or s < 0 for s in shares):
        why = "shares must not be negative"
    elif why is None and abs(sum(shares) - 1.0) > 1e-6:
        why = f"the shares ({', '.join(REGIMES)}) must sum to 1, not {sum(shares):.6g}"
    if why:
        raise PtmError(f"--unilm-mix {text}: {why}")
    return shares


def draw_regime(mix: tuple[float, ...], seed: int, first_example: int) -> int:
    """The regime of the micro-batch whose first example is number ``first_example`` of the run."""
    draw = keyed_uniform(seed, _REGIME_DRAW, np.array([first_example]), 1)[0, 0]
    chosen = int(np.searchsorted(np.cumsum(mix)[:-1], draw, side="right"))
    # Rounding can leave the sum a hair under 1: never land on a regime whose share is 0.
    return min(chosen, max(i for i, share in enumerate(mix) if share > 0))


# -- the task ---------------------------------------------------------------------------------------------------


class UniLMStream(SentenceOrderStream):
    """Consecutive A, B pairs of one document, always in order (sentence-order plans with no swap)."""

    def _fill(self) -> None:
        row = int(self.rows[next(self._iter)])
        spans = sentence_spans(self.dataset[row].sentence_ends)
        if len(spans[0]):
            self.pending.extend(plan_sentence_order(row, spans, self.max_pair_tokens, self.rng,
                                                    short_seq_prob=self.short_seq_prob, swap_prob=0.0))


class UniLMTask(BertPretrainTask):
    """MLM under UniLM's attention regimes; the loop's ``TrainTask``. Batches carry ``regime`` (the batch's, an int)."""

    def __init__(self, stream: UniLMStream, specials: Specials, mix: tuple[float, ...], *, seed: int, **options) -> None:
        self.mix = mix
        self.regime_seed = seed + 29
        self.eval_regime_seed = seed + 2929
        super().__init__(stream, specials, seed=seed, **options)
        # The pairs shape the regimes' rows; no sentence-pair head is trained.
        self.pair_head = None
        self.sum_keys = _MLM_KEYS

    def next_micro_batches(self, count: int, rows: slice | None = None) -> list[dict[str, torch.Tensor]]:
        out = []
        for _ in range(count):
            first = self.stream.next_number  # the same on every process, whichever rows it builds
            out.append(self._batch(self.stream.take(self.batch_size, rows), first=first))
        return out

    def _batch(self, taken: Drawn, evaluation: bool = False, first: int | None = None) -> dict[str, torch.Tensor]:
        # Evaluation batches are built whole, so their first row is the micro-batch's first example.
        first = int(taken.numbers[0]) if first is None else first
        regime = draw_regime(self.mix, self.eval_regime_seed if evaluation else self.regime_seed, first)
        s = self.specials
        if regime in (LEFT_TO_RIGHT, RIGHT_TO_LEFT):
            blocks = [Block(np.concatenate([ex.tokens_a, ex.tokens_b]),
                            None if ex.word_starts_a is None else np.concatenate([ex.word_starts_a, ex.word_starts_b]))
                      for ex in taken.examples]
            batch, framing = collate_blocks(blocks, s.cls_id, s.sep_id, s.pad_id, self.seq_len, pad_to_longest=False), 2
        else:
            batch, framing = collate_pairs(taken.examples, s.cls_id, s.sep_id, s.pad_id, self.seq_len, pad_to_longest=False), 3
        # As wide as the longest row of the whole batch, so a part built alone has the shape of its slice.
        width = taken.widest + framing if self.pad_to_longest else self.seq_len
        batch = {k: v[:, :width].contiguous() if v.dim() == 2 else v for k, v in batch.items()}
        word_starts = batch.get("word_starts") if self.whole_word else None
        inputs, labels = self.masker(batch["input_ids"], batch["special_tokens_mask"], taken.numbers,
                                     self.eval_mask_seed if evaluation else self.mask_seed, word_starts)
        return {"input_ids": inputs, "token_type_ids": batch["token_type_ids"], "attention_mask": batch["attention_mask"],
                "mlm_labels": labels, "regime": regime}

    def _forward(self, model, batch):
        mask = batch["attention_mask"]
        # A plain int: it stays on the host, so choosing the pattern reads nothing back from the device.
        regime = batch["regime"]
        if regime != BIDIRECTIONAL:
            mask = attention_pattern(regime, mask, batch["token_type_ids"])
        return model(batch["input_ids"], batch["token_type_ids"], mask, mlm_labels=batch["mlm_labels"])


def build(context: ObjectiveContext) -> UniLMTask:
    cfg, tokenizer = context.config, context.tokenizer
    # A config made by hand (tests, tools) may not name the flags: the defaults then.
    mix = parse_mix(getattr(cfg, "unilm_mix", DEFAULT_MIX))
    ngram = getattr(cfg, "ngram_mask", 1)
    train, evaluation = example_streams(context, cfg.objective, UniLMStream)
    specials = Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size)
    masker = mask_units.build_masker(cfg, tokenizer, context.dataset, (specials.cls_id, specials.sep_id, specials.pad_id),
                                     ngram=ngram)
    return UniLMTask(train, specials, mix, seed=cfg.seed, batch_size=cfg.batch_size, mask_prob=cfg.mask_prob,
                     eval_streams=evaluation, eval_batches=cfg.eval_batches, pad_to_longest=not getattr(cfg, "compile", False),
                     ngram=ngram, masker=masker)
