"""Cross-view training (Clark et al., 2018, "Semi-Supervised Sequence Modeling with Cross-View Training").

Training alternates labeled batches (the task loss, as without it) with batches of unlabeled text. On
those, the full model (the task head on the unrestricted encoder, in eval mode, without gradient) predicts
a distribution, and small auxiliary heads that see restricted *views* of the encoder learn to match it:
the loss is KL(teacher || view), summed over the views and averaged over the predicted positions. The
gradient flows through the views into the shared encoder, which is what the labeled task gains from.

Views restrict what the encoder may attend to, through a per-query attention pattern ``[B, T, T]``
(encoders whose module declares ``attention_patterns``: BERT's, RoBERTa's):

- tagging (per word, read at its first sub-token ``p``):
  ``forward`` (every layer attends to positions <= its own: the paper's forward LSTM), ``backward``
  (>= its own), ``future`` (the forward view at ``p - 1``: the word itself is never seen) and
  ``past`` (the backward view at the next word's first sub-token, or at the end token);
- classification (the pooled vector, read as the task head reads it): ``first-half`` and
  ``second-half`` (only the first or second half of the text's tokens is visible, the special tokens
  always), ``word-dropout`` (each text token hidden with probability 1/2, a new draw per batch).

The heads (dropout, Linear(D, D), GELU, Linear(D, labels)) are trained only by this loss. They are not
part of the task model: ``model.safetensors`` holds what it holds without cross-view training, so
``ptm eval`` and ``ptm predict`` read the checkpoint unchanged; step checkpoints keep the heads in
``trainer/cvt_heads.safetensors`` for ``--resume``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ptmcli.data.order import ShuffledOrder
from ptmcli.errors import PtmError
from ptmcli.models.layers import Dropout
from ptmcli.runtime.rng import rng_state_from_text, rng_state_to_text

TOKEN_VIEWS = ("forward", "backward", "future", "past")
SENTENCE_VIEWS = ("first-half", "second-half", "word-dropout")
VIEWS = {"token-classification": TOKEN_VIEWS, "classification": SENTENCE_VIEWS}
WORD_DROPOUT = 0.5
UNLABELED = "cvt_unlabeled"  # marks a batch of unlabeled text (not a tensor: the loop passes it through)
KEEP = "cvt_keep"  # the word-dropout view's visible tokens, drawn with the batch so that resume repeats them
HEADS_FILE = "cvt_heads.safetensors"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flags(cfg) -> tuple[str, ...] | None:
    """The views ``cfg`` asks for (None without --cvt-unlabeled), or a PtmError naming the flag at fault."""
    if cfg.cvt_unlabeled is None:
        for name, unset in (("cvt_ratio", 1.0), ("cvt_views", None)):
            if getattr(cfg, name) != unset:
                raise PtmError(f"{_flag(name)} needs --cvt-unlabeled (the unlabeled text cross-view training reads)")
        return None
    if cfg.task not in VIEWS:
        raise PtmError(f"--cvt-unlabeled: cross-view training applies to --task {' or '.join(VIEWS)}, not {cfg.task}")
    if not cfg.cvt_ratio > 0 or not math.isfinite(cfg.cvt_ratio):
        raise PtmError(f"--cvt-ratio {cfg.cvt_ratio:g}: must be positive (unlabeled batches per labeled batch)")
    if cfg.mode == "features" or cfg.train_features:
        raise PtmError("--cvt-unlabeled trains the encoder through its views; it conflicts with a frozen encoder "
                       "(--mode features, --train-features)")
    known = VIEWS[cfg.task]
    if cfg.cvt_views is None:
        return known
    views = tuple(v.strip() for v in cfg.cvt_views.split(",") if v.strip())
    unknown = [v for v in views if v not in known]
    if unknown or not views or len(set(views)) != len(views):
        raise PtmError(f"--cvt-views {cfg.cvt_views}: --task {cfg.task} takes distinct views among {', '.join(known)}")
    return views


def read_unlabeled(cfg) -> list | None:
    """The unlabeled examples (one per non-blank line), read before anything is written; None without the flag."""
    if check_flags(cfg) is None:
        return None
    from ptmcli.tasks.readers import open_labeled

    try:
        examples = list(open_labeled(cfg.cvt_unlabeled, cfg.task, fmt="text", labels=False))
    except PtmError as err:
        raise PtmError(f"--cvt-unlabeled {err}") from None
    if not examples:
        raise PtmError(f"--cvt-unlabeled {cfg.cvt_unlabeled}: no sentences in the file")
    return examples


# -- the views ---------------------------------------------------------------------------------------


def directional_pattern(mask: torch.Tensor, direction: str) -> torch.Tensor:
    """``[B, T, T]`` (query, key) from a ``[B, T]`` padding mask: each real query sees the real keys at or
    left of it (``forward``) or at or right of it (``backward``). A padded query sees every real key: its
    output is never read, and a row hiding every key would carry NaN through the values."""
    real = mask.bool()
    index = torch.arange(mask.shape[1], device=mask.device)
    allowed = index[None, :] <= index[:, None] if direction == "forward" else index[None, :] >= index[:, None]
    pattern = allowed[None] & real[:, None, :]
    return torch.where(real[:, :, None], pattern, real[:, None, :])


def sentence_visible(view: str, mask: torch.Tensor, lead: int, tail: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]`` bool: the tokens a sentence view may see. The ``lead`` and ``tail`` special tokens stay visible."""
    real = mask.bool()
    lengths = mask.sum(1, keepdim=True)
    index = torch.arange(mask.shape[1], device=mask.device)[None, :]
    text = (index >= lead) & (index < lengths - tail)
    if view == "word-dropout":
        return real & (~text | keep)
    split = lead + (lengths - lead - tail + 1) // 2
    half = index < split if view == "first-half" else index >= split
    return real & (~text | half)


