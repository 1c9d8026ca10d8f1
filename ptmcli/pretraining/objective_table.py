"""The pretraining objectives, one row each: what ``--objective`` can name and what each needs.

Each row says which families the objective trains, where its training task is
built (``module:function``, imported only when a run uses it, so ``--help``
stays fast), the special tokens it needs beyond the family's own, the share of
tokens it predicts (for the FLOPs and MFU figures), the metrics it logs, and
whether DDP must look for parameters a step leaves unused. ``--arch`` and
``--objective`` choices, defaults and help text are read from here. Adding an
objective is one new file with its builder and one row (docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ptmcli.errors import PtmError


@dataclass(frozen=True)
class Objective:
    families: tuple[str, ...]
    """Families it trains; the first objective listed for a family is that family's default."""
    builder: str | Callable[..., Any]
    """``"module:function"`` (or the function) taking a :class:`~ptmcli.pretraining.objective_context.ObjectiveContext`
    and returning the training task."""
    summary: str
    """What it is, for ``--help``."""
    special_tokens: tuple[str, ...] = ()
    """Tokenizer roles (``"mask"``, ``"sep"``...) it needs beyond what the family checks."""
    predicted_fraction: Callable[[Any], float] = lambda cfg: 1.0
    """Share of the tokens whose prediction costs the vocabulary projection, from the run config."""
    metrics: tuple[str, ...] = ("loss",)
    """Logged metrics the end-of-run summary reports."""
    find_unused_parameters: bool = False
    """Whether a step can leave parameters without gradients (BERT's pooler under MLM alone)."""
    prepare_model: str | Callable[..., Any] | None = None
    """``"module:function"`` (or the function) taking the fresh pretraining model and the run config, called
    before weights are loaded: it attaches the heads the objective adds (``models/attached_heads.py``)."""
    extra_heads: dict[str, str] = field(default_factory=dict)
    """The parts ``prepare_model`` adds, by state-dict prefix (``{"sbo": "sbo."}``): checkpoints record them,
    so finetuning and features know to skip them."""

    def build(self, context: Any) -> Any:
        return _resolve(self.builder)(context)

    def prepare(self, model: Any, config: Any) -> None:
        if self.prepare_model is not None:
            _resolve(self.prepare_model)(model, config)


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if isinstance(target, str):
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    return target


OBJECTIVES: dict[str, Objective] = {
    "mlm+nsp": Objective(
        ("bert",), "ptmcli.pretraining.masked_lm:build", "masked LM + next sentence prediction, as BERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "nsp_acc"),
    ),
    "mlm+sop": Objective(
        ("albert",), "ptmcli.pretraining.sentence_order:build", "masked LM + sentence-order prediction, as ALBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "sop_acc"),
    ),
    "mlm": Objective(
        ("bert", "roberta", "distilbert", "albert"), "ptmcli.pretraining.masked_lm:build", "masked LM on full-sentence packed blocks, no NSP (RoBERTa)",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc"), find_unused_parameters=True,
    ),
    "clm": Objective(("gpt",), "ptmcli.pretraining.causal_lm:build", "next-token prediction", metrics=("loss", "lm_ppl")),
    "bilm": Objective(("elmo",), "ptmcli.pretraining.bidirectional_lm:build", "forward + backward LM, as ELMo",
                      metrics=("loss", "fwd_ppl", "bwd_ppl")),
    "rtd": Objective(
        ("electra",), "ptmcli.pretraining.replaced_token_detection:build",
        "replaced-token detection: a small MLM generator fills masked tokens, the discriminator spots them (ELECTRA)",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: 1.0,
        metrics=("loss", "mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "replaced_fraction"), find_unused_parameters=True,
    ),
    "span": Objective(
        ("bert", "albert"), "ptmcli.pretraining.span_lm:build_span", "masked LM on spans of whole words, as SpanBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc"), find_unused_parameters=True,
    ),
    "span+sbo": Objective(
        ("bert", "albert"), "ptmcli.pretraining.span_lm:build_span_boundary", "span masking + span boundary objective, as SpanBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: 2 * cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "sbo_loss", "sbo_acc"), find_unused_parameters=True,
        prepare_model="ptmcli.pretraining.span_lm:attach_span_boundary", extra_heads={"sbo": "sbo."},
    ),
}


def families() -> tuple[str, ...]:
    """Every family some objective trains, in table order."""
    return tuple(dict.fromkeys(f for row in OBJECTIVES.values() for f in row.families))


def objectives_for(family: str) -> tuple[str, ...]:
    return tuple(name for name, row in OBJECTIVES.items() if family in row.families)


def default_objective(family: str) -> str:
    found = objectives_for(family)
    if not found:
        raise PtmError(f"--arch {family!r}: no objective pretrains it (choose from {', '.join(families())})")
    return found[0]


def get_objective(name: str, family: str) -> Objective:
    """The row of ``--objective name`` for ``--arch family``, or a PtmError listing the choices."""
    if name not in OBJECTIVES or family not in OBJECTIVES[name].families:
        raise PtmError(f"--objective {name!r} is not available for --arch {family} (choose from {', '.join(objectives_for(family))})")
    return OBJECTIVES[name]


def help_text() -> str:
    rows = "; ".join(f"{name} ({row.summary}) for {', '.join(row.families)}" for name, row in OBJECTIVES.items())
    return f"Pretraining objective: {rows} [default: the first listed for --arch]."
