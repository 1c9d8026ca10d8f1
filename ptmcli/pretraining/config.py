"""Everything ``ptm pretrain`` can be told, as one frozen dataclass.

The same fields are command-line flags (``--batch-size``) and config-file keys
(``batch_size = 32``); the run's values are saved in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option
from ptmcli.pretraining.objective_table import families, help_text
from ptmcli.training import options
from ptmcli.training.options import TrainingOptions

MODEL_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings", "hidden_dropout", "attention_dropout",
                "embedding_size", "share", "generator_size")


@dataclass(frozen=True)
class PretrainConfig(TrainingOptions):
    arch: str = option("bert", "Model family to pretrain.", choices=families())
    objective: str | None = option(None, help_text())
    data: str | None = option(None, "Shard directory from `ptm tokenize encode`. Omit to use the sample corpus bundled with ptm.")
    tokenizer: str | None = option(None, "Tokenizer directory the shards were encoded with (default: the one recorded in the shard manifest).")
    out: str | None = options.out("checkpoints/, metrics.jsonl, run.json")
    overwrite: bool = options.overwrite()
    preset: str | None = option(None, "Model size preset: bert-tiny ... bert-large, gpt-tiny, gpt-mini, gpt-small, gpt1, gpt2-124m ... gpt2-1.5b, elmo-small, elmo-mini, elmo-original, albert-tiny, albert-mini, albert-base ... albert-xxlarge, electra-tiny, electra-mini, electra-small, electra-base [default: bert-mini, gpt-mini, elmo-mini, albert-mini or electra-mini].")
    hidden_size: int | None = option(None, "Override the preset's hidden size.")
    num_layers: int | None = option(None, "Override the preset's number of Transformer layers.")
    num_heads: int | None = option(None, "Override the preset's number of attention heads.")
    intermediate_size: int | None = option(None, "Override the preset's feed-forward size.")
    max_position_embeddings: int | None = option(None, "Override the number of learned positions (>= --seq-len).")
    hidden_dropout: float | None = option(None, "Override the dropout on hidden states.")
    attention_dropout: float | None = option(None, "Override the dropout on attention probabilities.")
    embedding_size: int | None = option(None, "ALBERT, ELECTRA: override the preset's embedding width E (projected to the hidden size).")
    generator_size: float | None = option(None, "ELECTRA: the generator's hidden size as a fraction of the discriminator's, in (0, 1]; same depth [default: the preset's, 0.25].")
    share: str | None = option(None, "ALBERT: what the layers share across depth [default: all].", choices=("all", "attention", "ffn", "none"))
    seq_len: int = option(128, "Tokens per training example, special tokens included.")
    batch_size: int = option(32, "Examples per micro-batch (per device).")
    grad_accum: int = option(1, "Micro-batches per optimizer step; the loss is normalised by the predicted tokens of all of them.")
    lr: float = option(1e-4, "Peak learning rate.")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    adam_beta2: float = option(0.999, "AdamW beta2 (RoBERTa used 0.98).")
    warmup_steps: int | None = option(None, "Linear warmup steps [default: 5% of --max-steps].")
    max_steps: int = option(1000, "Optimizer steps to train for.")
    max_time: str | None = option(None, "Stop (with a checkpoint) after this much training time, e.g. 90m or 1.5h, counted over the whole run: a resumed run adds to the time it has already trained.")
    schedule: str = option("linear", "Decay after warmup.", choices=("linear", "cosine", "constant"))
    clip_norm: float = option(1.0, "Clip the global gradient norm to this (0 disables).")
    mask_prob: float = option(0.15, "Fraction of tokens the MLM objective predicts.")
    whole_word_mask: bool = option(False, "Mask whole words (all sub-tokens of a word together), using the shards' word boundaries.")
    disc_weight: float = option(50.0, "ELECTRA (--objective rtd): weight of the discriminator's loss against the generator's MLM loss.")
    ngram_mask: int = option(1, "Mask spans of 1..N whole words, lengths drawn with probability proportional to 1/n, as ALBERT (which used 3); 1: single tokens or words.")
    short_seq_prob: float = option(0.1, "NSP and SOP: probability of a shorter target length, as in BERT.")
    eval_every: int = option(0, "Evaluate on held-out data every N steps (0: only at the end).")
    eval_rows: int = option(200, "Documents held out of the training shards for evaluation.")
    eval_batches: int = option(20, "Batches per evaluation.")
    eval_data: str | None = option(None, "Another shard directory to evaluate on as well (same tokenizer).")
    save_every: int = option(0, "Save a resumable checkpoint every N steps (0: only at the end).")
    keep_last: int = options.keep_last(3)
    log_every: int = option(10, "Log metrics every N steps.")
    seed: int = option(0, "Seed for initialisation, data order, masking and dropout.")
    device: str = options.device()
    precision: str = options.precision("fp32, bf16 (autocast; fast on CPUs with AVX-512 BF16 and on GPUs) or fp16 (CUDA, with loss scaling).")
    compile: bool = option(False, "torch.compile the encoder (minutes to compile; meant for GPUs, not faster than eager on the CPUs measured). Batches are padded to --seq-len so shapes stay fixed.")
    threads: int | None = options.threads()
    fsdp: bool = option(False, "Under torchrun: shard parameters, gradients and optimizer state across the processes (FSDP), for models too big for one device. Checkpoints are gathered into the usual single directory.")
    peak_tflops: float | None = option(None, "Device peak TFLOP/s for the MFU figure [default: known GPUs; measured matmul peak on CPU].")
    init_from: str | None = option(None, "Start from this checkpoint's weights (continued pretraining / domain adaptation, e.g. a converted Hugging Face BERT): its architecture and shape are used, the shards must use its tokenizer; optimizer and data order start fresh.")
    resume: str | None = option(None, "Continue a run: a run directory (its latest checkpoint) or a checkpoint directory.")
    progress: bool | None = options.progress()
    config: str | None = options.config_file()

    def model_overrides(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_FIELDS if getattr(self, name) is not None}
