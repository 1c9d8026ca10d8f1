"""Segment recurrence for ``--objective plm`` with ``--mem-len N``: Transformer-XL's memory carried across steps.

*Layout* (Transformer-XL's ``batchify``). Each epoch's token stream (the
documents in the seeded order of ``ShuffledOrder``, an end-of-document token
after each, as ``clm`` and memory-less ``plm`` read them) is cut into B
contiguous parts, B the global micro-batch (``--batch-size`` times the
processes); the tail that fills no whole segment of every part is left out of
that epoch. Row r reads part r left to right, ``seq_len`` tokens per
micro-batch, so row r's segment of a micro-batch continues exactly the text of
its segment in the micro-batch before. Document boundaries pass inside a part
as they come (the memory spans them, as Transformer-XL's does); all parts
end together, and the next epoch's first segment reads no memory.

*Accumulation*: the memory follows the micro-batch order. The n-th
micro-batch of the run holds the n-th segment of every row (counted over
epochs; with ``--grad-accum G``, micro-batch k of step t is n = t * G + k),
and reads the memory the micro-batch before it left, whether that one
belongs to this step or the last. The streams are the B rows of a micro-batch whatever the accumulation,
so neither ``--grad-accum`` nor ``--batch-ramp`` changes the layout (one
stream per accumulated row instead would need G sets of memory and a layout
that changes with the ramp).

*Draws*: the micro-batches are numbered as without memory (example
``n * B + r`` for row r of the n-th micro-batch), and targets and
factorisation orders stay keyed by that number, so any process builds any row.

*Processes*: under torchrun each rank builds its rows of every micro-batch and
keeps their memory. *Resume*: the memory is part of the step checkpoint, every
row's, as safetensors beside the optimizer state (``training_tensors``); a
resumed run reads the saved memory of its rows and continues bit for bit. The
stream's own position is one counter.

Evaluation stays memory-free: the fixed held-out batches of ``plm``, each
example alone, comparable with runs without memory.
"""

from __future__ import annotations

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.errors import PtmError
from ptmcli.pretraining.permutation_lm import PermutationLMTask


