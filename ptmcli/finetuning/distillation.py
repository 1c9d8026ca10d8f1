"""Task distillation as a ``TrainTask``: a finetuned teacher's soft targets (and, optionally, its hidden
states and attention maps) teach a student task model.

The student is an ordinary ``TaskModel``; the loop trains a ``DistillationModel`` that holds it and the
learned hidden-state projections, and keeps the teacher outside its parameters (frozen, in eval mode).
``DistillTask`` is finetuning's task with another loss: batches, normalisers, dev evaluation, the best
checkpoint and early stopping are ``FinetuneTask``'s.

Loss per step, over the step's labelled examples (or labelled tokens when tagging)::

    alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, label)
    + hidden_weight * MSE(W_i h_s[i], h_t[m(i)]) + attention_weight * KL(A_t[m(i)] || A_s[i])

with m(i) = round((i + 1) * Lt / Ls) the teacher layer (1-based) of student layer i (0-based), the
hidden and attention terms averaged over the mapped layers and the real tokens of each micro-batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.finetuning.task import STEP_EPOCHS, FinetuneTask
from ptmcli.models.teacher_init import check_fits, copy_from_teacher, init_layer_map

LM_PREFIX = "lm."
# A masked attention score: finite, so log-probabilities of padding stay finite and their KL terms are 0.
MASKED_SCORE = -1e4


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based, 0 being the embeddings) each student layer (0-based) learns from: round((i+1)*Lt/Ls),
    halves rounded up so the map does not depend on Python's round-half-to-even."""
    return [min(teacher_layers, int(math.floor((i + 1) * teacher_layers / student_layers + 0.5))) for i in range(student_layers)]


def soft_target_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * sum over rows of KL(softmax(teacher / T) || softmax(student / T)); rows are the last dimension's
    distributions. T^2 keeps the gradients' scale independent of T (Hinton et al., 2015)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="sum") * temperature**2


def _encoder_layers(model) -> nn.ModuleList:
    """The blocks of a task model's BERT-style encoder."""
    return model.family.encoder(model.lm).layers


class _Capture:
    """Forward hooks that keep each block's output and its attention's fused q/k/v projection while on."""

    def __init__(self, model) -> None:
        self.on = False
        self.hidden: list[torch.Tensor | None] = []
        self.qkv: list[torch.Tensor | None] = []
        layers = _encoder_layers(model)
        self.heads = [(layer.attention.num_heads, layer.attention.head_dim) for layer in layers]
        self.hidden, self.qkv = [None] * len(layers), [None] * len(layers)
        for i, layer in enumerate(layers):
            layer.register_forward_hook(self._keeper(self.hidden, i))
            layer.attention.qkv.register_forward_hook(self._keeper(self.qkv, i))

    def _keeper(self, store: list, index: int):
        def hook(_module, _inputs, output):
            if self.on:
                store[index] = output
        return hook

    def attention_log_probs(self, index: int, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, heads, T, T]`` log-probabilities of block ``index``'s attention, recomputed from its q and k."""
        heads, dim = self.heads[index]
        qkv = self.qkv[index]
        batch, length, _ = qkv.shape
        q, k, _v = qkv.view(batch, length, 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q.float() * dim**-0.5) @ k.float().transpose(-1, -2)
        scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, MASKED_SCORE)
        return scores.log_softmax(-1)


def hidden_mse(student_states: list[torch.Tensor], teacher_states: list[torch.Tensor], projections: nn.ModuleList,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the layer pairs of the squared error per feature, averaged over the real tokens."""
    keep = attention_mask.float().unsqueeze(-1)
    tokens = keep.sum().clamp(min=1.0)
    total = torch.zeros((), device=attention_mask.device)
    for student, teacher, project in zip(student_states, teacher_states, projections, strict=True):
        error = (project(student.float()) - teacher.float()) ** 2 * keep
        total = total + error.sum() / (tokens * teacher.shape[-1])
    return total / len(projections)


def attention_kl(student_log_probs: list[torch.Tensor], teacher_log_probs: list[torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the layer pairs and heads of KL(teacher row || student row), averaged over the real query tokens."""
    keep = attention_mask.float()[:, None, :]
    total = torch.zeros((), device=attention_mask.device)
    for student, teacher in zip(student_log_probs, teacher_log_probs, strict=True):
        per_row = (teacher.exp() * (teacher - student)).sum(-1)  # [B, heads, T]
        total = total + (per_row * keep).sum() / (keep.sum().clamp(min=1.0) * student.shape[1])
    return total / len(student_log_probs)


class DistillationModel(nn.Module):
    """What the loop trains: the student and the hidden-state projections. The teacher is held outside the
    module tree (no parameters, no state dict, never put in training mode)."""

    def __init__(self, student, teacher, *, hidden: bool, attention: bool) -> None:
        super().__init__()
        self.student = student
        self._teacher = [teacher]
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        ls, lt = len(_encoder_layers(student)), len(_encoder_layers(teacher))
        self.pairs = list(zip(range(ls), (m - 1 for m in layer_map(ls, lt))))  # (student block, teacher block)
        self.projections = nn.ModuleList()
        if hidden:
            ws, wt = student.family.feature_size(student.lm.config), teacher.family.feature_size(teacher.lm.config)
            for _ in self.pairs:
                project = nn.Linear(ws, wt)
                if ws == wt:  # start from the identity: a student that matches its teacher has nothing to learn
                    nn.init.eye_(project.weight)
                    nn.init.zeros_(project.bias)
                self.projections.append(project)
        self.hidden, self.attention = hidden, attention
        self._student_capture = _Capture(student) if hidden or attention else None
        self._teacher_capture = _Capture(teacher) if hidden or attention else None

    @property
    def teacher(self):
        return self._teacher[0]

    @property
    def task_type(self) -> str:
        return self.student.task_type

    @property
    def frozen_lm(self) -> bool:
        return False

    def to(self, *args, **kwargs):
        self.teacher.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def forward(self, batch: dict[str, torch.Tensor], with_teacher: bool = True) -> dict[str, torch.Tensor]:
        """The student's outputs, and with ``with_teacher`` the teacher's ``teacher_logits`` and the
        ``hidden_loss`` / ``attention_loss`` terms that are on."""
        captures = [c for c in (self._student_capture, self._teacher_capture) if c is not None and with_teacher]
        for capture in captures:
            capture.on = True
        try:
            out = self.student(batch)
            if not with_teacher:
                return out
            with torch.no_grad():
                teacher_batch = {k: v for k, v in batch.items() if k != "labels"}
                out["teacher_logits"] = self.teacher(teacher_batch)["logits"].float()
        finally:
            for capture in captures:
                capture.on = False
        mask = batch["attention_mask"]
        if self.hidden:
            s, t = self._student_capture.hidden, self._teacher_capture.hidden
            out["hidden_loss"] = hidden_mse([s[i] for i, _ in self.pairs], [t[j] for _, j in self.pairs], self.projections, mask)
        if self.attention:
            s, t = self._student_capture, self._teacher_capture
            out["attention_loss"] = attention_kl([s.attention_log_probs(i, mask) for i, _ in self.pairs],
                                                 [t.attention_log_probs(j, mask) for _, j in self.pairs], mask)
        return out

    def projection_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.projections.state_dict().items()}


