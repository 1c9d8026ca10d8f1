"""The feature pipeline: chunks of records, sorted by length into batches, written back in input order.

Records are read ``chunk_size`` at a time (fewer when their features would
pass ``buffer_bytes``), tokenized in one batched call, sorted by length so a
batch carries little padding, run through the encoder under
``torch.inference_mode``, and handed out in input order. Memory is bounded by
one chunk, whatever the input size. A row's vectors do not depend on which
rows share its batch or on the batch size (padding is masked; GPT is causal),
up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch

from ptmcli.errors import PtmError
from ptmcli.features.encoding import EncodedText, encode_records
from ptmcli.features.layers import LayerPlan, gather_words, pool
from ptmcli.features.model import FeatureModel
from ptmcli.features.readers import TextRecord

DEFAULT_BUFFER_BYTES = 1 << 30


@dataclass(frozen=True)
class FeatureLayout:
    """What every row holds: the writers' header."""

    granularity: str
    """"token" (one vector per sub-token), "word" (per input word) or "text" (pooled)."""
    labels: tuple[int | str, ...]
    """Name of each output layer: a layer index, or the combination ("mean", "concat", "scalar-mix")."""
    dim: int
    combine: str
    pool: str
    words: str
    arch: str
    checkpoint: str
    max_length: int
    precision: str
    task: str | None = None
    """The finetuning task whose input layout the texts were given (``--task``), else None (plain text)."""
    stack_layers: tuple[int, ...] = ()
    """The entries of the L + 1 stack read (0 the embeddings), in the order they were selected."""
    mix_weights: tuple[float, ...] | None = None
    """Combined output: the weight of each of ``stack_layers`` in it (they sum to 1); None when kept or concatenated."""
    mix_gamma: float | None = None
    normalize: bool = False
    """Pooled vectors scaled to unit L2 length."""
    part: str | None = None
    """The checkpoint's network the vectors came from when not its default one (``--part generator``)."""

    @property
    def num_layers(self) -> int:
        return len(self.labels)

    def describe(self) -> dict:
        """The layout as JSON for manifests and metadata."""
        return {"granularity": self.granularity, "layers": list(self.labels), "dim": self.dim,
                "combine": self.combine, "pool": self.pool, "words": self.words, "arch": self.arch,
                "checkpoint": self.checkpoint, "max_seq_length": self.max_length, "precision": self.precision,
                "task": self.task, "stack_layers": list(self.stack_layers),
                "mix_weights": None if self.mix_weights is None else list(self.mix_weights), "mix_gamma": self.mix_gamma,
                "normalize": self.normalize, "part": self.part}


@dataclass
class FeatureRow:
    index: int
    record: TextRecord
    units: list[str] | None
    """Sub-tokens or words the vectors belong to; None for pooled rows."""
    values: np.ndarray
    """float32 ``[K, n, D]`` (one vector per unit and output layer), or ``[K, D]`` pooled."""


@dataclass
class ExtractStats:
    texts: int = 0
    tokens: int = 0
    truncated: int = 0
    empty: int = 0
    words_without_tokens: int = 0
    truncated_lines: list[int] = field(default_factory=list)


