"""UniLM sequence-to-sequence finetuning (Dong et al., 2019) of an encoder with a masked-LM head (BERT).

``--task seq2seq`` takes this path for a family that is a prefix LM (``Family.prefix_lm``; chosen by
``seq2seq.style``); it answers the same calls as ``ptmcli.finetuning.seq2seq`` does for encoder-decoders.

- Rows: ``[CLS] source [SEP]`` (segment 0, ``--max-source-len`` tokens at most) and ``target [SEP]``
  (segment 1, ``--max-target-len`` at most), packed into one sequence; together they must fit the position table.
- Training (``training_collator``): in each row, ``round(p * n)`` (at least one) of the ``n`` target tokens,
  the closing [SEP] among them so the model learns to stop, are drawn with ``p = --target-mask-prob`` (UniLM
  used 0.7), replaced by [MASK] and predicted by the MLM head under the seq2seq attention mask
  (``ptmcli.models.prefix_lm``). The draws are keyed by (``--seed``, epoch, row), so resume is exact.
- Dev loss (``evaluation_collator``): every target token is scored the way decoding predicts it, at a [MASK]
  that sees the source and the true target on its left. Each row holds the target once as tokens and once as
  [MASK]s, mask ``j`` at target token ``j``'s position; one pass scores them all (the pseudo-masks of UniLMv2).
- Generation: ``prefix_lm.PrefixLM`` behind ``models.generation.decode``, as for any other decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.finetuning import seq2seq
from ptmcli.finetuning.seq2seq import (  # noqa: F401 (re-exported: this module answers seq2seq's calls)
    IGNORE_INDEX,
    Seq2SeqRows,
    announce_cuts,
    describe_cuts,
    escape,
    generate_texts,
    generation_settings,
    score_outputs,
    smoothed_loss_sum,
    teacher_forced_loss,
)
from ptmcli.models.prefix_lm import PrefixLM, hidden_states, seq2seq_pattern
from ptmcli.pretraining.keyed_random import keyed_uniform
from ptmcli.tasks.seq2seq_data import TextPair


def check_checkpoint(loaded, cfg, where: str) -> None:
    """Refuse what UniLM's recipe cannot train: no MLM head weights, no [MASK] token, or a source and a target
    that together overrun the position table."""
    if "mlm" in (loaded.initialised or []):
        raise PtmError(f"{where}: the checkpoint has no masked-LM head (converted from a class without one); "
                       "UniLM's seq2seq finetuning predicts the target with it")
    if loaded.tokenizer.mask_id is None:
        raise PtmError(f"{where}: the tokenizer has no [MASK] token, which UniLM's seq2seq finetuning predicts at")
    if not 0.0 < cfg.target_mask_prob <= 1.0:
        raise PtmError(f"--target-mask-prob {cfg.target_mask_prob}: must be in (0, 1]")
    positions = loaded.family.position_limit(loaded.model_config)
    source_len, target_len = cfg.max_source_len or cfg.max_len, cfg.max_target_len or cfg.max_len
    if positions is not None and source_len + target_len > positions:
        raise PtmError(f"--max-source-len {source_len} + --max-target-len {target_len} exceed the model's {positions} "
                       f"positions: source and target share one sequence (UniLM); set both so they add up to at most {positions}")


# -- rows and batches ---------------------------------------------------------------------------------


def encode_pairs(pairs: Sequence[TextPair], tokenizer, framing, max_source_len: int, max_target_len: int) -> Seq2SeqRows:
    """``[CLS] source [SEP]`` and ``target [SEP]`` of each pair, cut to their limits (the end token kept)."""
    return seq2seq.encode_pairs(pairs, tokenizer, framing, max_source_len, max_target_len, target_prefix=False)


def pack(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """``[CLS] source [SEP] target [SEP]`` per row, right-padded: ``input_ids``, ``token_type_ids``,
    ``attention_mask`` (1 real) and ``labels`` (each target token at its place, -100 elsewhere)."""
    width = max(len(row["source"]) + len(row["target"]) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segments = torch.zeros_like(ids)
    real = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, row in enumerate(rows):
        source, target = len(row["source"]), len(row["target"])
        ids[i, :source] = torch.from_numpy(row["source"])
        ids[i, source : source + target] = torch.from_numpy(row["target"])
        segments[i, source : source + target] = 1
        real[i, : source + target] = 1
        labels[i, source : source + target] = torch.from_numpy(row["target"])
    return {"input_ids": ids, "token_type_ids": segments, "attention_mask": real, "labels": labels}


def mask_targets(batch: dict[str, torch.Tensor], mask_id: int, prob: float, draws: torch.Tensor) -> dict[str, torch.Tensor]:
    """``round(prob * n)`` (at least 1) of each row's ``n`` target tokens, those with the lowest ``draws``
    (uniforms shaped like the batch), become [MASK]; only they keep their labels."""
    target = batch["labels"] != IGNORE_INDEX
    scores = draws.masked_fill(~target, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # 0 for the row's lowest draw
    chosen = rank < (target.sum(1, keepdim=True) * prob).round().clamp(min=1)
    chosen &= target
    return dict(batch, input_ids=batch["input_ids"].masked_fill(chosen, mask_id), labels=batch["labels"].masked_fill(~chosen, IGNORE_INDEX))


# Purpose of the target-mask draws in the keyed stream (pretraining objectives use others).
TARGET_MASK = 301


def training_collator(pad_id: int, lm: nn.Module, tokenizer, cfg):
    """Rows and their draw numbers -> packed training batches with ``--target-mask-prob`` of the target tokens
    masked, drawn by (``--seed``, row number): the same batch whenever and wherever it is made."""
    mask_id, prob, seed = tokenizer.mask_id, cfg.target_mask_prob, cfg.seed

    def batch_of(rows: list[dict], numbers: list[int]) -> dict[str, torch.Tensor]:
        batch = pack(rows, pad_id)
        draws = torch.from_numpy(keyed_uniform(seed, TARGET_MASK, np.asarray(numbers), batch["labels"].shape[1]))
        return mask_targets(batch, mask_id, prob, draws)

    batch_of.keyed = True
    return batch_of


def teacher_forcing_batch(rows: list[dict], pad_id: int, mask_id: int) -> dict[str, torch.Tensor]:
    """``[CLS] source [SEP] target [MASK] x n``: the [MASK] at target token ``j``'s position sees the source, the
    target tokens before ``j`` and itself, and is labelled with token ``j``; the target tokens see as in
    training. ``attention_mask`` is the ``[B, T, T]`` pattern and ``position_ids`` each token's position."""
    width = max(len(row["source"]) + 2 * len(row["target"]) for row in rows)
    batch = len(rows)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    segments = torch.zeros_like(ids)
    positions = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    pattern = torch.eye(width, dtype=torch.bool).repeat(batch, 1, 1)
    for i, row in enumerate(rows):
        s, n = len(row["source"]), len(row["target"])
        target = torch.from_numpy(row["target"])
        ids[i, :s] = torch.from_numpy(row["source"])
        ids[i, s : s + n] = target
        ids[i, s + n : s + 2 * n] = mask_id
        segments[i, s : s + 2 * n] = 1
        positions[i, : s + n] = torch.arange(s + n)
        positions[i, s + n : s + 2 * n] = torch.arange(s, s + n)
        labels[i, s + n : s + 2 * n] = target
        pattern[i, : s + 2 * n, :s] = True  # everything sees the source
        left = torch.ones(n, n, dtype=torch.bool).tril()
        pattern[i, s : s + n, s : s + n] = left  # target tokens: their own left, themselves included
        pattern[i, s + n : s + 2 * n, s : s + n] = left.tril(-1)  # mask j: target tokens before j (and itself, the eye)
    return {"input_ids": ids, "token_type_ids": segments, "attention_mask": pattern, "position_ids": positions, "labels": labels}


