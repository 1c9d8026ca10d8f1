"""Language-model evaluation of a pretrained checkpoint on raw text: picks the scorer for its family.

GPT: perplexity over a sliding window (``causal``); XLNet: the same in its
left-to-right factorisation order (``permutation``); BERT: MLM loss/accuracy
and pseudo-perplexity (``masked``); ELMo: forward, backward and average
perplexity (``bidirectional``); the NNLM: perplexity over each sentence's
vocabulary words (``feedforward``). Every family reports the same headline keys
(``tokens_scored``, ``words``, ``loss``, ``ppl``, ``word_ppl``, ``seconds``,
``tokens_per_s``) so results line up across models.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ptmcli.errors import PtmError
from ptmcli.evaluation.config import EvalConfig
from ptmcli.evaluation.corpus import CorpusStats, iter_sentences, read_documents
from ptmcli.evaluation.progress import Progress
from ptmcli.evaluation.results import nll_summary
from ptmcli.evaluation.sequences import pack_blocks

# Sequence length of an ELMo checkpoint that records none (an LSTM has no position limit).
_ELMO_DEFAULT_CONTEXT = 256


def model_positions(loaded) -> int | None:
    """How many positions the model can take at all (None: no limit, as for an LSTM)."""
    return getattr(loaded.model_config, "max_position_embeddings", None)


def resolve_context(loaded, requested: int | None) -> int:
    """``--context``, else the sequence length the checkpoint was trained with, else its positions."""
    positions = model_positions(loaded)
    minimum = loaded.family.min_context
    if requested is not None:
        if requested < minimum:
            raise PtmError(f"--context {requested}: must be at least {minimum} for a {loaded.arch} model")
        if positions is not None and requested > positions:
            raise PtmError(f"--context {requested}: the model has only {positions} positions")
        return requested
    trained = (loaded.config.get("training") or {}).get("seq_len")
    if isinstance(trained, int) and trained >= minimum:
        return min(trained, positions) if positions is not None else trained
    return positions if positions is not None else _ELMO_DEFAULT_CONTEXT


def resolve_stride(context: int, requested: int | None) -> int:
    if requested is None:
        return max(1, context // 2)
    if requested < 1:
        raise PtmError(f"--stride {requested}: must be positive")
    if requested > context:
        raise PtmError(f"--stride {requested} is larger than --context {context}: tokens between windows would never be scored")
    return requested


def _required(value: int | None, what: str) -> int:
    if value is None:
        raise PtmError(f"the checkpoint's tokenizer has no {what} token, which this evaluation needs")
    return value


def evaluate_language_model(loaded, cfg: EvalConfig, device: torch.device) -> dict[str, Any]:
    """Score ``cfg.data`` with the checkpoint; the metrics as one flat dict (see the module docstring)."""
    from ptmcli.textio.inputs import expand_inputs, total_input_bytes

    arch = loaded.arch
    scorer = _SCORERS.get(loaded.family.scorer)
    if scorer is None:
        others = loaded.family.parts[1:]
        hint = (f"; --part {others[0]} scores text with its {others[0]}" if others else
                "; it evaluates one finetuned by `ptm finetune` on labeled data, and `ptm extract-features` reads this one")
        raise PtmError(f"`ptm eval` cannot score {arch} checkpoints on text yet{hint}")
    context = resolve_context(loaded, cfg.context)
    if cfg.stride is not None and loaded.family.scorer not in _WINDOWED:
        raise PtmError("--stride applies to LMs scored over sliding windows (GPT, XLNet); "
                       f"a {arch} checkpoint scores sequences of --context tokens")
    if cfg.batch_size < 1:
        raise PtmError(f"--batch-size {cfg.batch_size}: must be positive")

    stats = CorpusStats()
    documents = read_documents(cfg.data, cfg.format, cfg.text_field, stats.read, cfg.errors)
    sentences = iter_sentences(documents, loaded.tokenizer, split=cfg.split_sentences, max_tokens=cfg.max_tokens, stats=stats)
    total_bytes = total_input_bytes(expand_inputs([cfg.data])) if cfg.data != "-" else None
    progress = Progress(cfg.progress, total_bytes, cfg.max_tokens)

    def show(nll_sum: float, count: int) -> None:
        progress.update(stats.read.bytes_read, stats.tokens, nll_sum / count if count else None)

    started = time.perf_counter()
    try:
        run = _Run(loaded, cfg, device, context, stats, show)
        name, scored, headline, extra = scorer(run, sentences)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    if stats.tokens == 0:
        raise PtmError(f"{cfg.data}: no tokens to score (the text encodes to nothing the model can predict)")
    return {
        "checkpoint": str(loaded.path), "arch": arch, "data": cfg.data, "metric": name,
        "documents": stats.documents, "words": stats.words, "text_tokens": stats.tokens, "tokens_scored": scored,
        **headline, **extra, "truncated": stats.truncated,
        **({"skipped_lines": stats.read.skipped_lines} if stats.read.skipped_lines else {}),
        **({"replaced_lines": stats.read.replaced_lines} if stats.read.replaced_lines else {}),
        "precision": cfg.precision, "device": str(device),
        "seconds": round(seconds, 3), "tokens_per_s": round(scored / seconds, 1) if seconds > 0 else None,
    }


class _Run:
    """What every scorer needs: the checkpoint, the flags, where to run, the stats and progress of the read."""

    def __init__(self, loaded, cfg: EvalConfig, device: torch.device, context: int, stats: CorpusStats, show) -> None:
        self.loaded, self.cfg, self.device, self.context, self.stats, self.show = loaded, cfg, device, context, stats, show
        self.common = {"batch_size": cfg.batch_size, "device": device, "precision": cfg.precision}


def _causal(run: _Run, sentences) -> tuple[str, int, dict, dict]:
    from ptmcli.evaluation.causal import score_causal

    tokenizer, stats = run.loaded.tokenizer, run.stats
    stride = resolve_stride(run.context, run.cfg.stride)
    end_id = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.sep_id
    sums = score_causal(run.loaded.model, sentences, stats, end_id=end_id, context=run.context, stride=stride,
                        on_batch=lambda s: run.show(s["nll_sum"], s["tokens_scored"]), **run.common)
    scored = sums["tokens_scored"]
    extra = {"accuracy": sums["correct"] / scored if scored else None, "windows": sums["windows"],
             "context": run.context, "stride": stride}
    return "perplexity (causal LM, sliding window)", scored, nll_summary("", sums["nll_sum"], scored, stats.words), extra


def _permutation(run: _Run, sentences) -> tuple[str, int, dict, dict]:
    from ptmcli.evaluation.permutation import score_permutation

    tokenizer, stats = run.loaded.tokenizer, run.stats
    stride = resolve_stride(run.context, run.cfg.stride)
    end_id = next((i for i in (tokenizer.eos_id, tokenizer.sep_id) if i is not None), None)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    sums = score_permutation(run.loaded.model, sentences, stats, end_id=end_id, pad_id=pad_id, context=run.context,
                             stride=stride, on_batch=lambda s: run.show(s["nll_sum"], s["tokens_scored"]), **run.common)
    scored = sums["tokens_scored"]
    extra = {"accuracy": sums["correct"] / scored if scored else None, "windows": sums["windows"],
             "context": run.context, "stride": stride}
    return ("perplexity (permutation LM in left-to-right order, sliding window)", scored,
            nll_summary("", sums["nll_sum"], scored, stats.words), extra)


def _masked(run: _Run, sentences) -> tuple[str, int, dict, dict]:
    from ptmcli.evaluation.masked import MaskedSpecials, score_masked

    tokenizer, cfg, stats = run.loaded.tokenizer, run.cfg, run.stats
    specials = MaskedSpecials(
        _required(tokenizer.cls_id, "[CLS]"), _required(tokenizer.sep_id, "[SEP]"),
        tokenizer.pad_id if tokenizer.pad_id is not None else 0, _required(tokenizer.mask_id, "[MASK]"),
        run.loaded.model_config.vocab_size, tuple(tokenizer.all_special_ids),
    )
    blocks = pack_blocks(sentences, run.context - 2, cfg.sequences, specials.sep_id)
    pseudo = cfg.pseudo_perplexity
    prefix = "pll" if pseudo else "mlm"
    sums = score_masked(run.loaded.model, run.loaded.family, blocks, specials, seq_len=run.context, seed=cfg.seed, pseudo=pseudo,
                        on_batch=lambda s: run.show(s[f"{prefix}_nll_sum"], s[f"{prefix}_tokens"]), **run.common)
    mlm = nll_summary("mlm_", sums["mlm_nll_sum"], sums["mlm_tokens"], 0)
    extra = {"mlm_tokens": sums["mlm_tokens"], "mlm_loss": mlm["mlm_loss"], "mlm_ppl": mlm["mlm_ppl"],
             "mlm_accuracy": sums["mlm_correct"] / sums["mlm_tokens"] if sums["mlm_tokens"] else None,
             "sequences": sums["sequences"], "context": run.context, "sequence_mode": cfg.sequences, "mask_seed": cfg.seed}
    if not pseudo:
        return "MLM loss and accuracy", sums["mlm_tokens"], {"loss": None, "ppl": None, "word_ppl": None}, extra
    scored = sums["pll_tokens"]
    extra["pseudo_accuracy"] = sums["pll_correct"] / scored if scored else None
    headline = nll_summary("", sums["pll_nll_sum"], scored, stats.words)
    return "pseudo-perplexity (each token masked in turn) and MLM", scored, headline, extra


def _bidirectional(run: _Run, sentences) -> tuple[str, int, dict, dict]:
    from ptmcli.evaluation.bidirectional import has_scoring, score_bidirectional
    from ptmcli.models.elmo import sentence_boundary_ids

    tokenizer, stats = run.loaded.tokenizer, run.stats
    if not has_scoring(run.loaded.model):
        raise PtmError("this ELMo model cannot score text (it has no score method)")
    begin_id, end_id = sentence_boundary_ids(tokenizer)
    blocks = pack_blocks(sentences, run.context - 2, run.cfg.sequences, end_id)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    sums = score_bidirectional(run.loaded.model, blocks, begin_id=begin_id, end_id=end_id, pad_id=pad_id,
                               on_batch=lambda s: run.show((s["fwd_nll_sum"] + s["bwd_nll_sum"]) / 2, s["tokens_scored"]),
                               **run.common)
    scored = sums["tokens_scored"]
    headline = nll_summary("", (sums["fwd_nll_sum"] + sums["bwd_nll_sum"]) / 2, scored, stats.words)
    extra = {**nll_summary("fwd_", sums["fwd_nll_sum"], scored, stats.words),
             **nll_summary("bwd_", sums["bwd_nll_sum"], scored, stats.words),
             "sequences": sums["sequences"], "context": run.context, "sequence_mode": run.cfg.sequences}
    return "perplexity (bidirectional LM: forward, backward, average)", scored, headline, extra


def _feedforward(run: _Run, sentences) -> tuple[str, int, dict, dict]:
    from ptmcli.evaluation.feedforward import score_feedforward

    config, stats = run.loaded.model_config, run.stats
    if run.cfg.context is not None:
        raise PtmError(f"--context: this {run.loaded.arch} model reads exactly the {config.context} words before each "
                       "word (its n - 1)")
    if run.cfg.precision != "fp32":
        raise PtmError(f"--precision {run.cfg.precision}: a {run.loaded.arch} model scores in fp32")
    nll, scored = score_feedforward(run.loaded.model, sentences, run.loaded.tokenizer.all_special_ids,
                                    batch_size=run.cfg.batch_size, device=run.device, on_batch=run.show)
    extra = {"context": config.context, "vocabulary_words": config.words}
    return "perplexity (feed-forward LM, each sentence alone)", scored, nll_summary("", nll, scored, stats.words), extra


# Each returns (what was measured, tokens scored, headline metrics, family-specific metrics).
# By the family's ``scorer``: how its kind of language model scores text.
_SCORERS = {"causal": _causal, "permutation": _permutation, "masked": _masked, "bidirectional": _bidirectional,
            "feedforward": _feedforward}
# Scorers that read the text through sliding windows, and so take --stride.
_WINDOWED = {"causal", "permutation"}
