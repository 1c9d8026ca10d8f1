"""Sequence-to-sequence finetuning and evaluation: text pairs -> framed rows -> teacher-forced loss;
generated outputs -> BLEU, chrF (sacrebleu) and ROUGE (rouge-score).

Any family with ``is_encoder_decoder`` serves: its model takes a two-sequence
batch (``ptmcli.data.seq2seq``) and decodes through ``incremental_decoder``
(``ptmcli.models.generation``). No head is added: the model's own decoder and
output projection are trained, and a finetuned checkpoint holds only the
model's weights under their pretraining names, so ``ptm generate`` and
``ptm convert`` read it as they read the pretrained one. An encoder with a masked-LM head
(``Family.prefix_lm``, BERT) is finetuned as UniLM's seq2seq LM instead: :func:`style` chooses
``unilm_seq2seq``, which answers the same calls.

Both sides are framed as the family frames a text (BART: ``<s> text </s>``),
the way denoising pretraining framed its sources and targets, and cut to
``--max-source-len`` / ``--max-target-len`` tokens, framing included, keeping
the end token. The decoder reads the target shifted right behind the model's
decoder-start token.

The training loss is the summed token cross-entropy of the targets, with label
smoothing ``eps`` spreading that share of each target's probability evenly over
the vocabulary: ``(1 - eps) * nll + eps * mean_v(-log p_v)``, torch's
``cross_entropy(label_smoothing=eps)``. The dev loss is the plain
cross-entropy, so runs with and without smoothing compare.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.tasks import SEQ2SEQ
from ptmcli.tasks.seq2seq_data import TextPair

IGNORE_INDEX = -100
METRICS = ("bleu", "chrf", "rouge")
"""What ``ptm eval --metrics`` may ask for: BLEU and chrF always come; ROUGE needs rouge-score."""
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
TARGET_MASK_PROB = 0.7
"""``--target-mask-prob``'s default (UniLM's recipe, ``unilm_seq2seq``)."""


def _one_vocabulary(family) -> bool:
    """Whether the family's targets are ids of the same tokenizer as its sources (CoVe's have their own)."""
    return "target_vocab_size" not in getattr(family.config_class, "__dataclass_fields__", {})


def check_encoder_decoder(family, arch: str, where: str) -> None:
    """Refuse a family that has no decoder to finetune, or whose targets another tokenizer writes."""
    if family.is_encoder_decoder and _one_vocabulary(family):
        return
    from ptmcli.models.registry import FAMILIES

    able = ", ".join(sorted(name for name, f in FAMILIES.items() if f.is_encoder_decoder and _one_vocabulary(f)))
    if family.is_encoder_decoder:
        raise PtmError(f"{where}: a {arch} model decodes into a target vocabulary of its own, which the checkpoint's tokenizer "
                       f"does not write; --task seq2seq needs one vocabulary for both sides ({able})")
    prefix = ", ".join(sorted(name for name, f in FAMILIES.items() if f.prefix_lm))
    raise PtmError(f"{where}: a {arch} model is encoder-only; --task seq2seq needs an encoder-decoder checkpoint ({able}) "
                   f"or an encoder with a masked-LM head to finetune as UniLM's seq2seq LM ({prefix})")


def style(family, arch: str, where: str):
    """The module that finetunes ``family`` for ``--task seq2seq``: this one for an encoder-decoder (its own
    decoder trains), ``unilm_seq2seq`` for a prefix LM (``Family.prefix_lm``: an encoder with a masked-LM head,
    as UniLM). Both answer ``check_checkpoint``, ``encode_pairs``, ``describe_cuts``, ``Seq2SeqModel``,
    ``training_collator``, ``evaluation_collator``, ``generation_settings`` and ``evaluate_rows``."""
    if family.prefix_lm:
        from ptmcli.finetuning import unilm_seq2seq

        return unilm_seq2seq
    check_encoder_decoder(family, arch, where)
    return sys.modules[__name__]


def check_checkpoint(loaded, cfg, where: str) -> None:
    """Refuse the flags of UniLM's recipe (each side's length is checked against the positions by the caller)."""
    if cfg.target_mask_prob != TARGET_MASK_PROB:
        raise PtmError(f"--target-mask-prob applies to an encoder finetuned as UniLM's seq2seq LM, not to a {loaded.arch} model")


# -- rows -----------------------------------------------------------------------------------------


@dataclass
class Seq2SeqRows:
    """Framed token ids of each pair, in input order: ``rows[i]`` is ``{"source", "target", "line"}``
    (``target`` None without targets); ``cut_sources`` / ``cut_targets`` count the rows cut to fit."""

    rows: list[dict]
    pairs: list[TextPair]
    pad_id: int
    cut_sources: int = 0
    cut_targets: int = 0
    first_cut: tuple[int, str] | None = None
    """The first cut row's line and what was cut (``(12, "target")``), for ``--errors strict``'s refusal."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    @property
    def labels(self) -> list[str]:
        return []


