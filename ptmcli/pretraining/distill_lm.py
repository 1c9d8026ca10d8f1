"""DistilBERT's objective (``--objective mlm-distill``): a masked LM distilled from a pretrained teacher.

The student is the model being pretrained; the teacher (``--teacher``) is a pretrained masked-LM
checkpoint of the same family and tokenizer, frozen, in eval mode, run without gradients on the run's
device and under its autocast. Batches are the ``mlm`` objective's (packed blocks, the same masker and
``--mask-prob``); student and teacher read the same masked input. Per optimizer step::

    alpha_ce * T^2 * KL(softmax(t / T) || softmax(s / T))     averaged over the masked positions
    + alpha_mlm * cross-entropy(s, label)                    averaged over the masked positions
    + alpha_cos * (1 - cos(h_s, h_t))                        averaged over the real (non-pad) tokens

with ``s``, ``t`` the MLM logits and ``h_s``, ``h_t`` the last hidden states (Sanh et al., 2019; defaults
T 2, alpha_ce 5, alpha_mlm 2, alpha_cos 1). The teacher is held by the task, outside the student's
module tree: it is never saved with the student, and ``--resume`` loads it again from the run's
recorded ``--teacher``. ``--init-from-teacher`` starts the student from the teacher's embeddings and
heads and from teacher layer i*Lt/Ls for student layer i (``prepare_student``, before any other weights
are loaded, so ``--resume`` overwrites it with the checkpoint's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.models.teacher_init import check_fits, copy_from_teacher, init_layer_map
from ptmcli.pretraining.bert_task import BertPretrainTask
from ptmcli.pretraining.masked_lm import example_streams, masked_lm_task
from ptmcli.pretraining.objective_context import ObjectiveContext

_DISTILL_KEYS = ("ce_loss_sum", "cos_loss_sum", "cos_count")
# The teacher last loaded, by (checkpoint, its weights' mtime): prepare_student and the builder (and
# --batch-size auto's trial tasks) share one copy instead of reading it again.
_LOADED: dict[tuple, object] = {}


class _LastHidden:
    """A forward hook on an encoder that keeps its output (the last hidden state ``[B, T, H]``)."""

    def __init__(self, encoder) -> None:
        self.value = None
        self.handle = encoder.register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, output) -> None:
        self.value = output[0] if isinstance(output, tuple) else output

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("mlm-distill: the encoder's forward hook saw no output")
        return value


def last_hidden_capture(model, family) -> _LastHidden:
    """The hook that keeps the last hidden state of ``model``'s encoder, registered once per model (before
    ``--compile`` and DDP see it) and kept as a plain attribute: no parameters, nothing in the state dict."""
    capture = model.__dict__.get("_distill_capture")
    if capture is None:
        capture = _LastHidden(family.encoder(model))
        object.__setattr__(model, "_distill_capture", capture)
    return capture


# -- the teacher ------------------------------------------------------------------------------------


def check_settings(cfg) -> None:
    """The distillation flags' values, one PtmError line for the first one out of range."""
    if not getattr(cfg, "teacher", None):
        raise PtmError(f"--objective mlm-distill needs --teacher CHECKPOINT: a pretrained masked-LM checkpoint of --arch "
                       f"{cfg.arch} encoded with the shards' tokenizer (e.g. one ptm pretrain --objective mlm wrote)")
    if cfg.distill_temperature <= 0:
        raise PtmError(f"--distill-temperature {cfg.distill_temperature}: must be positive")
    for name in ("alpha_ce", "alpha_mlm", "alpha_cos"):
        if getattr(cfg, name) < 0:
            raise PtmError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must not be negative")
    if cfg.alpha_ce + cfg.alpha_mlm + cfg.alpha_cos == 0:
        raise PtmError("--alpha-ce, --alpha-mlm and --alpha-cos are all 0: nothing to train")
    if cfg.init_from_teacher and getattr(cfg, "init_from", None):
        raise PtmError("--init-from-teacher with --init-from: the student starts from one of them; give one")
    if getattr(cfg, "fsdp", False):
        raise PtmError("--objective mlm-distill does not run under --fsdp (the teacher is not sharded); use DDP")