def check_attention_heads(student, teacher) -> None:
    """Attention maps compare head by head: the same number of heads in every mapped block, or a PtmError."""
    s = [layer.attention.num_heads for layer in _encoder_layers(student)]
    t = [layer.attention.num_heads for layer in _encoder_layers(teacher)]
    for i, m in zip(range(len(s)), layer_map(len(s), len(t))):
        if s[i] != t[m - 1]:
            raise PtmError(f"--attention-weight compares attention maps head by head: student layer {i} has {s[i]} heads, "
                           f"teacher layer {m - 1} has {t[m - 1]}")


def init_from_teacher(student, teacher) -> list[str]:
    """Copy the teacher into the student: student block i from teacher block ``init_layer_map``, everything
    else (embeddings, pooler, head) under the same name; returns the keys copied. A PtmError when the
    shapes do not allow it (another width, more layers, another feed-forward size or vocabulary)."""
    ws, wt = student.family.feature_size(student.lm.config), teacher.family.feature_size(teacher.lm.config)
    ls, lt = len(_encoder_layers(student)), len(_encoder_layers(teacher))
    check_fits(ls, ws, lt, wt)
    layers_prefix = f"{LM_PREFIX}{student.family.encoder_prefix}layers."
    # The encoder must come over whole; heads the teacher's task shaped differently keep their fresh weights.
    copied = copy_from_teacher(student.state_dict(), teacher.state_dict(), layers_prefix, init_layer_map(ls, lt),
                               required=lambda key: key.startswith(layers_prefix) or ".embeddings." in key,
                               shown=lambda key: key[len(LM_PREFIX):])
    student.tie_weights()
    return copied


class DistillTask(FinetuneTask):
    """Finetuning's task with the distillation loss (``temperature``, ``alpha``, ``hidden_weight``, ``attention_weight``)."""

    def __init__(self, model: DistillationModel, *args, temperature: float, alpha: float, hidden_weight: float = 0.0,
                 attention_weight: float = 0.0, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        self.temperature, self.alpha = temperature, alpha
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight

    @property
    def needs_teacher(self) -> bool:
        return self.alpha > 0 or self.hidden_weight > 0 or self.attention_weight > 0

    def loss(self, model, batch, norms):
        self._train_in(*batch[STEP_EPOCHS])
        batch = {k: v for k, v in batch.items() if k != STEP_EPOCHS}
        out = model(batch, with_teacher=self.needs_teacher)
        labels = batch["labels"]
        hard_sum = out["loss_sum"]
        loss = (1.0 - self.alpha) * hard_sum / norms["task"]
        stats = {"task_loss_sum": hard_sum.detach(), "task_count": out["count"], "task_correct": self._correct(out["logits"], labels)}
        if self.alpha > 0:
            student, teacher = out["logits"], out["teacher_logits"]
            if student.dim() == 3:  # tagging: the labelled tokens only, as the hard loss
                keep = labels != -100
                student, teacher = student[keep], teacher[keep]
            soft_sum = soft_target_sum(student, teacher, self.temperature)
            loss = loss + self.alpha * soft_sum / norms["task"]
            stats["soft_loss_sum"] = soft_sum.detach()
        # Per micro-batch means, as finetuning's auxiliary LM: each micro-batch weighs 1 / micro-batches.
        for name, weight in (("hidden", self.hidden_weight), ("attention", self.attention_weight)):
            if weight > 0:
                term = out[f"{name}_loss"]
                loss = loss + weight * term / norms["micro_batches"]
                stats[f"{name}_loss_sum"] = term.detach()
                stats[f"{name}_count"] = torch.ones((), device=term.device)
        return loss, stats

    def summarize(self, sums: dict) -> dict[str, float]:
        out = super().summarize(sums)
        sums = {key: float(value) for key, value in sums.items()}
        if sums.get("task_count") and "soft_loss_sum" in sums:
            out["soft_loss"] = sums["soft_loss_sum"] / sums["task_count"]
        for name in ("hidden", "attention"):
            if sums.get(f"{name}_count"):
                out[f"{name}_loss"] = sums[f"{name}_loss_sum"] / sums[f"{name}_count"]
        return out