def _room(special_tokens: int, limit: int, flag: str) -> int:
    room = limit - special_tokens
    if room < 1:
        raise PtmError(f"{flag} {limit}: leaves no room for a token between the model's start and end tokens")
    return room


def encode_pairs(pairs: Sequence[TextPair], tokenizer, framing, max_source_len: int, max_target_len: int,
                 target_prefix: bool = True) -> Seq2SeqRows:
    """Each pair's source and target framed and cut to their limits (framing included); ``target_prefix=False``
    frames the target with the end tokens alone (UniLM, whose target continues the source's sequence)."""
    prefix, suffix = list(framing.prefix), list(framing.suffix)
    source_room = _room(len(prefix) + len(suffix), max_source_len, "--max-source-len")
    target_start = prefix if target_prefix else []
    target_room = _room(len(target_start) + len(suffix), max_target_len, "--max-target-len")
    sources = tokenizer.encode_batch([p.source for p in pairs])
    has_targets = all(p.target is not None for p in pairs)
    targets = tokenizer.encode_batch([p.target for p in pairs]) if has_targets else [None] * len(pairs)
    rows, cut_sources, cut_targets = [], 0, 0
    for pair, source, target in zip(pairs, sources, targets, strict=True):
        cut_sources += len(source) > source_room
        row = {"source": np.asarray(prefix + source[:source_room] + suffix, dtype=np.int64), "target": None, "line": pair.line}
        if target is not None:
            cut_targets += len(target) > target_room
            row["target"] = np.asarray(target_start + target[:target_room] + suffix, dtype=np.int64)
        rows.append(row)
    return Seq2SeqRows(rows, list(pairs), framing.pad_id, cut_sources, cut_targets,
                       first_cut(pairs, sources, targets, source_room, target_room))


def first_cut(pairs, sources, targets, source_room: int, target_room: int) -> tuple[int, str] | None:
    """(line, ``"source"`` or ``"target"``) of the first pair cut to fit, else None."""
    for pair, source, target in zip(pairs, sources, targets, strict=True):
        if len(source) > source_room:
            return pair.line, "source"
        if target is not None and len(target) > target_room:
            return pair.line, "target"
    return None


def describe_cuts(rows: Seq2SeqRows, name: str, max_source_len: int, max_target_len: int) -> str | None:
    """One line saying how many rows of ``name`` were cut, or None when none was."""
    parts = []
    if rows.cut_sources:
        parts.append(f"{rows.cut_sources:,} sources cut to --max-source-len {max_source_len}")
    if rows.cut_targets:
        parts.append(f"{rows.cut_targets:,} targets cut to --max-target-len {max_target_len}")
    if not parts:
        return None
    return f"ptm: {name}: {' and '.join(parts)} tokens (of {len(rows):,} pairs)"


def pair_collator(pad_id: int, decoder_start_id: int):
    """Rows -> a ``data.seq2seq`` batch (the rows are framed and cut already)."""
    from ptmcli.data.seq2seq import Seq2SeqCollator

    collate = Seq2SeqCollator(pad_id=pad_id, decoder_start_id=decoder_start_id)

    def batch_of(rows: list[dict]) -> dict[str, torch.Tensor]:
        return dict(collate([(row["source"], row["target"]) for row in rows]))

    return batch_of


def training_collator(pad_id: int, lm: nn.Module, tokenizer, cfg):
    """Rows -> training batches: the source for the encoder, the target shifted right for the decoder."""
    return pair_collator(pad_id, decoder_start_id(lm))


def evaluation_collator(pad_id: int, lm: nn.Module, tokenizer):
    """Rows -> dev batches (teacher forcing, as in training)."""
    return pair_collator(pad_id, decoder_start_id(lm))


def decoder_start_id(model: nn.Module) -> int:
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise PtmError("the checkpoint's model config has no decoder_start_token_id")
    return int(start)


