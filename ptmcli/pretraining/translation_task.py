"""The ``translation`` objective (CoVe): teacher-forced cross-entropy on source/target pair shards.

Pairs come from ``ptm tokenize encode --pairs`` shards whose sources were
encoded with the word tokenizer of the frozen input vectors (``--init-vectors``)
and whose targets were encoded with their own tokenizer (``--target-tokenizer``,
recorded in the manifest). Batches are ``data.seq2seq`` two-sequence batches,
each side cut to ``--seq-len`` and padded to its longest row; the loss of a
step is normalised by its target tokens. Evaluation reports the perplexity of
the fixed evaluation batches and the BLEU (sacrebleu) of a greedy translation
of each evaluation set's pairs, against their references as the target
tokenizer decodes them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ptmcli.data.order import ShuffledOrder
from ptmcli.data.seq2seq import Seq2SeqCollator, fit_sequence
from ptmcli.errors import PtmError
from ptmcli.models.framing import first_token
from ptmcli.models.static import VECTORS
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.task_base import PretrainTask
from ptmcli.runtime.device import autocast

BLEU_PAIRS = 1000
"""Most pairs of each evaluation set that are translated for BLEU (Multi30k's val has 1,014)."""


# -- what the data decides about the model ---------------------------------------------------


def _vectors_checkpoint(path: str) -> Path:
    from ptmcli.checkpoint import CONFIG, resolve_checkpoint

    given = Path(path)
    if not given.exists():
        raise PtmError(f"--init-vectors {path}: no such checkpoint or run directory")
    return given if (given / CONFIG).is_file() else resolve_checkpoint(given)


@functools.lru_cache(maxsize=1)
def _input_vectors(path: str) -> tuple[torch.Tensor, str]:
    """(the vectors ``[vocab, dim]``, the sha256 of their tokenizer) of a static word-vector checkpoint."""
    from ptmcli.checkpoint import read_config, read_weights

    ckpt = _vectors_checkpoint(path)
    config = read_config(ckpt)
    weights = read_weights(ckpt)
    if VECTORS not in weights:
        raise PtmError(f"--init-vectors {path}: a {config.get('arch')} checkpoint, not static word vectors "
                       "(give a ptm pretrain --arch glove/word2vec checkpoint, or a .vec file converted with ptm convert)")
    return weights[VECTORS].float(), str((config.get("tokenizer") or {}).get("sha256", ""))


def target_tokenizer(dataset, where: str = "--data"):
    """The tokenizer of a pair shard's targets: its ``target_tokenizer``, else the sources' own."""
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    info = dataset.manifest.get("target_tokenizer") or dataset.manifest["tokenizer"]
    path = info.get("path")
    if not path or not Path(path).is_dir():
        raise PtmError(f"{where} {dataset.path}: its target tokenizer {path} is not found here")
    tokenizer = PtmTokenizer.load(path)
    if tokenizer.sha256 != info.get("sha256"):
        raise PtmError(f"{where} {dataset.path}: the target tokenizer at {path} is not the one the pairs were encoded with")
    return tokenizer


def _target_roles(tokenizer) -> tuple[int, int, int]:
    """(decoder start, end, pad) ids of the target tokenizer."""
    start, end = first_token(tokenizer, "bos", "cls"), first_token(tokenizer, "eos", "sep")
    if start is None or end is None or start == end:
        raise PtmError("the target tokenizer has no distinct begin/end-of-sentence tokens (bos/eos or [CLS]/[SEP]), which the "
                       "decoder starts and stops with; train it with --special-tokens bert or roberta")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else end
    return start, end, pad


def model_settings(cfg, tokenizer, dataset) -> dict:
    """The model fields the data decides: the input vectors' width and the target vocabulary and its tokens."""
    if not cfg.init_vectors:
        raise PtmError("--objective translation (CoVe) reads frozen word vectors: give --init-vectors CKPT (a ptm glove or "
                       "word2vec checkpoint, or a .vec file converted with ptm convert)")
    vectors, sha256 = _input_vectors(cfg.init_vectors)
    if sha256 != tokenizer.sha256 or vectors.shape[0] != tokenizer.vocab_size:
        raise PtmError(f"--data {dataset.path}: its sources were not encoded with the tokenizer of --init-vectors "
                       f"{cfg.init_vectors}; encode them with --tokenizer {cfg.init_vectors} (the vectors' own words)")
    targets = target_tokenizer(dataset)
    start, end, pad = _target_roles(targets)
    return {"input_size": int(vectors.shape[1]), "target_vocab_size": targets.vocab_size, "target_pad_id": pad,
            "decoder_start_token_id": start, "eos_token_id": end}


def load_input_vectors(model, cfg) -> None:
    """Copy the frozen input vectors into a fresh model (a resumed run's weights then replace them as saved)."""
    model.encoder.set_vectors(_input_vectors(cfg.init_vectors)[0])


# -- batches ----------------------------------------------------------------------------------


class PairStream:
    """Endless, resumable stream of pairs in a seeded shuffled order."""

    def __init__(self, dataset, rows: np.ndarray, seed: int, shuffle: bool = True) -> None:
        self.dataset, self.rows = dataset, rows
        self.order = ShuffledOrder(len(rows), seed, shuffle=shuffle)
        self._iter = iter(self.order)

    def take(self, count: int, rows: slice | None = None) -> list:
        taken = [self.dataset[int(self.rows[next(self._iter)])] for _ in range(count)]
        return taken[rows] if rows is not None else taken

    def state_dict(self) -> dict:
        return {"order": self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state["order"])
        self._iter = iter(self.order)


class TranslationTask(PretrainTask):
    """Teacher-forced translation; the loop's ``TrainTask``."""

    sum_keys = ("lm_loss_sum", "lm_count", "lm_correct")

    def __init__(self, stream: PairStream, *, batch_size: int, max_length: int, source_pad_id: int, targets,
                 eval_streams: dict[str, PairStream], eval_batches: int, bleu_sets: dict) -> None:
        self.max_length, self.source_pad_id, self.targets = max_length, source_pad_id, targets
        start, self.end_id, pad = _target_roles(targets)
        # Sources get no special tokens (CoVe reads words alone); each target ends in its end token.
        self.collate = Seq2SeqCollator(pad_id=pad, decoder_start_id=start)
        self.bleu_sets = bleu_sets
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _batch(self, taken, evaluation: bool = False) -> dict[str, torch.Tensor]:
        batch = self.collate([(fit_sequence(s, self.max_length, None), fit_sequence(t, self.max_length, self.end_id))
                              for s, t in taken])
        # Source padding takes a source id: the two sides have different vocabularies.
        batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, self.source_pad_id)
        return dict(batch)

    def normalizer_counts(self, batches) -> dict[str, float]:
        return {"lm": float(sum(int((b["labels"] != -100).sum()) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return {"lm": max(1.0, counts["lm"])}

    def _forward(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"], batch["labels"])

    def _objective(self, out, norms):
        return out["lm_loss_sum"] / norms["lm"]

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        if not sums.get("lm_count"):
            return {}
        mean = sums["lm_loss_sum"] / sums["lm_count"]
        return {"lm_loss": mean, "ppl": float(np.exp(min(mean, 50.0))), "acc": sums["lm_correct"] / sums["lm_count"]}

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        results = super().evaluate(model, precision, device)
        inner = getattr(model, "module", model)
        for name, (dataset, rows) in self.bleu_sets.items():
            prefix = "" if name == "heldout" else f"{name}_"
            with autocast(precision, device):
                results[f"{prefix}bleu"] = self.bleu(inner, dataset, rows, device)
        return results

    def bleu(self, model, dataset, rows, device) -> float:
        """Corpus BLEU of a greedy translation of ``rows`` of ``dataset``."""
        hypotheses, references = [], []
        for begin in range(0, len(rows), self.batch_size):
            pairs = [dataset[int(row)] for row in rows[begin : begin + self.batch_size]]
            batch = self._batch(pairs)
            ids = greedy_decode(model.incremental_decoder(), batch["input_ids"].to(device),
                                batch["attention_mask"].to(device), self.end_id, self.max_length)
            hypotheses += [self.targets.decode(row) for row in ids]
            references += [self.targets.decode([int(t) for t in target]) for _, target in pairs]
        return corpus_bleu(hypotheses, references)


def greedy_decode(decoder, sources: torch.Tensor, attention_mask: torch.Tensor | None, end_id: int,
                  max_new_tokens: int) -> list[list[int]]:
    """The argmax translation of each source through a :class:`ptmcli.models.generation.Decoder`, end token left out."""
    logits, state = decoder.start(sources, attention_mask)
    done = torch.zeros(sources.shape[0], dtype=torch.bool, device=sources.device)
    chosen = []
    for step in range(max_new_tokens):
        token = logits.argmax(dim=-1)
        chosen.append(token)
        done |= token == end_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits, state = decoder.step(state, token[:, None])
    out = []
    for row in torch.stack(chosen, dim=1).tolist():
        out.append(row[: row.index(end_id)] if end_id in row else row)
    return out


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (its default 13a tokenisation), 0-100."""
    try:
        import sacrebleu
    except ImportError:
        raise PtmError("BLEU needs sacrebleu: pip install sacrebleu") from None
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def build(context: ObjectiveContext) -> TranslationTask:
    cfg = context.config
    targets = target_tokenizer(context.dataset)
    for _name, dataset, _rows in context.eval_sets:
        if dataset is not context.dataset:
            info = dataset.manifest.get("target_tokenizer") or dataset.manifest["tokenizer"]
            if info.get("sha256") != targets.sha256:
                raise PtmError(f"--eval-data {dataset.path}: its targets were encoded with another tokenizer than --data's")
    source_pad = context.tokenizer.pad_id if context.tokenizer.pad_id is not None else 0
    return TranslationTask(
        PairStream(context.dataset, context.train_rows, cfg.seed), batch_size=cfg.batch_size, max_length=cfg.seq_len,
        source_pad_id=source_pad, targets=targets,
        eval_streams={name: PairStream(ds, rows, 999, shuffle=False) for name, ds, rows in context.eval_sets},
        eval_batches=cfg.eval_batches,
        bleu_sets={name: (ds, np.asarray(rows)[:BLEU_PAIRS]) for name, ds, rows in context.eval_sets},
    )