def evaluation_collator(pad_id: int, lm: nn.Module, tokenizer):
    """Rows -> teacher-forcing batches (:func:`teacher_forcing_batch`): the dev loss of what decoding predicts."""
    mask_id = tokenizer.mask_id
    return lambda rows: teacher_forcing_batch(rows, pad_id, mask_id)


# -- the model ------------------------------------------------------------------------------------


class Seq2SeqModel(seq2seq.Seq2SeqModel):
    """An encoder with its masked-LM head as finetuning trains it: the pretrained model whole, no head added, saved
    under its pretraining names (``seq2seq.Seq2SeqModel``'s saving and loading).

    ``forward`` takes a packed batch (a ``[B, T]`` ``attention_mask``: the seq2seq pattern is built here) or a
    teacher-forcing one (a ``[B, T, T]`` pattern and ``position_ids``) and returns ``loss_sum`` (label-smoothed
    while training), ``count`` and ``correct`` over the labelled tokens; under ``torch.no_grad()`` also ``nll_sum``.
    """

    def __init__(self, arch: str, lm: nn.Module, label_smoothing: float = 0.0, where: str = "--checkpoint") -> None:
        nn.Module.__init__(self)  # not the encoder-decoder's checks
        from ptmcli.models.registry import get_family

        family = get_family(arch)
        if not family.prefix_lm:
            raise PtmError(f"{where}: a {arch} model cannot be finetuned as UniLM's seq2seq LM")
        if not 0.0 <= label_smoothing < 1.0:
            raise PtmError(f"--label-smoothing {label_smoothing}: must be in [0, 1)")
        self.arch, self.family, self.lm, self.label_smoothing = arch, family, lm, float(label_smoothing)

    def decoder(self, mask_id: int | None) -> PrefixLM:
        """The model as ``generation.decode`` drives it."""
        return PrefixLM(self.lm, self.family, mask_id)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from ptmcli.models.bert import masked_lm_terms

        attention = batch["attention_mask"]
        if attention.dim() == 2:
            attention = seq2seq_pattern(batch["token_type_ids"], attention)
        hidden = hidden_states(self.family.encoder(self.lm), batch["input_ids"], batch["token_type_ids"], attention,
                               batch.get("position_ids"))
        head, labels = self.family.masked_lm_head(self.lm), batch["labels"]
        if self.label_smoothing and torch.is_grad_enabled():
            keep = labels != IGNORE_INDEX
            logits = head(hidden[keep])
            targets = labels[keep]
            return {"loss_sum": smoothed_loss_sum(logits, targets, self.label_smoothing), "count": keep.sum(),
                    "correct": (logits.detach().argmax(-1) == targets).sum()}
        # The head runs on the labelled rows only; while training, fused with the loss (no [M, vocab] logits kept).
        out = masked_lm_terms(head, hidden, labels)
        result = {"loss_sum": out["mlm_loss_sum"], "count": out["mlm_count"], "correct": out["mlm_correct"]}
        if not torch.is_grad_enabled():
            result["nll_sum"] = out["mlm_loss_sum"]
        return result


# -- evaluation -------------------------------------------------------------------------------------


def evaluate_rows(model: Seq2SeqModel, rows: Seq2SeqRows, tokenizer, settings, batch_of, *, batch_size: int,
                  device: torch.device, precision: str, metrics: Sequence[str] = ("bleu", "chrf")) -> tuple[dict, list[str]]:
    """(dev loss, token accuracy, perplexity and the generated outputs' metrics; the outputs), as
    ``seq2seq.evaluate_rows``; ``batch_of`` is :func:`evaluation_collator`'s."""
    import math

    loss, accuracy = teacher_forced_loss(model, rows, batch_of, batch_size=batch_size, device=device, precision=precision)
    hypotheses = generate_texts(model.decoder(tokenizer.mask_id), rows, tokenizer, settings, batch_size=batch_size,
                                device=device, precision=precision)
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "token_accuracy": accuracy}
    result.update(score_outputs(hypotheses, [pair.target for pair in rows.pairs], metrics))
    result["examples"] = len(rows)
    return result, hypotheses