def load_teacher(cfg):
    """The teacher ``--teacher`` names (a ``LoadedCheckpoint``, frozen, in eval mode), or a PtmError line
    naming --teacher: a finetuned checkpoint, another family, no masked-LM head, int8 weights."""
    from ptmcli.checkpoint import read_config, resolve_checkpoint
    from ptmcli.checkpoint.directory import WEIGHTS
    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.convert.open import open_checkpoint

    check_settings(cfg)
    where = f"--teacher {cfg.teacher}"
    path = resolve_checkpoint(open_checkpoint(cfg.teacher, "--teacher"))
    config = read_config(path)
    if config.get("task"):
        kind = (config["task"] or {}).get("type", "a task") if isinstance(config["task"], dict) else "a task"
        raise PtmError(f"{where}: a checkpoint finetuned for {kind}; pretraining distillation needs a pretrained "
                       f"masked-LM checkpoint (ptm distill distills finetuned teachers)")
    if config.get("arch") != cfg.arch:
        raise PtmError(f"{where}: a {config.get('arch')} checkpoint, but --arch is {cfg.arch}; the teacher and the "
                       f"student must be one family (pass --arch {config.get('arch')})")
    if config.get("quantization"):
        raise PtmError(f"{where}: an int8-quantized checkpoint (ptm compress --quantize); give the checkpoint it was made from")
    weights = path / WEIGHTS
    key = (str(path.resolve()), weights.stat().st_mtime_ns if weights.exists() else 0)
    if key not in _LOADED:
        import torch

        # Building the teacher draws its (overwritten) initial weights from the global generator; forking it keeps
        # the student's initialisation and masking the same whether the teacher was loaded here or cached.
        with torch.random.fork_rng(devices=[]):
            loaded = load_checkpoint(path, note_initialised=False)
        if "mlm" in (loaded.initialised or []):
            raise PtmError(f"{where}: it has no masked-LM head (no mlm weights: an encoder converted without it); "
                           "the soft targets are the teacher's MLM predictions")
        loaded.model.eval()
        for param in loaded.model.parameters():
            param.requires_grad_(False)
        _LOADED.clear()  # one teacher at a time
        _LOADED[key] = loaded
    return _LOADED[key]


def check_tokenizer(cfg, teacher, sha256: str) -> None:
    """A PtmError line unless the teacher's tokenizer is the one with ``sha256`` (the shards')."""
    if teacher.tokenizer.sha256 != sha256:
        raise PtmError(f"--teacher {cfg.teacher}: its tokenizer differs from the one the shards were encoded with; the "
                       f"student must read the teacher's token ids (encode the data with --tokenizer {teacher.path})")


def _width(model_config) -> int:
    return int(model_config.hidden_size)


def prepare_student(model, cfg) -> None:
    """The row's ``prepare_model``: check the teacher against the student (family, width for the cosine
    loss) and, with ``--init-from-teacher``, copy it into the student (DistilBERT's initialisation)."""
    teacher = load_teacher(cfg)
    if getattr(cfg, "data", None):  # the shards' tokenizer, as their manifest records it (pretrain checked it is the run's)
        from ptmcli.data.shards import ShardDataset

        check_tokenizer(cfg, teacher, ShardDataset.open(cfg.data).tokenizer_sha256)
    if teacher.model_config.vocab_size != model.config.vocab_size:
        raise PtmError(f"--teacher {cfg.teacher}: its vocabulary ({teacher.model_config.vocab_size} rows) is not the "
                       f"student's ({model.config.vocab_size}); its tokenizer differs from the shards' (encode the data "
                       f"with --tokenizer {teacher.path})")
    ws, wt = _width(model.config), _width(teacher.model_config)
    if cfg.alpha_cos > 0 and ws != wt:
        raise PtmError(f"--alpha-cos {cfg.alpha_cos:g}: the cosine loss compares hidden states, but the student is {ws} wide "
                       f"and the teacher (--teacher {cfg.teacher}) {wt}; give --alpha-cos 0 or a student of width {wt}")
    if cfg.init_from_teacher:
        init_from_teacher(model, teacher.model, teacher.family, f"--teacher {cfg.teacher}")
    last_hidden_capture(model, teacher.family)


def init_from_teacher(student, teacher, family, where: str = "--teacher") -> list[str]:
    """Copy ``teacher`` into ``student`` (pretraining models of ``family``): student block i from teacher block
    ``init_layer_map``, every other tensor (embeddings, final LayerNorm, pooler, heads) under its own name;
    returns the keys copied. A PtmError line when the shapes do not allow it."""
    ls, lt = len(family.encoder(student).layers), len(family.encoder(teacher).layers)
    ws, wt = _width(student.config), _width(teacher.config)
    check_fits(ls, ws, lt, wt, where)
    copied = copy_from_teacher(student.state_dict(), teacher.state_dict(), f"{family.encoder_prefix}layers.",
                               init_layer_map(ls, lt))
    student.tie_weights()
    return copied


# -- the task ---------------------------------------------------------------------------------------