# -- the model ------------------------------------------------------------------------------------


def smoothed_loss_sum(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over the labels that are not -100:
    ``(1 - eps) * (-log p_label) + eps * mean over the vocabulary of (-log p_v)``."""
    logp = logits.float().log_softmax(-1)
    keep = labels != IGNORE_INDEX
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if smoothing:
        nll = (1.0 - smoothing) * nll - smoothing * logp.mean(-1)
    return nll.masked_fill(~keep, 0.0).sum()


class Seq2SeqModel(nn.Module):
    """An encoder-decoder as finetuning trains it: the pretrained model whole, no head added.

    ``forward`` returns ``loss_sum`` (label-smoothed while training), ``count`` and ``correct`` over the
    target tokens; under ``torch.no_grad()`` also ``nll_sum`` (the plain cross-entropy) and ``logits``.
    """

    task_type = SEQ2SEQ
    mode = "finetune"
    frozen_lm = False
    pool = None

    def __init__(self, arch: str, lm: nn.Module, label_smoothing: float = 0.0, where: str = "--checkpoint") -> None:
        super().__init__()
        from ptmcli.models.registry import get_family

        family = get_family(arch)
        check_encoder_decoder(family, arch, where)
        if not 0.0 <= label_smoothing < 1.0:
            raise PtmError(f"--label-smoothing {label_smoothing}: must be in [0, 1)")
        self.arch, self.family, self.lm, self.label_smoothing = arch, family, lm, float(label_smoothing)

    @property
    def bottom_prefixes(self) -> tuple[str, ...]:
        return tuple("lm." + prefix for prefix in self.family.bottom_prefixes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch.get("labels")
        inputs = (batch["input_ids"], batch["attention_mask"])
        if labels is not None and torch.is_grad_enabled() and not self.label_smoothing:
            # The model's own fused loss never materialises the [B, T, vocab] logits.
            out = self.lm(*inputs, decoder_input_ids=batch["decoder_input_ids"], labels=labels)
            return {"loss_sum": out["lm_loss_sum"], "count": out["lm_count"], "correct": out["lm_correct"]}
        out = self.lm(*inputs, decoder_input_ids=batch["decoder_input_ids"])
        if "logits" not in out:
            raise PtmError(f"a {self.arch} model gave no logits for its targets")
        logits = out["logits"]
        result = {"logits": logits}
        if labels is None:
            return result
        keep = labels != IGNORE_INDEX
        result["loss_sum"] = smoothed_loss_sum(logits, labels, self.label_smoothing)
        result["count"] = keep.sum()
        result["correct"] = ((logits.detach().argmax(-1) == labels) & keep).sum()
        if not torch.is_grad_enabled():
            result["nll_sum"] = result["loss_sum"] if not self.label_smoothing else smoothed_loss_sum(logits, labels, 0.0)
        return result

    def aux_lm_loss(self, batch, generator=None):
        raise PtmError("--aux-lm-weight does not apply to --task seq2seq (its loss is the language model's own)")

    def tied_weights(self) -> dict[str, str]:
        return {"lm." + k: "lm." + v for k, v in self.lm.tied_weights().items()}

    def tie_weights(self) -> None:
        self.lm.tie_weights()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The model's tensors under their pretraining names (the tied copies left out)."""
        from ptmcli.checkpoint import state_dict_for_saving

        return state_dict_for_saving(self.lm, self.lm.tied_weights())

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        expected = {k: v for k, v in self.lm.state_dict().items() if k not in self.lm.tied_weights()}
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
            raise PtmError(f"{source}: weights do not fit the {self.arch} model ({what})")
        for key, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise PtmError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}")
        self.lm.load_state_dict(state, strict=False)
        self.lm.tie_weights()


# -- generation and metrics -----------------------------------------------------------------------


def generation_settings(model: nn.Module, tokenizer, framing, max_target_len: int, num_beams: int):
    """Greedy (``num_beams`` 1) or beam search, up to the target length the model was finetuned with."""
    from ptmcli.models.framing import first_token
    from ptmcli.models.generation import Settings

    end = first_token(tokenizer, "eos", "sep")
    positions = getattr(model.config, "max_position_embeddings", None)
    longest = max_target_len if positions is None else min(max_target_len, positions - 1)
    return Settings(max_new_tokens=max(1, longest), num_beams=num_beams, stop_ids=() if end is None else (end,),
                    forced_bos_id=getattr(model.config, "forced_bos_token_id", None), pad_id=framing.pad_id)


