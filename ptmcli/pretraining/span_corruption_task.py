"""Builder of the ``span-corruption`` objective (T5): sentinel-marked text in, the spans it lost out.

Examples are the packed full-sentence blocks of ``mlm`` (``block_plans.py``),
made longer than ``--seq-len`` as T5 makes its inputs: a block holds as many
tokens as can be corrupted and still fit, framed, in ``--seq-len`` (and its
target too), so the encoder's rows are nearly full. Each block is corrupted
by ``span_corruption.corrupt``, keyed by its example number. The source is
framed as the family frames one text (BART: ``<s> ... </s>``, T5: ``... </s>``),
the target gets an end-of-sequence token, and the decoder reads the target
shifted right behind the family's decoder-start token (BART ``</s>``). Batches
are ``data.seq2seq`` two-sequence batches; a step's loss is its summed token
loss over the step's target tokens.

Both sides are padded to the widths the longest block of the whole batch
allows, known from the plans before any row is read (source and target
lengths depend on a block's length alone), so a process that builds only its
rows gets exactly those rows of the whole batch.

The two-sequence task base is ``seq2seq_lm_task.Seq2SeqLMTask``, shared with ``mass_task`` and ``denoise_task``.
"""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.seq2seq import IGNORE_INDEX, Seq2SeqCollator
from ptmcli.errors import PtmError
from ptmcli.models.framing import first_token
from ptmcli.pretraining.examples import ExampleStream
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.seq2seq_lm_task import Seq2SeqLMTask, empty_batch
from ptmcli.pretraining.span_corruption import SpanSettings, corrupt, tokenizer_sentinels

SENTINEL_FIX = ("train one with ptm tokenize train ... --special-tokens t5 (or roberta-sentinels for --arch bart), "
                "then encode the shards with it")