def soft_target_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * the sum over rows of KL(softmax(teacher / T) || softmax(student / T)), in fp32."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="sum") * temperature**2


class DistillLMTask(BertPretrainTask):
    """The ``mlm`` task (its batches, masks, state and evaluation sets) with DistilBERT's loss."""

    @classmethod
    def adopt(cls, task: BertPretrainTask, teacher, family, *, temperature: float, alpha_ce: float, alpha_mlm: float,
              alpha_cos: float) -> DistillLMTask:
        """``task`` (as ``masked_lm_task`` built it) with the distillation loss: the same stream, masker and
        evaluation batches, so the student sees exactly the ``mlm`` objective's batches."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(task.__dict__)
        adopted.sum_keys = task.sum_keys + _DISTILL_KEYS
        adopted.teacher, adopted.family = teacher, family
        adopted.temperature, adopted.alpha_ce, adopted.alpha_mlm, adopted.alpha_cos = temperature, alpha_ce, alpha_mlm, alpha_cos
        return adopted

    def _teacher_on(self, device: torch.device):
        teacher = self.teacher
        if next(teacher.parameters()).device != device:
            teacher.to(device)
            teacher.tie_weights()
        return teacher

    def _forward(self, model, batch):
        ids, types, mask, labels = batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"], batch["mlm_labels"]
        core = getattr(model, "module", model)  # under DDP the loop hands the wrapper
        student = last_hidden_capture(core, self.family)
        # Through the model's own forward (and DDP's): the fused MLM loss, its count and accuracy.
        out = dict(model(ids, types, mask, mlm_labels=labels))
        hidden = student.take()
        teacher = self._teacher_on(ids.device)
        positions = (labels.reshape(-1) != -100).nonzero().squeeze(1)
        teacher_capture = last_hidden_capture(teacher, self.family)
        with torch.no_grad():
            teacher(ids, types, mask)
            teacher_hidden = teacher_capture.take()
            teacher_logits = self.family.masked_lm_head(teacher)(
                teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).index_select(0, positions))
        # The student's logits at the same positions, in the same (row-major) order; with gradients only
        # when the soft targets weigh in.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.alpha_ce > 0):
            rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
            student_logits = self.family.masked_lm_head(core)(rows)
            terms = {"ce_loss_sum": soft_target_sum(student_logits, teacher_logits, self.temperature)}
        real = mask.reshape(-1).bool()
        if hidden.shape[-1] == teacher_hidden.shape[-1]:
            flat_s = hidden.reshape(-1, hidden.shape[-1])[real].float()
            flat_t = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])[real].float()
            terms["cos_loss_sum"] = (1.0 - F.cosine_similarity(flat_s, flat_t, dim=-1)).sum()
        else:  # --alpha-cos 0 with another width: nothing to compare
            terms["cos_loss_sum"] = hidden.new_zeros((), dtype=torch.float32)
        terms["cos_count"] = real.sum()
        out.update(terms)
        return out

    def normalizer_counts(self, batches) -> dict[str, float]:
        counts = super().normalizer_counts(batches)
        counts["tokens"] = float(sum(int(b["attention_mask"].sum()) for b in batches))
        return counts

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return dict(super().normalizers_from(counts, micro_batches), tokens=max(1.0, counts["tokens"]))

    def _objective(self, out, norms):
        loss = (self.alpha_ce * out["ce_loss_sum"] + self.alpha_mlm * out["mlm_loss_sum"]) / norms["mlm"]
        if self.alpha_cos > 0:
            loss = loss + self.alpha_cos * out["cos_loss_sum"] / norms["tokens"]
        return loss

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = super()._metrics(sums)
        if sums.get("mlm_count"):
            out["ce_loss"] = sums["ce_loss_sum"] / sums["mlm_count"]
        if sums.get("cos_count"):
            out["cos_loss"] = sums["cos_loss_sum"] / sums["cos_count"]
        return out


def build(context: ObjectiveContext) -> DistillLMTask:
    """The builder of ``--objective mlm-distill``: the ``mlm`` task with the teacher's loss."""
    cfg, tokenizer = context.config, context.tokenizer
    teacher = load_teacher(cfg)
    check_tokenizer(cfg, teacher, tokenizer.sha256)
    task = masked_lm_task(context, example_streams(context, "mlm"), None)
    return DistillLMTask.adopt(task, teacher.model, teacher.family, temperature=cfg.distill_temperature,
                               alpha_ce=cfg.alpha_ce, alpha_mlm=cfg.alpha_mlm, alpha_cos=cfg.alpha_cos)