def _order(rows: Seq2SeqRows) -> list[int]:
    return sorted(range(len(rows)), key=lambda i: len(rows[i]["source"]))


def generate_texts(lm: nn.Module, rows: Seq2SeqRows, tokenizer, settings, *, batch_size: int, device: torch.device,
                   precision: str) -> list[str]:
    """The decoded output of every row's source, in row order (batched by source length, for speed)."""
    from ptmcli.models.generation import decode
    from ptmcli.runtime.device import autocast

    out: list[str] = [""] * len(rows)
    order = _order(rows)
    was_training = lm.training
    lm.eval()
    try:
        for begin in range(0, len(order), batch_size):
            picked = order[begin : begin + batch_size]
            with autocast(precision, device):
                results = decode(lm, [rows[i]["source"].tolist() for i in picked], settings)
            for i, (best, *_) in zip(picked, results, strict=True):
                out[i] = tokenizer.decode(best.ids).strip()
    finally:
        lm.train(was_training)
    return out


def teacher_forced_loss(model: Seq2SeqModel, rows: Seq2SeqRows, batch_of, *, batch_size: int, device: torch.device,
                        precision: str) -> tuple[float, float]:
    """(mean plain cross-entropy per target token, token accuracy) of the rows' targets."""
    from ptmcli.runtime.device import autocast

    nll = count = correct = 0.0
    order = _order(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(order), batch_size):
                batch = batch_of([rows[i] for i in order[begin : begin + batch_size]])
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(precision, device):
                    out = model(batch)
                nll += float(out["nll_sum"])
                count += float(out["count"])
                correct += float(out["correct"])
    finally:
        model.train(was_training)
    return nll / max(count, 1.0), correct / max(count, 1.0)


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """sacrebleu's corpus BLEU (13a tokenisation) and chrF, 0-100, with their signatures."""
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise PtmError("BLEU needs sacrebleu: pip install sacrebleu") from None
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": float(bleu.corpus_score(hypotheses, [references]).score),
            "chrf": float(chrf.corpus_score(hypotheses, [references]).score),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def rouge(hypotheses: list[str], references: list[str]) -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (rouge-score, Porter stemming), 0-100."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise PtmError("ROUGE needs the rouge-score package: pip install rouge-score (or pip install 'ptm[rouge]')") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / max(len(hypotheses), 1) for name, total in totals.items()}


def parse_metrics(value: str | None) -> tuple[str, ...]:
    """``--metrics`` as a tuple (BLEU and chrF always included)."""
    asked = [m.strip().lower() for m in (value or "").split(",") if m.strip()]
    for name in asked:
        if name not in METRICS:
            raise PtmError(f"--metrics {name!r}: choose among {', '.join(METRICS)}")
    return tuple(dict.fromkeys(["bleu", "chrf", *asked]))


def score_outputs(hypotheses: list[str], references: list[str], metrics: Sequence[str] = ("bleu", "chrf")) -> dict:
    """The metrics of ``hypotheses`` against ``references`` (signatures included)."""
    result = bleu_chrf(hypotheses, references)
    if "rouge" in metrics:
        result.update(rouge(hypotheses, references))
    return result


def evaluate_rows(model: Seq2SeqModel, rows: Seq2SeqRows, tokenizer, settings, batch_of, *, batch_size: int,
                  device: torch.device, precision: str, metrics: Sequence[str] = ("bleu", "chrf")) -> tuple[dict, list[str]]:
    """(dev loss, token accuracy, perplexity and the generated outputs' metrics; the outputs)."""
    loss, accuracy = teacher_forced_loss(model, rows, batch_of, batch_size=batch_size, device=device, precision=precision)
    hypotheses = generate_texts(model.lm, rows, tokenizer, settings, batch_size=batch_size, device=device, precision=precision)
    references = [pair.target for pair in rows.pairs]
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "token_accuracy": accuracy}
    result.update(score_outputs(hypotheses, references, metrics))
    result["examples"] = len(rows)
    return result, hypotheses


def escape(text: str) -> str:
    """One line whatever the output holds (as ``ptm generate`` writes it)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def announce_cuts(rows: Seq2SeqRows, name: str, max_source_len: int, max_target_len: int) -> None:
    line = describe_cuts(rows, name, max_source_len, max_target_len)
    if line:
        print(line, file=sys.stderr)
