"""Builder of the ``denoise`` objective (BART): corrupted text in, the original text out.

Examples are the packed full-sentence blocks of ``mlm`` (``block_plans.py``:
whole sentences in order, a ``</s>`` between two documents sharing a block),
each kept with its sentences' lengths, which sentence permutation needs. A
block is corrupted by ``denoising.Denoiser``, keyed by its example number, and
framed ``<s> ... </s>`` on both sides: the source is the corrupted block, the
target the block itself, the decoder input the target shifted right behind the
decoder-start token. Batches are ``data.seq2seq`` two-sequence batches and the
loss of a step is its summed token loss over the step's target tokens.

Both sides are padded to the longest target of the whole batch, known from the
plans before any row is read, so a process that builds only its rows gets
exactly those rows of the whole batch. Corruption shortens the source, so
this costs the encoder some padding; a source that outgrows its target (only
zero-length spans can make it) is cut, keeping its ``</s>``.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import torch

from ptmcli.data.seq2seq import Seq2SeqCollator
from ptmcli.errors import PtmError
from ptmcli.models.framing import first_token
from ptmcli.pretraining.block_plans import SEPARATOR
from ptmcli.pretraining.denoising import Denoiser, NoiseSettings
from ptmcli.pretraining.examples import Drawn, ExampleStream
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.seq2seq_lm_task import Seq2SeqLMTask, empty_batch


def sentence_lengths(plan: list[list[int]]) -> list[int]:
    """Token lengths of a block plan's sentences; a document separator ends the sentence before it."""
    lengths: list[int] = []
    for piece in plan:
        if piece == SEPARATOR and lengths:
            lengths[-1] += 1
        else:
            lengths.append(piece[2] - piece[1])
    return lengths


class SentenceBlockStream(ExampleStream):
    """``ExampleStream``'s packed blocks, each with its sentences' token lengths (its plan's pieces)."""

    def __init__(self, dataset, rows, seq_len: int, seed: int, **options) -> None:
        super().__init__(dataset, rows, "mlm", seq_len, seed, whole_word=True, **options)

    def take(self, count: int, rows: slice | None = None) -> tuple[Drawn, list[list[int]]]:
        while len(self.pending) < count:
            self._fill()
        plans = list(islice(self.pending, count))
        drawn = super().take(count, rows)
        chosen = range(count)[rows] if rows is not None else range(count)
        return drawn, [sentence_lengths(plans[i]) for i in chosen]


class DenoiseTask(Seq2SeqLMTask):
    """BART's denoising autoencoder; the loop's ``TrainTask``."""

    def __init__(self, stream: SentenceBlockStream, denoiser: Denoiser, *, start_id: int, end_id: int, pad_id: int,
                 decoder_start_id: int, batch_size: int, seed: int, eval_streams: dict | None = None,
                 eval_batches: int = 20, pad_to_longest: bool = True) -> None:
        self.denoiser = denoiser
        self.start_id, self.end_id, self.pad_id, self.decoder_start_id = start_id, end_id, pad_id, decoder_start_id
        self.seq_len = stream.seq_len
        self.pad_to_longest = pad_to_longest
        self.noise_seed = seed + 17
        self.eval_noise_seed = seed + 4242
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _frame(self, tokens: np.ndarray) -> np.ndarray:
        return np.concatenate([[self.start_id], tokens, [self.end_id]]).astype(np.int64)

    def _batch(self, taken, evaluation: bool = False) -> dict[str, torch.Tensor]:
        drawn, lengths = taken
        seed = self.eval_noise_seed if evaluation else self.noise_seed
        width = drawn.widest + 2 if self.pad_to_longest else self.seq_len
        pairs = []
        for block, number, sentences in zip(drawn.examples, drawn.numbers, lengths):
            noised = self.denoiser(block.tokens, block.word_starts, sentences, seed, int(number))
            pairs.append((self._frame(noised.source), self._frame(block.tokens)))
        if not pairs:
            return empty_batch(width, width)
        collate = Seq2SeqCollator(pad_id=self.pad_id, decoder_start_id=self.decoder_start_id, eos_id=self.end_id,
                                  max_source_length=width, max_target_length=width, pad_to_multiple_of=width)
        return dict(collate(pairs))



def noise_settings(cfg) -> NoiseSettings:
    """The run's corruption rates, checked."""
    settings = NoiseSettings(infill_ratio=cfg.infill_ratio, poisson_lambda=cfg.poisson_lambda, mask_ratio=cfg.mask_ratio,
                             delete_ratio=cfg.delete_ratio, permute_sentences=cfg.permute_sentences,
                             rotate_ratio=cfg.rotate_ratio, mask_random=cfg.mask_random)
    settings.check()
    return settings


def random_pool(tokenizer) -> np.ndarray:
    """Ids a mask may be replaced by: every id but the special tokens."""
    special = {getattr(tokenizer, f"{role}_id") for role in ("pad", "unk", "cls", "sep", "mask", "bos", "eos")}
    special |= set(tokenizer.all_special_ids)
    return np.array([i for i in range(tokenizer.vocab_size) if i not in special], dtype=np.int64)


def build(context: ObjectiveContext) -> DenoiseTask:
    cfg, tokenizer = context.config, context.tokenizer
    settings = noise_settings(cfg)
    start, end = first_token(tokenizer, "bos", "cls"), first_token(tokenizer, "eos", "sep")
    if start is None or end is None or tokenizer.mask_id is None:
        raise PtmError("--objective denoise frames text <s> ... </s> and masks it: the tokenizer needs bos/eos "
                       "(or [CLS]/[SEP]) and mask tokens (train one with --special-tokens roberta)")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end
    decoder_start = context.decoder_start_id
    denoiser = Denoiser(settings, tokenizer.mask_id, random_pool(tokenizer))

    def make(ds, rows, seed, shuffle=True):
        return SentenceBlockStream(ds, rows, cfg.seq_len, seed, separator_id=end, shuffle=shuffle)

    return DenoiseTask(make(context.dataset, context.train_rows, cfg.seed), denoiser, start_id=start, end_id=end,
                       pad_id=pad, decoder_start_id=decoder_start, batch_size=cfg.batch_size, seed=cfg.seed,
                       eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                       eval_batches=cfg.eval_batches, pad_to_longest=not getattr(cfg, "compile", False))