def pad_to(batch: dict[str, torch.Tensor], source_width: int, target_width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """``batch`` right-padded to fixed widths, so every process's rows have the whole batch's shape."""
    fill = {"input_ids": (source_width, pad_id), "attention_mask": (source_width, 0),
            "decoder_input_ids": (target_width, pad_id), "labels": (target_width, IGNORE_INDEX)}
    out = dict(batch)
    for key, (width, value) in fill.items():
        missing = width - out[key].shape[1]
        if missing < 0:
            raise ValueError(f"{key} is {out[key].shape[1]} wide, more than the batch's {width}")
        out[key] = torch.nn.functional.pad(out[key], (0, missing), value=value)
    return out


def block_budget(seq_len: int, framing: int, settings: SpanSettings) -> tuple[int, int, int]:
    """(block tokens, source width, target width): the longest block whose source (with ``framing`` tokens)
    and target (with its end token) fit in ``seq_len``, and the widths the blocks up to it need."""
    longest = source_width = target_width = 0
    for length in range(1, 8 * seq_len):
        source = max(source_width, framing + settings.source_length(length))
        target = max(target_width, settings.target_length(length) + 1)
        if source > seq_len or target > seq_len:
            break
        longest, source_width, target_width = length, source, target
    if not longest:
        raise PtmError(f"--seq-len {seq_len}: too short to hold a corrupted example")
    return longest, source_width, target_width


class SpanCorruptionTask(Seq2SeqLMTask):
    """T5's span corruption; the loop's ``TrainTask``."""

    def __init__(self, stream: ExampleStream, settings: SpanSettings, sentinels: list[int], *, prefix: tuple[int, ...],
                 suffix: tuple[int, ...], end_id: int, pad_id: int, decoder_start_id: int, batch_size: int, seed: int,
                 seq_len: int, eval_streams: dict | None = None, eval_batches: int = 20, pad_to_longest: bool = True) -> None:
        self.settings, self.sentinels = settings, sentinels
        self.prefix, self.suffix = np.array(prefix, dtype=np.int64), np.array(suffix, dtype=np.int64)
        self.end_id, self.pad_id, self.decoder_start_id = end_id, pad_id, decoder_start_id
        self.seq_len = seq_len
        self.pad_to_longest = pad_to_longest
        self.noise_seed = seed + 31
        self.eval_noise_seed = seed + 5353
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def widths(self, widest: int) -> tuple[int, int]:
        """(source, target) widths of a batch whose longest block has ``widest`` tokens."""
        framing = len(self.prefix) + len(self.suffix)
        if not self.pad_to_longest:
            widest = self.stream.seq_len - 2
        lengths = range(1, widest + 1)
        return (max(framing + self.settings.source_length(n) for n in lengths),
                max(self.settings.target_length(n) + 1 for n in lengths))

    def pair(self, tokens: np.ndarray, number: int, evaluation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(framed source, target with its end token) of one block."""
        seed = self.eval_noise_seed if evaluation else self.noise_seed
        done = corrupt(tokens, self.sentinels, self.settings, seed, number)
        return (np.concatenate([self.prefix, done.source, self.suffix]),
                np.concatenate([done.target, [self.end_id]]).astype(np.int64))

    def _batch(self, drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        source_width, target_width = self.widths(max(1, drawn.widest))
        pairs = [self.pair(block.tokens, int(number), evaluation) for block, number in zip(drawn.examples, drawn.numbers)]
        if not pairs:
            return empty_batch(source_width, target_width)
        collate = Seq2SeqCollator(pad_id=self.pad_id, decoder_start_id=self.decoder_start_id)
        return pad_to(dict(collate(pairs)), source_width, target_width, self.pad_id)


def span_settings(cfg) -> SpanSettings:
    settings = SpanSettings(noise_density=cfg.noise_density, mean_span_length=cfg.mean_span_length)
    settings.check()
    return settings


def build(context: ObjectiveContext) -> SpanCorruptionTask:
    cfg, tokenizer = context.config, context.tokenizer
    settings = span_settings(cfg)
    sentinels = tokenizer_sentinels(tokenizer)
    if not sentinels:
        raise PtmError("--objective span-corruption replaces each span by a sentinel token <extra_id_0>, <extra_id_1> ...: "
                       f"the tokenizer has none; {SENTINEL_FIX}")
    end = first_token(tokenizer, "eos", "sep")
    if end is None:
        raise PtmError("--objective span-corruption ends source and target with </s>: the tokenizer has no eos (or sep) token")
    framing = context.family.framing(tokenizer)
    longest, _, _ = block_budget(cfg.seq_len, len(framing.prefix) + len(framing.suffix), settings)
    needed = max(settings.counts(n)[1] for n in range(1, longest + 1)) + 1
    if needed > len(sentinels):
        raise PtmError(f"--seq-len {cfg.seq_len} at --noise-density {settings.noise_density} and --mean-span-length "
                       f"{settings.mean_span_length} makes up to {needed - 1} spans, which need {needed} sentinels; the "
                       f"tokenizer has {len(sentinels)} (lower --seq-len, or raise --mean-span-length)")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end

    def make(ds, rows, seed, shuffle=True):
        # The stream's blocks hold its seq_len minus two tokens: this many, the longest that fits corrupted.
        return ExampleStream(ds, rows, "mlm", longest + 2, seed, separator_id=end, shuffle=shuffle)

    return SpanCorruptionTask(make(context.dataset, context.train_rows, cfg.seed), settings, sentinels,
                              prefix=tuple(framing.prefix), suffix=tuple(framing.suffix), end_id=end, pad_id=pad,
                              decoder_start_id=context.decoder_start_id, batch_size=cfg.batch_size, seed=cfg.seed,
                              seq_len=cfg.seq_len,
                              eval_streams={name: make(ds, rows, 999, False) for name, ds, rows in context.eval_sets},
                              eval_batches=cfg.eval_batches, pad_to_longest=not getattr(cfg, "compile", False))
