"""Everything ``ptm distill`` can be told, as one frozen dataclass (flags and config-file keys)."""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option
from ptmcli.training import options
from ptmcli.training.options import TrainingOptions

# Tasks whose outputs are a distribution over labels (per text or per token): what soft targets need.
DISTILL_TASKS = ("classification", "pair-classification", "token-classification")


@dataclass(frozen=True)
class DistillConfig(TrainingOptions):
    teacher: str | None = option(None, "Finetuned checkpoint to learn from (a run directory: its best/, else its newest); its task and labels are the student's.", required="unless --resume")
    student: str | None = option(None, "The student: a pretrained checkpoint of the teacher's family (it gets a fresh head) or a preset of that family (e.g. bert-tiny), built with the teacher's vocabulary.", required="unless --resume")
    init_from_teacher: bool = option(False, "Initialise the student from the teacher (DistilBERT): its embeddings, pooler and head, and student layer i from teacher layer i*Lt/Ls (every other layer at half the depth); needs the same width and at most the teacher's layers.")
    task: str | None = option(None, "The teacher's task (checked against it).", choices=DISTILL_TASKS, required="unless --resume")
    train: str | None = option(None, "Training data, as for ptm finetune (its hard labels mix with the teacher's soft ones).", required="unless --resume")
    dev: str | None = option(None, "Development data for evaluation, early stopping and the best checkpoint.")
    text_columns: str | None = option(None, "Comma-separated input column/field names [default: the teacher's].")
    label_column: str | None = option(None, "Label column/field name [default: the teacher's].")
    out: str | None = options.out("checkpoints/, best/ (an ordinary finetuned student), metrics.jsonl, results.json")
    overwrite: bool = options.overwrite()
    temperature: float = option(2.0, "Softmax temperature T of the soft targets; their KL divergence is multiplied by T^2.")
    alpha: float = option(0.5, "Weight of the soft-target loss; the hard-label loss weighs 1 - alpha (0: plain finetuning on the labels).")
    hidden_weight: float = option(0.0, "Weight of the hidden-state MSE: student layer i, through a learned projection, against teacher layer round((i+1)*Lt/Ls).")
    attention_weight: float = option(0.0, "Weight of the attention-map KL on the same layer pairs (needs the teacher's head count).")
    epochs: float = option(3.0, "Passes over the training data.")
    max_steps: int | None = option(None, "Optimizer steps (overrides --epochs).")
    batch_size: int = option(32, "Examples per micro-batch.")
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    lr: float | None = option(None, "Peak learning rate [default: ptm finetune's for the student's width].")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm).")
    schedule: str = option("linear", "Learning-rate schedule after warmup.", choices=("linear", "cosine", "constant", "stlr"))
    warmup_ratio: float = option(0.1, "Fraction of the steps spent warming up.")
    clip_norm: float = option(1.0, "Clip the global gradient norm (0 disables).")
    max_len: int | None = option(None, "Tokens per input sequence [default: the teacher's].")
    patience: int = option(0, "Stop after this many evaluations without dev improvement (0: never stop early).")
    eval_every: int = option(0, "Evaluate on --dev every N steps [default: once per epoch].")
    save_every: int = option(0, "Save a resumable checkpoint every N steps (0: at the end only).")
    keep_last: int = options.keep_last(1)
    log_every: int = option(20, "Log training metrics every N steps.")
    seed: int = option(0, "Seed for the student's initialisation, data order and dropout.")
    device: str = options.device()
    precision: str = options.precision("fp32, bf16 or fp16 (CUDA).")
    threads: int | None = options.threads()
    resume: str | None = option(None, "Continue an interrupted distillation run (its run directory or a checkpoint).")
    tensorboard: bool = options.tensorboard()
    progress: bool | None = options.progress()
    config: str | None = options.config_file()
