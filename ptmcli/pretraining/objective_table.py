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

# --mask-unit and its lexicon flags: what the keyed MLM maskers mask as one unit (mask_units.py).
MASK_UNIT_SETTINGS = ("mask_unit", "mask_lexicon", "lexicon_mask_ratio")

# Run settings only some objectives read. A row lists those it reads (``settings``); a run that sets
# another away from its default (--ngram-mask with clm) is refused rather than trained as if unset.
MASKING_SETTINGS = ("mask_prob", "whole_word_mask", "ngram_mask", *MASK_UNIT_SETTINGS)
# BART's corruption rates (pretraining/denoising.py), read by --objective denoise alone.
DENOISE_SETTINGS = ("infill_ratio", "poisson_lambda", "mask_ratio", "delete_ratio", "permute_sentences", "rotate_ratio",
                    "mask_random")
# T5's span corruption (pretraining/span_corruption.py) and MASS's fragment (pretraining/mass.py).
SPAN_CORRUPTION_SETTINGS = ("noise_density", "mean_span_length")
MASS_SETTINGS = ("mass_ratio",)
OBJECTIVE_SETTINGS = (*MASKING_SETTINGS, "short_seq_prob", "disc_weight", "init_vectors", *DENOISE_SETTINGS,
                      *SPAN_CORRUPTION_SETTINGS, *MASS_SETTINGS)
# XLNet's K (pretraining/permutation_lm.py), read by --objective plm alone.
OBJECTIVE_SETTINGS = (*OBJECTIVE_SETTINGS, "plm_k")
# UniLM's shares of its attention regimes (pretraining/unified_lm.py), read by --objective unilm alone.
UNILM_SETTINGS = ("unilm_mix",)
OBJECTIVE_SETTINGS = (*OBJECTIVE_SETTINGS, *UNILM_SETTINGS)
# DistilBERT's teacher and loss weights (pretraining/distill_lm.py), read by --objective mlm-distill alone.
DISTILL_SETTINGS = ("teacher", "init_from_teacher", "distill_temperature", "alpha_ce", "alpha_mlm", "alpha_cos")
OBJECTIVE_SETTINGS = (*OBJECTIVE_SETTINGS, *DISTILL_SETTINGS)


@dataclass(frozen=True)
class Objective:
    families: tuple[str, ...]
    """Families it trains; the first objective listed for a family is that family's default, unless a row
    names the family in ``default_for``."""
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
    settings: tuple[str, ...] = ()
    """Of ``OBJECTIVE_SETTINGS``, the run settings its builder reads (``"ngram_mask"``...)."""
    shard_kind: str = "lm"
    """The shards it trains on: ``lm`` documents, or ``pairs`` (source/target, ``ptm tokenize encode --pairs``)."""
    model_settings: str | Callable[..., Any] | None = None
    """``"module:function"`` (or the function) taking the run config, the tokenizer and the training shards and
    returning model-config fields the data decides (a translation's target vocabulary), given to the family's
    ``model_config`` beside the preset."""
    default_for: tuple[str, ...] = ()
    """Families of ``families`` whose default this objective is wherever its row stands (T5: span corruption)."""
    own_loop: bool = False
    """The builder trains the whole run itself instead of returning a task for the shared loop: it takes the run
    config, the flags given and ``resolve_data(cfg) -> (shard dir, tokenizer dir)``, and returns the final metrics.
    For engines that are not batched gradient steps (static word vectors, ``pretraining/static_vectors.py``)."""

    def build(self, context: Any) -> Any:
        return _resolve(self.builder)(context)

    def run_alone(self, config: Any, explicit: set[str], resolve_data: Callable[[Any], tuple[str, str]]) -> dict:
        return _resolve(self.builder)(config, explicit, resolve_data)

    def settings_for(self, config: Any, tokenizer: Any, dataset: Any) -> dict:
        return {} if self.model_settings is None else _resolve(self.model_settings)(config, tokenizer, dataset)

    def prepare(self, model: Any, config: Any) -> None:
        if self.prepare_model is not None:
            _resolve(self.prepare_model)(model, config)


