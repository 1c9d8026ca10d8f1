"""BERT pretraining as a ``TrainTask``: shards -> examples -> masked batches -> loss.

Examples are built at training time from the shards' sentences (NSP pairs, or
full-sentence blocks for MLM alone) and masked per batch, so every epoch sees
new masks. The whole stream is resumable: its state (row cursor, random
states, examples built but not yet used, the packer's carry) is plain JSON.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.data.shards import ShardDataset
from ptmcli.objectives.collate import collate_blocks, collate_pairs
from ptmcli.objectives.mlm import mask_tokens
from ptmcli.objectives.nsp import PairExample, nsp_examples
from ptmcli.objectives.packing import Block, SentencePacker
from ptmcli.runtime.rng import rng_state_from_text, rng_state_to_text


@dataclass(frozen=True)
class Specials:
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    vocab_size: int


def split_rows(num_rows: int, eval_rows: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows chosen by a fixed seed, independent of the training seed, so runs compare."""
    eval_rows = min(eval_rows, num_rows // 10)
    perm = np.random.default_rng(seed).permutation(num_rows)
    held = np.sort(perm[:eval_rows])
    train = np.sort(perm[eval_rows:])
    return train, held


def _sentences(row, with_words: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    ends = row.sentence_ends
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else np.zeros(0, dtype=np.int64)
    sents = [row.input_ids[s:e] for s, e in zip(starts, ends) if e > s]
    words = None
    if with_words and row.word_starts is not None:
        words = [row.word_starts[s:e] for s, e in zip(starts, ends) if e > s]
    return sents, words


def _plain(values) -> list[int] | None:
    return None if values is None else np.asarray(values).astype(np.int64).tolist()


def _array(values, dtype) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=dtype)


def _pair_to_json(ex: PairExample) -> list:
    return [_plain(ex.tokens_a), _plain(ex.tokens_b), bool(ex.is_random_next), _plain(ex.word_starts_a), _plain(ex.word_starts_b)]


def _pair_from_json(item: list) -> PairExample:
    a, b, is_random, wa, wb = item
    return PairExample(_array(a, np.int64), _array(b, np.int64), is_random, _array(wa, bool), _array(wb, bool))


def _block_to_json(block: Block) -> list:
    return [_plain(block.tokens), _plain(block.word_starts)]


def _block_from_json(item: list) -> Block:
    return Block(_array(item[0], np.int64), _array(item[1], bool))


class ExampleStream:
    """Endless, resumable stream of pretraining examples from a set of shard rows."""

    def __init__(self, dataset: ShardDataset, rows: np.ndarray, objective: str, seq_len: int, seed: int, *, separator_id: int,
                 short_seq_prob: float = 0.1, whole_word: bool = False, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.rows = rows
        self.objective = objective
        self.seq_len = seq_len
        self.short_seq_prob = short_seq_prob
        self.whole_word = whole_word
        self.order = ShuffledOrder(len(rows), seed, rank=rank, world_size=world_size, shuffle=shuffle)
        self._iter = iter(self.order)
        self.rng = random.Random(seed * 1000003 + rank)
        self.pending: deque = deque()
        self.packer = SentencePacker(seq_len - 2, separator_id, track_word_starts=whole_word) if objective == "mlm" else None

    def _fill(self) -> None:
        row = self.dataset[int(self.rows[next(self._iter)])]
        sents, words = _sentences(row, self.whole_word)
        if not sents:
            return
        if self.objective == "mlm+nsp":
            self.pending.extend(
                nsp_examples(sents, self.seq_len - 3, self.rng, self._random_document_sents, short_seq_prob=self.short_seq_prob, word_starts=words)
            )
        else:
            self.pending.extend(self.packer.add_document(sents, words if self.whole_word else None))

    def _random_document_sents(self, rng: random.Random):
        row = self.dataset[int(self.rows[rng.randrange(len(self.rows))])]
        sents, words = _sentences(row, self.whole_word)
        return sents if not self.whole_word else (sents, words)

    def take(self, count: int) -> list:
        while len(self.pending) < count:
            self._fill()
        return [self.pending.popleft() for _ in range(count)]

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        if self.objective == "mlm+nsp":
            pending = [_pair_to_json(ex) for ex in self.pending]
        else:
            pending = [_block_to_json(block) for block in self.pending]
        return {
            "order": self.order.state_dict(),
            "rng": [version, list(internal), gauss],
            "pending": pending,
            "packer": self.packer.state_dict() if self.packer else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        if self.objective == "mlm+nsp":
            self.pending = deque(_pair_from_json(item) for item in state["pending"])
        else:
            self.pending = deque(_block_from_json(item) for item in state["pending"])
            self.packer.load_state_dict(state["packer"])


class BertPretrainTask:
    """MLM (+ NSP) on shard rows; the loop's ``TrainTask``."""

    def __init__(self, stream: ExampleStream, specials: Specials, *, batch_size: int, mask_prob: float, seed: int,
                 eval_streams: dict[str, ExampleStream] | None = None, eval_batches: int = 20, pad_to_longest: bool = True) -> None:
        self.stream = stream
        self.specials = specials
        self.batch_size = batch_size
        self.mask_prob = mask_prob
        self.generator = torch.Generator().manual_seed(seed + 17)
        self.nsp = stream.objective == "mlm+nsp"
        self.pad_to_longest = pad_to_longest
        self.eval_sets = {name: self._fixed_batches(s, eval_batches, seed) for name, s in (eval_streams or {}).items()}

    def _collate(self, examples) -> dict[str, torch.Tensor]:
        s = self.specials
        if self.nsp:
            return collate_pairs(examples, s.cls_id, s.sep_id, s.pad_id, self.stream.seq_len, self.pad_to_longest)
        return collate_blocks(examples, s.cls_id, s.sep_id, s.pad_id, self.stream.seq_len, self.pad_to_longest)

    def _mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        word_starts = batch.get("word_starts") if self.stream.whole_word else None
        inputs, labels = mask_tokens(
            batch["input_ids"], batch["special_tokens_mask"], self.specials.vocab_size, self.specials.mask_id, generator,
            mask_prob=self.mask_prob, word_starts=word_starts,
        )
        out = {"input_ids": inputs, "attention_mask": batch["attention_mask"], "mlm_labels": labels}
        if "token_type_ids" in batch:
            out["token_type_ids"] = batch["token_type_ids"]
        if self.nsp:
            out["nsp_labels"] = batch["nsp_labels"]
        return out

    def _fixed_batches(self, stream: ExampleStream, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
        # One fixed set of examples and masks, so evaluations along a run are comparable.
        gen = torch.Generator().manual_seed(seed + 4242)
        batches = []
        for _ in range(count):
            batches.append(self._mask(self._collate(stream.take(self.batch_size)), gen))
        return batches

    def next_micro_batches(self, count: int) -> list[dict[str, torch.Tensor]]:
        return [self._mask(self._collate(self.stream.take(self.batch_size)), self.generator) for _ in range(count)]

    def normalizers(self, batches) -> dict[str, float]:
        norms = {"mlm": float(max(1, sum(int((b["mlm_labels"] != -100).sum()) for b in batches)))}
        if self.nsp:
            norms["nsp"] = float(sum(int(b["nsp_labels"].numel()) for b in batches))
        return norms

    def _forward(self, model, batch):
        return model(
            batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"],
            mlm_labels=batch["mlm_labels"], nsp_labels=batch.get("nsp_labels"),
        )

    def loss(self, model, batch, norms):
        out = self._forward(model, batch)
        loss = out["mlm_loss_sum"] / norms["mlm"]
        stats = {"mlm_loss_sum": out["mlm_loss_sum"].detach(), "mlm_count": out["mlm_count"], "mlm_correct": out["mlm_correct"]}
        if self.nsp:
            loss = loss + out["nsp_loss_sum"] / norms["nsp"]
            stats.update(nsp_loss_sum=out["nsp_loss_sum"].detach(), nsp_count=out["nsp_count"], nsp_correct=out["nsp_correct"])
        return loss, {k: float(v) for k, v in stats.items()}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        out = {}
        if sums.get("mlm_count"):
            out["mlm_loss"] = sums["mlm_loss_sum"] / sums["mlm_count"]
            out["mlm_acc"] = sums["mlm_correct"] / sums["mlm_count"]
        if sums.get("nsp_count"):
            out["nsp_loss"] = sums["nsp_loss_sum"] / sums["nsp_count"]
            out["nsp_acc"] = sums["nsp_correct"] / sums["nsp_count"]
        return out

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        from ptmcli.runtime.device import autocast

        results = {}
        for name, batches in self.eval_sets.items():
            sums: dict[str, float] = {}
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(precision, device):
                    out = self._forward(model, batch)
                for key in ("mlm_loss_sum", "mlm_count", "mlm_correct", "nsp_loss_sum", "nsp_count", "nsp_correct"):
                    if key in out and out[key] is not None:
                        sums[key] = sums.get(key, 0.0) + float(out[key])
            prefix = "" if name == "heldout" else f"{name}_"
            results.update({prefix + k: v for k, v in self.summarize(sums).items()})
        return results

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict(), "mask_generator": rng_state_to_text(self.generator.get_state())}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self.generator.set_state(rng_state_from_text(state["mask_generator"]))