class ParallelSegmentStream:
    """``streams`` rows, each reading its own contiguous part of every epoch's token stream, ``seq_len`` at a time."""

    def __init__(self, dataset, rows: np.ndarray, seq_len: int, seed: int, *, eos_id: int, streams: int,
                 shuffle: bool = True) -> None:
        self.dataset = dataset
        self.rows = rows
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.streams = streams
        self.order = ShuffledOrder(len(rows), seed, shuffle=shuffle)
        # Tokens of each document with its end-of-document token: the same every epoch, only their order changes.
        self.lengths = np.array([len(dataset[int(row)].input_ids) for row in rows], dtype=np.int64) + 1
        total = int(self.lengths.sum())
        self.segments_per_epoch = total // (streams * seq_len)
        if self.segments_per_epoch == 0:
            raise PtmError(f"--mem-len: the training documents hold {total:,} tokens, fewer than one segment for each "
                           f"of the {streams} memory streams ({streams} x --seq-len {seq_len}); use a smaller "
                           "--batch-size or --seq-len, or more data")
        self.taken = 0  # micro-batches handed out
        self._epoch: int | None = None
        self._starts = np.zeros(0, dtype=np.int64)

    def _document_starts(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            lengths = self.lengths[self.order.permutation(epoch)]
            self._starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            self._epoch = epoch
        return self._starts

    def _tokens(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``start..stop`` of ``epoch``'s stream."""
        starts = self._document_starts(epoch)
        permutation = self.order.permutation(epoch)
        parts = []
        index = int(np.searchsorted(starts, start, side="right")) - 1
        while start < stop:
            offset, position = int(starts[index]), int(permutation[index])
            ids = np.asarray(self.dataset[int(self.rows[position])].input_ids, dtype=np.int64)
            document = np.append(ids, self.eos_id)
            parts.append(document[start - offset : stop - offset])
            start = offset + len(document)
            index += 1
        return np.concatenate(parts)

    def take(self, count: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int]]:
        """(``[rows, seq_len]`` segments, their example numbers, the segment's index in its epoch, (first, end) row)."""
        if count != self.streams:
            raise ValueError(f"a stream of {self.streams} rows asked for {count}")
        epoch, segment = divmod(self.taken, self.segments_per_epoch)
        chosen = range(count)[rows] if rows is not None else range(count)
        span = self.segments_per_epoch * self.seq_len
        blocks = np.zeros((len(chosen), self.seq_len), dtype=np.int64)
        for i, row in enumerate(chosen):
            start = row * span + segment * self.seq_len
            blocks[i] = self._tokens(epoch, start, start + self.seq_len)
        numbers = self.taken * count + np.asarray(chosen, dtype=np.int64)
        self.taken += 1
        return blocks, numbers, segment, (chosen.start, chosen.stop)

    def state_dict(self) -> dict:
        return {"taken": self.taken, "streams": self.streams, "segments_per_epoch": self.segments_per_epoch,
                "seed": self.order.seed, "num_rows": self.order.num_rows}

    def load_state_dict(self, state: dict) -> None:
        if "taken" not in state:
            raise PtmError("the checkpoint's data position is not one of memory streams (--mem-len); resume with the "
                           "settings it was saved with")
        saved = (state.get("streams"), state.get("segments_per_epoch"), state.get("num_rows"), state.get("seed"))
        here = (self.streams, self.segments_per_epoch, self.order.num_rows, self.order.seed)
        if saved != here:
            raise PtmError(f"the memory streams were laid out as {saved[0]} rows of {saved[1]} segments per epoch over "
                           f"{saved[2]} documents (seed {saved[3]}); this run has {here[0]} rows of {here[1]} over "
                           f"{here[2]} (seed {here[3]}): resume with the same data, --seq-len and global batch")
        self.taken = int(state["taken"])


class RecurrentPermutationLMTask(PermutationLMTask):
    """``plm`` whose training rows are memory streams: each micro-batch reads the memory of the one before."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memory: tuple[torch.Tensor, ...] | None = None
        self.memory_rows: tuple[int, int] | None = None  # the global rows ``memory`` holds

    def _batch(self, taken, evaluation: bool = False) -> dict:
        if evaluation:
            return super()._batch(taken, evaluation)
        blocks, numbers, segment, rows = taken
        batch = self.sampler(blocks, numbers, self.order_seed)
        # Plain Python values: they stay on the host, so choosing the memory reads nothing from the device.
        return dict(batch, segment=segment, stream_rows=rows)

    def _memory_for(self, batch) -> tuple[torch.Tensor, ...] | None:
        if batch["segment"] == 0 or self.memory is None:
            return None  # a stream's first segment (the run's, or an epoch's) has no text before it
        rows = batch["stream_rows"]
        if rows != self.memory_rows:
            # Resumed: the checkpoint holds every row's memory; this process keeps its own.
            first = self.memory_rows[0]
            if not self.memory_rows[0] <= rows[0] <= rows[1] <= self.memory_rows[1]:
                raise PtmError(f"the saved memory holds rows {self.memory_rows}, not the rows {rows} of this process")
            self.memory = tuple(m[rows[0] - first : rows[1] - first] for m in self.memory)
            self.memory_rows = rows
        device = batch["input_ids"].device
        return tuple(m.to(device) for m in self.memory)

    def _forward(self, model, batch):
        if "segment" not in batch:  # an evaluation batch: each example alone
            return super()._forward(model, batch)
        out = model(batch["input_ids"], batch["perm_mask"], batch["target_mapping"], batch["labels"],
                    mems=self._memory_for(batch), return_mems=True)
        self.memory, self.memory_rows = out.pop("mems"), batch["stream_rows"]
        if not bool(torch.isfinite(out["lm_loss_sum"])):
            # The loop skips a non-finite step; its memory would carry the NaN into every later segment.
            self.memory = None
        return out

    def training_tensors(self) -> dict[str, torch.Tensor]:
        """Every row's memory ``mems.<layer>`` ``[rows, M, D]`` for the step checkpoint (all processes call this)."""
        if self.memory is None:
            return {}
        memory = self.memory
        if self.memory_rows != (0, self.batch_size):
            import torch.distributed as dist

            first, end = self.memory_rows
            gathered = []
            for m in memory:
                whole = m.new_zeros((self.batch_size, *m.shape[1:]))
                whole[first:end] = m
                dist.all_reduce(whole)  # each process fills its own rows with zeros elsewhere: the sum is all of them
                gathered.append(whole)
            memory = tuple(gathered)
        return {f"mems.{i}": m.detach().contiguous().cpu() for i, m in enumerate(memory)}

    def load_training_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            return
        memory = tuple(tensors[f"mems.{i}"] for i in range(len(tensors)))
        if any(m.shape[0] != self.batch_size for m in memory):
            raise PtmError(f"the saved memory holds {memory[0].shape[0]} rows, the global micro-batch here "
                           f"{self.batch_size}: resume with the same global batch")
        self.memory, self.memory_rows = memory, (0, self.batch_size)