def check_settings(name: str, cfg: Any, defaults: dict[str, Any]) -> None:
    """A PtmError naming the first objective-specific setting ``cfg`` moves off its default that ``--objective
    name`` does not read; ``defaults`` are the settings' defaults by field name."""
    row = OBJECTIVES[name]
    for setting in OBJECTIVE_SETTINGS:
        value = getattr(cfg, setting, defaults.get(setting))
        if setting in row.settings or value == defaults.get(setting):
            continue
        flag = f"--{setting.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value}")
        users = ", ".join(other for other, r in OBJECTIVES.items() if setting in r.settings)
        why = "does not mask tokens" if "mask_prob" not in row.settings and setting in MASKING_SETTINGS else "does not use it"
        raise PtmError(f"{flag}: --objective {name} {why}; it applies to --objective {users}")


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if isinstance(target, str):
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    return target


_STATIC = "ptmcli.pretraining.static_vectors:train"

OBJECTIVES: dict[str, Objective] = {
    "mlm+nsp": Objective(
        ("bert",), "ptmcli.pretraining.masked_lm:build", "masked LM + next sentence prediction, as BERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "nsp_acc"),
        settings=(*MASKING_SETTINGS, "short_seq_prob"),
    ),
    "mlm+sop": Objective(
        ("albert",), "ptmcli.pretraining.sentence_order:build", "masked LM + sentence-order prediction, as ALBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "sop_acc"),
        settings=(*MASKING_SETTINGS, "short_seq_prob"),
    ),
    "mlm": Objective(
        ("bert", "roberta", "distilbert", "albert"), "ptmcli.pretraining.masked_lm:build", "masked LM on full-sentence packed blocks, no NSP (RoBERTa)",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc"), find_unused_parameters=True,
        settings=MASKING_SETTINGS,
    ),
    "mlm-distill": Objective(
        ("bert", "roberta", "distilbert"), "ptmcli.pretraining.distill_lm:build",
        "masked LM distilled from a pretrained --teacher: soft targets at the masked positions + the student's MLM "
        "+ cosine of the last hidden states, as DistilBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "ce_loss", "cos_loss"), find_unused_parameters=True,
        prepare_model="ptmcli.pretraining.distill_lm:prepare_student", settings=(*MASKING_SETTINGS, *DISTILL_SETTINGS),
    ),
    "clm": Objective(("gpt",), "ptmcli.pretraining.causal_lm:build", "next-token prediction", metrics=("loss", "lm_ppl")),
    "bilm": Objective(("elmo",), "ptmcli.pretraining.bidirectional_lm:build", "forward + backward LM, as ELMo",
                      metrics=("loss", "fwd_ppl", "bwd_ppl")),
    "rtd": Objective(
        ("electra",), "ptmcli.pretraining.replaced_token_detection:build",
        "replaced-token detection: a small MLM generator fills masked tokens, the discriminator spots them (ELECTRA)",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: 1.0,
        metrics=("loss", "mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "replaced_fraction"), find_unused_parameters=True,
        settings=("mask_prob", "whole_word_mask", *MASK_UNIT_SETTINGS, "disc_weight"),
    ),
    "span": Objective(
        ("bert", "albert"), "ptmcli.pretraining.span_lm:build_span", "masked LM on spans of whole words, as SpanBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc"), find_unused_parameters=True,
        settings=("mask_prob", "whole_word_mask"),
    ),
    "span+sbo": Objective(
        ("bert", "albert"), "ptmcli.pretraining.span_lm:build_span_boundary", "span masking + span boundary objective, as SpanBERT",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: 2 * cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc", "sbo_loss", "sbo_acc"), find_unused_parameters=True,
        prepare_model="ptmcli.pretraining.span_lm:attach_span_boundary", extra_heads={"sbo": "sbo."},
        settings=("mask_prob", "whole_word_mask"),
    ),
    "unilm": Objective(
        ("bert",), "ptmcli.pretraining.unified_lm:build",
        "masked LM under bidirectional, left-to-right, right-to-left and sequence-to-sequence attention masks, "
        "one regime per micro-batch (UniLM)",
        special_tokens=("cls", "sep", "pad", "mask"), predicted_fraction=lambda cfg: cfg.mask_prob,
        metrics=("loss", "mlm_loss", "mlm_acc"), find_unused_parameters=True,
        settings=(*MASKING_SETTINGS, "short_seq_prob", *UNILM_SETTINGS),
    ),
    "translation": Objective(
        ("cove",), "ptmcli.pretraining.translation_task:build",
        "teacher-forced translation over source/target pair shards, BLEU on a greedy decode (CoVe)",
        metrics=("loss", "ppl", "bleu"), shard_kind="pairs", settings=("init_vectors",),
        model_settings="ptmcli.pretraining.translation_task:model_settings",
        prepare_model="ptmcli.pretraining.translation_task:load_input_vectors",
    ),
    "denoise": Objective(
        ("bart", "t5"), "ptmcli.pretraining.denoise_task:build",
        "BART's denoising: text infilling, token masking and deletion, sentence permutation, document rotation; "
        "the decoder restores the text",
        special_tokens=("mask", "pad"), predicted_fraction=lambda cfg: 1.0, metrics=("loss", "lm_loss", "lm_acc"),
        settings=DENOISE_SETTINGS,
    ),
    # A family named here but not registered (models/registry.py) is refused by --arch as an unknown architecture.
    "span-corruption": Objective(
        ("t5", "bart"), "ptmcli.pretraining.span_corruption_task:build",
        "T5's span corruption: spans of tokens each replaced by one sentinel <extra_id_N>; the decoder writes "
        "the sentinels, each followed by its span",
        special_tokens=("pad",), predicted_fraction=lambda cfg: cfg.noise_density * (1.0 + 1.0 / cfg.mean_span_length),
        metrics=("loss", "lm_loss", "lm_acc"), settings=SPAN_CORRUPTION_SETTINGS, default_for=("t5",),
    ),
    "mass": Objective(
        ("bart", "t5"), "ptmcli.pretraining.mass_task:build",
        "MASS: one contiguous fragment of each example masked in the encoder; the decoder predicts it, "
        "at its own positions",
        special_tokens=("pad",), predicted_fraction=lambda cfg: cfg.mass_ratio,
        metrics=("loss", "lm_loss", "lm_acc"), settings=MASS_SETTINGS,
    ),
    "plm": Objective(
        ("xlnet",), "ptmcli.pretraining.permutation_lm:build",
        "permutation LM: a sampled factorisation order per example, its last 1/K predicted through the query stream (XLNet)",
        predicted_fraction=lambda cfg: 1.0 / cfg.plm_k, metrics=("loss", "lm_loss", "lm_acc"), settings=("plm_k",),
        # One-segment blocks leave the relative segment encodings (r_s_bias, seg_embed) without gradients.
        find_unused_parameters=True,
    ),
    # Static word vectors: each family's engine is a row of pretraining/static_vectors.py's ENGINES.
    "skipgram": Objective(("word2vec", "fasttext"), _STATIC, "each word predicts the words around it (word2vec, fastText)",
                          own_loop=True),
    "cbow": Objective(("word2vec", "fasttext"), _STATIC, "the mean of the context words predicts the word (word2vec, fastText)",
                      own_loop=True),
    "glove": Objective(("glove",), _STATIC, "weighted least squares on log co-occurrence counts (GloVe)", own_loop=True),
    "nnlm": Objective(("nnlm",), _STATIC, "feed-forward LM over the previous words (Bengio et al. 2003)",
                      metrics=("loss", "ppl"), own_loop=True),
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
    chosen = [name for name in found if family in OBJECTIVES[name].default_for]
    return chosen[0] if chosen else found[0]


def own_loop_families() -> tuple[str, ...]:
    """Families whose objectives train outside the shared loop (static word vectors)."""
    return tuple(dict.fromkeys(f for row in OBJECTIVES.values() if row.own_loop for f in row.families))


def get_objective(name: str, family: str) -> Objective:
    """The row of ``--objective name`` for ``--arch family``, or a PtmError listing the choices."""
    if name not in OBJECTIVES or family not in OBJECTIVES[name].families:
        raise PtmError(f"--objective {name!r} is not available for --arch {family} (choose from {', '.join(objectives_for(family))})")
    return OBJECTIVES[name]


def help_text() -> str:
    rows = "; ".join(f"{name} ({row.summary}) for {', '.join(row.families)}" for name, row in OBJECTIVES.items())
    chosen = "; ".join(f"{family}: {name}" for name, row in OBJECTIVES.items() for family in row.default_for)
    return f"Pretraining objective: {rows} [default: the first listed for --arch; {chosen}]."