def view_pattern(visible: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]``: every query sees the visible keys (a hidden query's output is never read)."""
    return visible[:, None, :].expand(-1, visible.shape[1], -1)


class ViewHeads(nn.Module):
    """One small prediction module per view: dropout, one hidden layer (GELU), the output layer."""

    def __init__(self, views: tuple[str, ...], size: int, outputs: int, dropout: float) -> None:
        super().__init__()
        self.views = views
        self.heads = nn.ModuleDict({
            _key(view): nn.Sequential(Dropout(dropout), nn.Linear(size, size), nn.GELU(), nn.Linear(size, outputs))
            for view in views
        })
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, view: str, features: torch.Tensor) -> torch.Tensor:
        return self.heads[_key(view)](features)


def _key(view: str) -> str:
    # A module name, which "forward" cannot be.
    return "view_" + view.replace("-", "_")


class CrossViewModel(nn.Module):
    """What the loop trains: the task model and the views' heads (so clipping and gradient averaging see
    both). Only ``task_model`` is saved as the checkpoint's weights."""

    def __init__(self, task_model: nn.Module, heads: ViewHeads, lead: int, tail: int) -> None:
        super().__init__()
        self.task_model = task_model
        self.heads = heads
        self.lead, self.tail = lead, tail

    def teacher(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The full model's logits, in eval mode (no dropout) and without gradient: the target, held fixed."""
        model = self.task_model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model(inputs)["logits"].float()
        finally:
            model.train(was_training)

    def view_logits(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({view: logits at the predicted positions}, which positions are real): ``[B, W, labels]`` and
        ``[B, W]`` for tagging (per word), ``[B, labels]`` and ``[B]`` for a sentence."""
        model = self.task_model
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in batch}
        mask = inputs["attention_mask"]
        out = {}
        if model.task_type == "token-classification":
            words = batch["word_index"]
            real = words >= 0
            at = words.clamp(min=0)
            # The word after each word starts where the next one does; after the last, at the end token.
            end = (mask.sum(1, keepdim=True) - self.tail).expand_as(words)
            following = torch.cat([words[:, 1:], torch.full_like(words[:, :1], -1)], 1)
            following = torch.where(following >= 0, following, end)
            read = {"forward": ("forward", at), "future": ("forward", at - 1),
                    "backward": ("backward", at), "past": ("backward", following)}
            states = {}
            for view in self.heads.views:
                direction, positions = read[view]
                if direction not in states:
                    states[direction] = model.token_states(dict(inputs, attention_mask=directional_pattern(mask, direction)))
                hidden = states[direction]
                picked = hidden.gather(1, positions.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))
                out[view] = self.heads(view, picked)
            return out, real
        for view in self.heads.views:
            visible = sentence_visible(view, mask, self.lead, self.tail, batch.get(KEEP))
            tokens = model.token_states(dict(inputs, attention_mask=view_pattern(visible)))
            # "last" reads the last real token, which (an end token) every view keeps visible.
            pooled = model.pool_sentence(tokens, mask if model.pool == "last" else visible.long())
            out[view] = self.heads(view, pooled)
        return out, torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)

    def cvt_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(teacher || view) summed over the views and the predicted positions, the positions)."""
        inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in batch}
        target = self.teacher(inputs)
        students, real = self.view_logits(batch)
        if self.task_model.task_type == "token-classification":
            target = target.gather(1, batch["word_index"].clamp(min=0)[..., None].expand(-1, -1, target.shape[-1]))
        log_target = target.log_softmax(-1)
        total = target.new_zeros(())
        for logits in students.values():
            kl = (log_target.exp() * (log_target - logits.float().log_softmax(-1))).sum(-1)
            total = total + kl.masked_fill(~real, 0.0).sum()
        return total, real.sum()


def check_encoder(model: nn.Module, where: str) -> None:
    """Refuse an encoder that cannot take a per-query attention pattern: it has no views."""
    encoder = model.family.encoder(model.lm)
    if getattr(encoder, "attention_patterns", False) is not True or model.word_encoder is not None:
        raise PtmError(f"{where}: cross-view training restricts attention per query, which the {model.family.title} "
                       "encoder does not take (BERT-style encoders: bert, roberta)")


# -- the training task --------------------------------------------------------------------------------


class CrossViewTask:
    """A finetuning task that alternates its labeled steps with steps on unlabeled text.

    After each labeled step, ``ratio`` is added to a credit; while the credit is at least 1, a step of
    unlabeled batches follows and takes 1 from it. Every step is one optimizer update. The unlabeled rows
    are visited in a seeded shuffled order of their own; both orders and the credit are the data state.
    """

    def __init__(self, inner, model: CrossViewModel, rows: list, collate: Callable, *, batch_size: int,
                 seed: int, ratio: float) -> None:
        self.inner = inner
        self.model = model
        self.rows = rows
        self.collate = collate
        self.batch_size = batch_size
        self.ratio = ratio
        self.credit = 0.0
        self.order = ShuffledOrder(len(rows), seed + 7919)
        self._iter = iter(self.order)
        self.keep_generator = torch.Generator().manual_seed(seed + 31)

    def next_micro_batches(self, count: int, rows: slice | None = None) -> list[dict]:
        if self.credit < 1.0:
            self.credit += self.ratio
            return self.inner.next_micro_batches(count, rows)
        self.credit -= 1.0
        batches = []
        for _ in range(count):
            chosen = [int(next(self._iter)) for _ in range(self.batch_size)]
            batch = self.collate([self.rows[i] for i in (chosen if rows is None else chosen[rows])])
            batch.pop("labels", None)
            if "word-dropout" in self.model.heads.views:
                shape = batch["input_ids"].shape
                batch[KEEP] = torch.rand(shape, generator=self.keep_generator) >= WORD_DROPOUT
            batch[UNLABELED] = True
            batches.append(batch)
        return batches

    def normalizer_counts(self, batches) -> dict[str, float]:
        if not batches[0].get(UNLABELED):
            return self.inner.normalizer_counts(batches)
        if "word_index" in batches[0]:
            return {"cvt": float(sum(int((b["word_index"] >= 0).sum()) for b in batches))}
        return {"cvt": float(sum(int(b["input_ids"].shape[0]) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        if "cvt" not in counts:
            return self.inner.normalizers_from(counts, micro_batches)
        return {"cvt": max(1.0, counts["cvt"]), "micro_batches": float(micro_batches)}

    def normalizers(self, batches) -> dict[str, float]:
        return self.normalizers_from(self.normalizer_counts(batches), len(batches))

    def loss(self, model: CrossViewModel, batch: dict, norms: dict):
        if not batch.get(UNLABELED):
            return self.inner.loss(model.task_model, batch, norms)
        total, positions = model.cvt_loss(batch)
        stats = {"cvt_loss_sum": total.detach(), "cvt_count": positions * len(model.heads.views)}
        return total / norms["cvt"], stats

    def summarize(self, sums: dict) -> dict[str, float]:
        out = self.inner.summarize(sums)
        if float(sums.get("cvt_count", 0)):
            out["cvt_loss"] = float(sums["cvt_loss_sum"]) / float(sums["cvt_count"])
        return out

    def tokens(self, batch) -> int:
        return self.inner.tokens(batch)

    def evaluate(self, model: CrossViewModel, precision: str, device: torch.device) -> dict[str, float]:
        return self.inner.evaluate(model.task_model, precision, device)

    def state_dict(self) -> dict:
        return {"finetune": self.inner.state_dict(), "unlabeled_order": self.order.state_dict(), "credit": self.credit,
                "keep_generator": rng_state_to_text(self.keep_generator.get_state())}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["finetune"])
        self.order.load_state_dict(state["unlabeled_order"])
        self._iter = iter(self.order)
        self.credit = float(state["credit"])
        self.keep_generator.set_state(rng_state_from_text(state["keep_generator"]))

    def __getattr__(self, name):
        # after_evaluate, best, best_step, training_state_dict, ...: the finetuning task's own.
        return getattr(self.inner, name)


# -- what ``ptm finetune`` sets up ----------------------------------------------------------------------


class CrossView:
    """Cross-view training of one finetuning run: its heads, its unlabeled rows, how it joins the loop."""

    def __init__(self, cfg, model: nn.Module, examples: list, tokenizer, arch: str, labels, outputs: int) -> None:
        from ptmcli.tasks.encode import encode_examples, style_tokens

        check_encoder(model, f"--checkpoint {cfg.checkpoint}")
        self.cfg = cfg
        self.views = check_flags(cfg)
        self.rows = encode_examples(examples, tokenizer, cfg.task, arch, cfg.max_len, list(labels),
                                    source=cfg.cvt_unlabeled)
        style = style_tokens(tokenizer, arch)
        size = model.family.feature_size(model.lm.config)
        heads = ViewHeads(self.views, size, outputs, model.family.head_dropout(model.lm.config))
        heads.to(next(model.parameters()).device)
        self.model = CrossViewModel(model, heads, len(style.lead), len(style.tail))

    def parameter_group(self, lr: float, layer_group: int) -> dict:
        """The heads' optimizer group (no weight decay: they are small and trained from scratch)."""
        named = list(self.model.heads.named_parameters(prefix="cvt_heads"))
        return {"params": [p for _, p in named], "names": [n for n, _ in named], "weight_decay": 0.0, "lr": lr,
                "layer_group": layer_group}

    def steps_per_epoch(self, labeled_steps: int) -> int:
        """Optimizer steps in one pass over the labeled data, the unlabeled steps between them included."""
        return max(1, math.ceil(labeled_steps * (1.0 + self.cfg.cvt_ratio)))

    def task(self, inner, collate: Callable, batch_size: int) -> CrossViewTask:
        return CrossViewTask(inner, self.model, self.rows, collate, batch_size=batch_size, seed=self.cfg.seed,
                             ratio=self.cfg.cvt_ratio)

    def load_heads(self, checkpoint: Path) -> None:
        """The heads of a step checkpoint being resumed."""
        from ptmcli.checkpoint.weights import read_tensors

        saved = Path(checkpoint) / "trainer" / HEADS_FILE
        if not saved.exists():
            raise PtmError(f"--resume {checkpoint}: {saved} is missing (the cross-view heads)")
        try:
            self.model.heads.load_state_dict(read_tensors(saved))
        except RuntimeError as err:
            raise PtmError(f"{saved}: the cross-view heads do not fit ({str(err).splitlines()[0]})") from None

    def saving_heads(self, save: Callable[[int, dict, dict], None], run_dir: Path, is_main: bool) -> Callable:
        """``save`` that also writes the heads beside the step checkpoint's optimizer state."""
        from ptmcli.checkpoint import step_dir_name
        from ptmcli.checkpoint.directory import _save_tensors

        def save_with_heads(step: int, optimizer_tensors: dict, trainer_state: dict) -> None:
            save(step, optimizer_tensors, trainer_state)
            if not is_main:
                return
            target = run_dir / "checkpoints" / step_dir_name(step) / "trainer" / HEADS_FILE
            staging = target.with_name(target.name + ".tmp")
            _save_tensors({k: v.detach().contiguous().cpu() for k, v in self.model.heads.state_dict().items()}, staging)
            os.replace(staging, target)

        return save_with_heads

    def describe(self) -> str:
        heads = sum(p.numel() for p in self.model.heads.parameters())
        return (f"ptm: cross-view training on {len(self.rows):,} unlabeled {'sentences' if self.cfg.task != 'classification' else 'texts'} "
                f"({self.cfg.cvt_unlabeled}), views {', '.join(self.views)}, {self.cfg.cvt_ratio:g} unlabeled step(s) per "
                f"labeled step; {heads / 1e6:.2f}M parameters in the auxiliary heads (not part of the saved task model)")

