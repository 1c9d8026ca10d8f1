"""Builder of the ``mass`` objective (MASS): a text with one fragment masked in, that fragment out.

Examples are the packed full-sentence blocks of ``mlm`` (``block_plans.py``),
each framed as the family frames one text (BART: ``<s> ... </s>``); a block is
the segment of which MASS masks one fragment (``mass.mass_example``, keyed by
the example number). The decoder row is aligned with the source: the fragment
keeps its positions, the decoder reads it shifted right with the mask token
everywhere else, and only the fragment's positions carry labels, so the
step's loss is the summed token loss over the step's fragment tokens. The
mask is the tokenizer's mask token; a T5 tokenizer, which has none, lends its
first sentinel ``<extra_id_0>``.

Rows are padded to the longest block of the whole batch, known from the plans
before any row is read, so a process that builds only its rows gets exactly
those rows of the whole batch.
"""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.seq2seq import IGNORE_INDEX
from ptmcli.errors import PtmError
from ptmcli.models.framing import first_token
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.mass import check_ratio, mass_example
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.seq2seq_lm_task import Seq2SeqLMTask, empty_batch
from ptmcli.pretraining.span_corruption import tokenizer_sentinels


class MassTask(Seq2SeqLMTask):
    """MASS's masked sequence-to-sequence pretraining; the loop's ``TrainTask``."""

    def __init__(self, stream: ExampleStream, ratio: float, *, mask_id: int, pad_id: int, prefix: tuple[int, ...],
                 suffix: tuple[int, ...], batch_size: int, seed: int, eval_streams: dict | None = None,
                 eval_batches: int = 20, pad_to_longest: bool = True) -> None:
        self.ratio, self.mask_id, self.pad_id = ratio, mask_id, pad_id
        self.prefix, self.suffix = tuple(prefix), tuple(suffix)
        self.pad_to_longest = pad_to_longest
        self.noise_seed = seed + 43
        self.eval_noise_seed = seed + 6464
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def example(self, tokens: np.ndarray, number: int, evaluation: bool = False):
        seed = self.eval_noise_seed if evaluation else self.noise_seed
        return mass_example(tokens, self.mask_id, self.ratio, seed, number, self.prefix, self.suffix)

    def _batch(self, drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        widest = drawn.widest if self.pad_to_longest else self.stream.seq_len - 2
        width = max(1, widest) + len(self.prefix) + len(self.suffix)
        if not drawn.examples:
            return empty_batch(width, width)
        rows = len(drawn.examples)
        input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        decoder_input_ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64)
        lengths = np.zeros(rows, dtype=np.int64)
        sizes = np.zeros(rows, dtype=np.int64)
        for row, (block, number) in enumerate(zip(drawn.examples, drawn.numbers)):
            done = self.example(block.tokens, int(number), evaluation)
            length = len(done.source)
            input_ids[row, :length], decoder_input_ids[row, :length], labels[row, :length] = (
                done.source, done.decoder_input, done.labels)
            lengths[row], sizes[row] = length, done.size
        attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask),
                "decoder_input_ids": torch.from_numpy(decoder_input_ids), "labels": torch.from_numpy(labels),
                "target_lengths": torch.from_numpy(sizes)}


def build(context: ObjectiveContext) -> MassTask:
    cfg, tokenizer = context.config, context.tokenizer
    check_ratio(cfg.mass_ratio)
    end = first_token(tokenizer, "eos", "sep")
    # T5's tokenizers have no mask token: their first sentinel stands in for it.
    sentinels = tokenizer_sentinels(tokenizer)
    mask = tokenizer.mask_id if tokenizer.mask_id is not None else (sentinels[0] if sentinels else None)
    if mask is None or end is None:
        raise PtmError("--objective mass masks a fragment with the mask token (or <extra_id_0>) and ends each text with "
                       "</s>: the tokenizer needs both (train one with --special-tokens roberta, t5 or roberta-sentinels)")
    framing = context.family.framing(tokenizer)
    framed = len(framing.prefix) + len(framing.suffix)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end

    def make(ds, rows, seed, shuffle=True):
        # Blocks of seq_len - framed tokens, so a framed row fills --seq-len.
        return ExampleStream(ds, rows, "mlm", cfg.seq_len - framed + 2, seed, separator_id=end, shuffle=shuffle)

    return MassTask(make(context.dataset, context.train_rows, cfg.seed), cfg.mass_ratio, mask_id=mask,
                    pad_id=pad, prefix=tuple(framing.prefix), suffix=tuple(framing.suffix), batch_size=cfg.batch_size,
                    seed=cfg.seed, eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                    eval_batches=cfg.eval_batches, pad_to_longest=not getattr(cfg, "compile", False))