class FeatureExtractor:
    """Runs ``model`` over records and yields one ``FeatureRow`` per record, in input order."""

    def __init__(self, model: FeatureModel, plan: LayerPlan, *, pool: str = "none", normalize: bool = False,
                 words: str = "none",
                 max_length: int | None = None, batch_size: int = 32, chunk_size: int = 10000,
                 precision: str = "fp32", device: torch.device | None = None,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES, task: str | None = None, source: str = "-") -> None:
        if batch_size < 1 or chunk_size < 1:
            raise PtmError("--batch-size and --chunk-size must be positive")
        if pool != "none" and words != "none":
            raise PtmError("--pool and --words exclude each other: one vector per text, or one per word")
        if normalize and pool == "none":
            raise PtmError("--normalize scales pooled vectors: add --pool cls|mean|max|last")
        if pool == "cls" and not model.family.first_position_is_summary:
            raise PtmError(f"--pool cls reads a summary token like BERT's [CLS]; a {model.arch} model has none (use mean, max or last)")
        if task is not None:
            from ptmcli.features.labeled_input import check_task

            check_task(task)
        self.model = model
        self.plan = plan
        self.task = task
        self.source = source
        self.pool = pool
        self.normalize = normalize
        self.words = words
        self.max_length = max_length or model.max_length
        if model.position_limit is not None and self.max_length > model.position_limit:
            raise PtmError(f"--max-seq-length {self.max_length}: the model has only {model.position_limit} positions")
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.precision = precision
        self.device = device or next(model.model.parameters()).device
        self.buffer_bytes = buffer_bytes
        self.framing = model.family.framing(model.tokenizer)
        self.stats = ExtractStats()
        granularity = "text" if pool != "none" else "word" if words != "none" else "token"
        mix_weights, mix_gamma = None, None
        if plan.combine == "mean":
            mix_weights, mix_gamma = tuple(1.0 / len(plan.stack_indices) for _ in plan.stack_indices), 1.0
        elif plan.combine == "scalar-mix":
            mix_weights, mix_gamma = plan.mix_weights, plan.mix_gamma
        self.layout = FeatureLayout(granularity, plan.labels, plan.output_dim(model.dim), plan.combine, pool, words,
                                    model.arch, str(model.path.resolve()), self.max_length, precision, task,
                                    tuple(plan.stack_indices), mix_weights, mix_gamma, normalize, model.part)

    def rows(self, records: Iterable[TextRecord], on_batch: Callable[[int], None] | None = None) -> Iterator[FeatureRow]:
        iterator = iter(records)
        while True:
            chunk = list(islice(iterator, self.chunk_size))
            if not chunk:
                return
            if self.task is not None:
                from ptmcli.features.labeled_input import encode_for_task

                encoded, cut = encode_for_task(chunk, self.model.tokenizer, self.task, self.model.arch, self.max_length,
                                               self.words != "none", self.source)
                self.stats.truncated += cut  # counted per chunk: the lines are not known
            else:
                encoded = encode_records(chunk, self.model.tokenizer, self.framing, self.max_length, self.words != "none")
            for part in self._split_by_memory(encoded):
                yield from self._run(part, on_batch)

    def _row_floats(self, text: EncodedText) -> int:
        units = 1 if self.pool != "none" else len(text.words) if self.words != "none" else text.num_outputs
        return max(1, units) * self.layout.num_layers * self.layout.dim

    def _split_by_memory(self, encoded: list[EncodedText]) -> Iterator[list[EncodedText]]:
        budget = max(1, self.buffer_bytes // 4)
        start, used = 0, 0
        for i, text in enumerate(encoded):
            floats = self._row_floats(text)
            if used + floats > budget and i > start:
                yield encoded[start:i]
                start, used = i, 0
            used += floats
        if start < len(encoded):
            yield encoded[start:]

    def _run(self, encoded: list[EncodedText], on_batch) -> Iterator[FeatureRow]:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        results: list[FeatureRow | None] = [None] * len(encoded)
        for begin in range(0, len(order), self.batch_size):
            positions = order[begin : begin + self.batch_size]
            batch = [encoded[i] for i in positions]
            for i, row in zip(positions, self._batch_rows(batch)):
                results[i] = row
            if on_batch is not None:
                on_batch(len(batch))
        for text, row in zip(encoded, results):
            self._count(text)
            yield row

    def _count(self, text: EncodedText) -> None:
        stats = self.stats
        stats.texts += 1
        stats.tokens += len(text.input_ids)
        if text.truncated:
            stats.truncated += 1
            if len(stats.truncated_lines) < 5:
                stats.truncated_lines.append(text.record.line)
        if not text.record.text_a and not text.record.text_b:
            stats.empty += 1
        if text.words is not None:
            present = {w for w in text.word_ids if w >= 0}
            stats.words_without_tokens += len(text.words) - len(present)

    def _batch_tensors(self, batch: list[EncodedText]):
        lengths = [len(t.input_ids) for t in batch]
        width = max(1, max(lengths))
        ids = torch.full((len(batch), width), self.framing.pad_id, dtype=torch.long)
        types = torch.zeros((len(batch), width), dtype=torch.long) if self.framing.segments else None
        for row, text in enumerate(batch):
            ids[row, : len(text.input_ids)] = torch.tensor(text.input_ids, dtype=torch.long)
            if types is not None:
                types[row, : len(text.type_ids)] = torch.tensor(text.type_ids, dtype=torch.long)
        length = torch.tensor(lengths)
        mask = (torch.arange(width)[None, :] < length[:, None]).long()
        # No padding in the batch: no mask, so attention takes its unmasked fast path.
        attention = None if min(lengths) == width and not self.model.family.needs_mask_without_padding else mask
        move = lambda t: None if t is None else t.to(self.device, non_blocking=True)  # noqa: E731
        return move(ids), move(types), move(attention), width

    def _batch_rows(self, batch: list[EncodedText]) -> list[FeatureRow]:
        from ptmcli.runtime.device import autocast

        ids, types, attention, width = self._batch_tensors(batch)
        with torch.inference_mode():
            with autocast(self.precision, self.device):
                stack = self.model.stack(ids, types, attention)
            values = self.plan.apply(stack)
            starts = torch.tensor([t.output_start for t in batch], device=self.device)
            ends = torch.tensor([t.output_end for t in batch], device=self.device)
            if self.pool != "none":
                pooled = pool(values, self.pool, starts, ends)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                pooled = pooled.cpu().numpy()
                return [FeatureRow(t.record.index, t.record, None, pooled[:, row].copy()) for row, t in enumerate(batch)]
            if self.words != "none":
                num_words = max(len(t.words) for t in batch)
                word_ids = torch.full((len(batch), width), -1, dtype=torch.long)
                for row, text in enumerate(batch):
                    word_ids[row, : len(text.word_ids)] = torch.tensor(text.word_ids, dtype=torch.long)
                gathered = gather_words(values, word_ids.to(self.device), num_words, self.words).cpu().numpy()
                return [FeatureRow(t.record.index, t.record, list(t.words), gathered[:, row, : len(t.words)].copy())
                        for row, t in enumerate(batch)]
            per_token = values.cpu().numpy()
        tokenizer = self.model.tokenizer
        return [FeatureRow(t.record.index, t.record, tokenizer.convert_ids_to_tokens(t.input_ids[t.output_start : t.output_end]),
                           per_token[:, row, t.output_start : t.output_end].copy())
                for row, t in enumerate(batch)]
