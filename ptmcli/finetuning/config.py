"""Everything ``ptm finetune`` can be told, as one frozen dataclass (flags and config-file keys)."""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option
from ptmcli.tasks import FINETUNE_TASKS as TASK_TYPES
from ptmcli.training import options
from ptmcli.training.options import TrainingOptions

MODES = ("finetune", "features")
# Full finetuning's default peak rate by model width: small models need larger steps. Measured for
# 256 (bert-mini, SST-2: 1e-4 68.2%, 3e-4 72.6%, 1e-3 72.4%, 3e-3 one class; docs/finetune.md);
# wider models keep 1e-4, the top of BERT's published 2e-5..1e-4 range.
FINETUNE_LR_BY_WIDTH = ((256, 3e-4), (None, 1e-4))
FEATURES_LR = 1e-3


def default_lr(mode: str, width: int | None) -> float:
    """--lr when none is given: by mode, and for full finetuning by the model's width."""
    if mode == "features":
        return FEATURES_LR
    for most, rate in FINETUNE_LR_BY_WIDTH:
        if most is None or (width is not None and width <= most):
            return rate
    return FINETUNE_LR_BY_WIDTH[-1][1]
POOLS = ("mean", "cls", "last", "max", "pooler")


@dataclass(frozen=True)
class FinetuneConfig(TrainingOptions):
    checkpoint: str | None = option(None, "Pretrained checkpoint to start from; a run directory (its best/ checkpoint, else its newest); or a Hugging Face model directory (converted for the run).", required="unless --train-features or --resume")
    from_scratch: bool = option(False, "Re-initialise the checkpoint's architecture randomly (same shape and tokenizer): the baseline pretraining is measured against.")
    task: str | None = option(None, "What to predict.", choices=TASK_TYPES, required="unless --resume")
    train: str | None = option(None, "Training data: TSV/CSV with a header, JSONL, CoNLL columns (token-classification), SQuAD JSON/JSONL (qa), or source<TAB>target TSV / JSONL (seq2seq).", required="unless --resume or --source-file")
    dev: str | None = option(None, "Development data (same format) for evaluation, early stopping and the best checkpoint.")
    train_features: str | None = option(None, "Train on stored features instead of running the encoder: the Arrow feature directory `ptm extract-features --task TASK` wrote for --train (row i = example i; --train still gives the labels). Implies --mode features; --checkpoint and --max-len default to those of the extraction.")
    dev_features: str | None = option(None, "Stored features of --dev, as --train-features (without them, --dev runs through the encoder at each evaluation).")
    text_columns: str | None = option(None, "Comma-separated input column/field names [default: recognised GLUE-style names].")
    label_column: str | None = option(None, "Label column/field name [default: label, gold_label, score, ...].")
    tasks: str | None = option(None, "Multi-task finetuning (MT-DNN): a tasks.toml file with one [[task]] table per task (name, type, train, dev, columns, metric, max_len) and the sampling rule; one shared encoder, one head per task (docs/finetune.md#multi-task-finetuning). Replaces --task, --train and --dev.")
    head: str | None = option(None, "With a multi-task --checkpoint: continue single-task finetuning from this head (its weights start the new head; --task must be its type). Without --head such a checkpoint gives its encoder only.")
    out: str | None = options.out("checkpoints/, best/, metrics.jsonl, results.json")
    overwrite: bool = options.overwrite()
    mode: str = option("finetune", "finetune: every weight trains; features: the pretrained model is frozen and a learned scalar mix of its layers feeds the head (ELMo's recipe).", choices=MODES)
    pool: str | None = option(None, "Where a sentence or choice is read: mean (over its real tokens), max (each feature's largest value over them), last (its last real token), cls (position 0, without BERT's pooler) or pooler (BERT's pooler on [CLS]) [default: a sentence-transformers model's own pooling; for BERT, its pooler on [CLS] when pretraining trained it (NSP), else mean; GPT's last real token; the mean of ELMo and --mode features].", choices=POOLS)
    encoder: str | None = option(None, "The small encoder trained between static word vectors (or, in --mode features, a frozen model's scalar mix, as ELMo and CoVe were used) and the head: bilstm (per-token outputs for tagging, --pool max or mean for sentences) or cnn (Kim 2014: widths 3, 4, 5, max over time; sentence tasks) [default: bilstm for static vectors; none in --mode features, the head reads the mix].", choices=("bilstm", "cnn"))
    encoder_hidden: int | None = option(None, "--encoder bilstm's LSTM size per direction, or cnn's feature maps per filter width [default: 256 for bilstm, 100 for cnn].")
    encoder_layers: int | None = option(None, "--encoder bilstm's layers [default: 1].")
    freeze_embeddings: bool | None = option(None, "Static word vectors only: keep the vectors fixed while the encoder and head train [default: on].")
    epochs: float = option(3.0, "Passes over the training data.")
    max_steps: int | None = option(None, "Optimizer steps (overrides --epochs).")
    batch_size: int = option(32, "Examples per micro-batch.")
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    lr: float | None = option(None, "Peak learning rate [default: finetune 3e-4 for models up to 256 wide (bert-mini), 1e-4 wider; features and static word vectors 1e-3].")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm).")
    schedule: str = option("linear", "Learning-rate schedule after warmup; stlr is ULMFiT's slanted triangular rate.", choices=("linear", "cosine", "constant", "stlr"))
    warmup_ratio: float = option(0.1, "Fraction of the steps spent warming up (stlr: its cut_frac).")
    discriminative_lr: float = option(1.0, "ULMFiT's discriminative rates: each layer group down from the top trains at the rate above divided by this (2.6 in ULMFiT; 1 turns it off).")
    gradual_unfreeze: bool = option(False, "ULMFiT's gradual unfreezing: train only the top layer group in the first epoch, one more group each epoch after.")
    aux_lm_weight: float = option(0.0, "Weight of the pretraining LM loss kept as an auxiliary objective on the task's inputs (GPT used 0.5).")
    aux_lm_decay: float = option(1.0, "Multiply --aux-lm-weight by this after every epoch (SiATL-style decay; 1 keeps it).")
    cvt_unlabeled: str | None = option(None, "Cross-view training (Clark et al., 2018) on this unlabeled text, one sentence per line (token-classification: whitespace-separated words): auxiliary heads on restricted views of the encoder learn to match the full model's predictions. classification and token-classification; BERT-style encoders (bert, roberta).")
    cvt_ratio: float = option(1.0, "Cross-view training: unlabeled batches per labeled batch (each one optimizer step; fractions alternate unevenly, 0.5 is one every other labeled batch).")
    cvt_views: str | None = option(None, "Cross-view training: comma-separated views [default: forward,backward,future,past for token-classification; first-half,second-half,word-dropout for classification].")
    clip_norm: float = option(1.0, "Clip the global gradient norm (0 disables).")
    max_len: int = option(128, "Tokens per input sequence, special tokens included (longer inputs are truncated).")
    doc_stride: int = option(128, "Question answering: tokens from one passage window's start to the next's (at most a full window, so windows overlap by the rest).")
    max_answer_len: int = option(30, "Question answering: the longest answer, in tokens, that decoding may pick.")
    source_file: str | None = option(None, "seq2seq: training sources, one per line, line-aligned with --target-file (instead of a --train TSV/JSONL file).")
    target_file: str | None = option(None, "seq2seq: training targets, line i the target of line i of --source-file.")
    dev_source_file: str | None = option(None, "seq2seq: dev sources, line-aligned with --dev-target-file (instead of --dev).")
    dev_target_file: str | None = option(None, "seq2seq: dev targets, line-aligned with --dev-source-file.")
    max_source_len: int | None = option(None, "seq2seq: source tokens at most, start and end tokens included; longer sources are cut (counted on stderr) [default: --max-len].")
    max_target_len: int | None = option(None, "seq2seq: target tokens at most, start and end tokens included; longer targets are cut (counted on stderr), and generation stops there [default: --max-len].")
    label_smoothing: float = option(0.0, "seq2seq: label smoothing of the training loss (0.1 is usual; the dev loss stays plain cross-entropy).")
    num_beams: int = option(1, "seq2seq: beams when generating the dev outputs scored by BLEU and chrF (1: greedy).")
    target_mask_prob: float = option(0.7, "seq2seq with an encoder (BERT, as UniLM): share of each target's tokens replaced by [MASK] and predicted in training (UniLM used 0.7).")
    errors: str = option("report", "Rows ptm can use only in part (a seq2seq source or target over its --max-*-len, a "
                         "SQuAD answer not at its answer_start): report (cut the row, or drop the answer, and count them) "
                         "or strict (stop at the first, naming its line).", choices=("report", "strict"))
    metric: str | None = option(None, "Dev metric for early stopping and the best checkpoint [default: accuracy, pearson, entity f1, SQuAD f1, or BLEU for seq2seq].")
    patience: int = option(0, "Stop after this many evaluations without dev improvement (0: never stop early).")
    eval_every: int = option(0, "Evaluate on --dev every N steps [default: once per epoch].")
    save_every: int = option(0, "Save a resumable checkpoint every N steps (0: at the end only).")
    keep_last: int = options.keep_last(1)
    log_every: int = option(20, "Log training metrics every N steps.")
    seed: int = option(0, "Seed for the head's initialisation, data order and dropout.")
    device: str = options.device()
    precision: str = options.precision("fp32, bf16 or fp16 (CUDA).")
    threads: int | None = options.threads()
    resume: str | None = option(None, "Continue an interrupted finetuning run (its run directory or a checkpoint).")
    tensorboard: bool = options.tensorboard()
    progress: bool | None = options.progress()
    config: str | None = options.config_file()
