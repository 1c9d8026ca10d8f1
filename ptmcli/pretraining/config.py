"""Everything ``ptm pretrain`` can be told, as one frozen dataclass.

The same fields are command-line flags (``--batch-size``) and config-file keys
(``batch_size = 32``); the run's values are saved in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import AUTO, option
from ptmcli.pretraining.mask_units import MASK_UNITS
from ptmcli.pretraining.objective_table import families, help_text
from ptmcli.training import options
from ptmcli.training.options import TrainingOptions

MODEL_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings", "hidden_dropout", "attention_dropout",
                "embedding_size", "share", "generator_size")
MODEL_FIELDS = (*MODEL_FIELDS, "mem_len")  # XLNet's memory length
MODEL_FIELDS = (*MODEL_FIELDS, "norm", "bias")  # the pre-LN and bias-free recipe switches (BERT, RoBERTa)
# Settings of the static word-vector trainers (--arch word2vec, fasttext, glove, nnlm) alone; None: not given.
STATIC_FIELDS = ("dim", "window", "negative", "hs", "epochs", "min_count", "sample", "buckets", "min_n", "max_n",
                 "x_max", "alpha", "workers")


@dataclass(frozen=True)
class PretrainConfig(TrainingOptions):
    arch: str = option("bert", "Model family to pretrain.", choices=families())
    objective: str | None = option(None, help_text())
    data: str | None = option(None, "Shard directory from `ptm tokenize encode`. Omit to use the sample corpus bundled with ptm.")
    tokenizer: str | None = option(None, "Tokenizer directory the shards were encoded with (default: the one recorded in the shard manifest).")
    out: str | None = options.out("checkpoints/, metrics.jsonl, run.json")
    overwrite: bool = options.overwrite()
    preset: str | None = option(None, "Model size preset: bert-tiny ... bert-large, gpt-tiny, gpt-mini, gpt-small, gpt1, gpt2-124m ... gpt2-1.5b, elmo-small, elmo-mini, elmo-original, albert-tiny, albert-mini, albert-base ... albert-xxlarge, electra-tiny, electra-mini, electra-small, electra-base, bart-tiny, bart-mini, bart-base, bart-large, cove-tiny, cove-small, cove-original, xlnet-tiny, xlnet-mini, xlnet-base [default: the family's mini preset; cove-small].")
    hidden_size: int | None = option(None, "Override the preset's hidden size.")
    num_layers: int | None = option(None, "Override the preset's number of Transformer layers.")
    num_heads: int | None = option(None, "Override the preset's number of attention heads.")
    intermediate_size: int | None = option(None, "Override the preset's feed-forward size.")
    max_position_embeddings: int | None = option(None, "Override the number of learned positions (>= --seq-len).")
    hidden_dropout: float | None = option(None, "Override the dropout on hidden states.")
    attention_dropout: float | None = option(None, "Override the dropout on attention probabilities.")
    embedding_size: int | None = option(None, "ALBERT, ELECTRA: override the preset's embedding width E (projected to the hidden size).")
    generator_size: float | None = option(None, "ELECTRA: the generator's hidden size as a fraction of the discriminator's, in (0, 1]; same depth [default: the preset's, 0.25].")
    mem_len: int | None = option(None, "XLNet: segment recurrence; each row of a batch follows one stream of text across steps and reads the last N states of every layer from its previous segment (docs/models.md) [default: none, each example alone].")
    share: str | None = option(None, "ALBERT: what the layers share across depth [default: all].", choices=("all", "attention", "ffn", "none"))
    norm: str | None = option(None, "BERT, RoBERTa: where each block's LayerNorms sit: post (after each residual sum, as BERT) or pre (before attention and the feed-forward network, plus one LayerNorm after the last block; the small-budget cramming recipe); GPT: the same choice for its blocks [default: post; GPT: the preset's].", choices=("post", "pre"))
    bias: bool | None = option(None, "BERT, RoBERTa: biases in the attention, feed-forward, LayerNorm, pooler and NSP layers; --no-bias drops them, as cramming BERT does (the MLM decoder keeps its bias) [default: on].")
    seq_len: int = option(128, "Tokens per training example, special tokens included.")
    batch_size: int = option(32, "Examples per micro-batch (per device); auto: the largest that fits the device's memory, found by trying it at the start, with --grad-accum set to reach --global-batch (both recorded as numbers).", named=(AUTO,))
    grad_accum: int = option(1, "Micro-batches per optimizer step; the loss is normalised by the predicted tokens of all of them.")
    global_batch: int | None = option(None, "--batch-size auto: examples per optimizer step, over all processes, made up by accumulating micro-batches [default: 256].")
    lr: float = option(1e-4, "Peak learning rate.")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    adam_beta2: float = option(0.999, "AdamW beta2 (RoBERTa used 0.98).")
    warmup_steps: int | None = option(None, "Linear warmup steps [default: 5% of --max-steps].")
    max_steps: int = option(1000, "Optimizer steps to train for.")
    max_time: str | None = option(None, "Stop (with a checkpoint) after this much training time, e.g. 90m or 1.5h, counted over the whole run: a resumed run adds to the time it has already trained.")
    schedule: str = option("linear", "Decay after warmup.", choices=("linear", "cosine", "constant"))
    budget: str | None = option(None, "Plan the run over this much wall-clock time, e.g. 30m or 1.5h: warmup and decay follow the elapsed share of it (linear: a one-cycle triangle), and the run stops before the step that would overrun it, then evaluates and saves; --max-steps only caps the steps then (unlimited unless given). A resumed run continues its budget.")
    budget_recipe: bool = option(True, "--budget: where these flags are not given, use the family's measured small-budget recipe (BERT, RoBERTa: --norm pre --no-bias --hidden-dropout 0 --attention-dropout 0 --lr 5e-4, and --mask-prob 0.3 for objectives that mask; docs/results.md); --no-budget-recipe keeps the usual defaults.")
    warmup_fraction: float = option(0.1, "--budget: share of the budget spent warming up.")
    batch_ramp: float = option(0.0, "--budget: share of the budget over which the global batch grows from one micro-batch to --grad-accum of them (0: the full batch from the start).")
    clip_norm: float = option(1.0, "Clip the global gradient norm to this (0 disables).")
    mask_prob: float = option(0.15, "Fraction of tokens the MLM objective predicts.")
    whole_word_mask: bool = option(False, "Mask whole words (all sub-tokens of a word together), using the shards' word boundaries.")
    disc_weight: float = option(50.0, "ELECTRA (--objective rtd): weight of the discriminator's loss against the generator's MLM loss; 0 trains the generator alone.")
    ngram_mask: int = option(1, "Mask spans of 1..N whole words, lengths drawn with probability proportional to 1/n, as ALBERT (which used 3); 1: single tokens or words.")
    mask_unit: str | None = option(None, "What MLM masks as one unit: token; word (whole words, as --whole-word-mask; Chinese words with shards encoded with --word-segmenter jieba); phrase or entity (ERNIE: the lines of --mask-lexicon matched over whole words, mixed with words) [default: token, or word with --whole-word-mask].", choices=tuple(MASK_UNITS))
    mask_lexicon: str | None = option(None, "--mask-unit phrase/entity: text file with one phrase or entity per line, matched longest first over the words of each document.")
    lexicon_mask_ratio: float = option(0.5, "--mask-unit phrase/entity: share of each row's masked tokens taken from lexicon units, the rest from whole words (all of it when a row has too few lexicon units).")
    short_seq_prob: float = option(0.1, "NSP and SOP: probability of a shorter target length, as in BERT.")
    infill_ratio: float = option(0.3, "BART (--objective denoise): share of words covered by text infilling: spans of whole words, Poisson(--poisson-lambda) long, each replaced by one mask token (a zero-length span inserts one).")
    poisson_lambda: float = option(3.5, "BART: mean length in words of the text-infilling spans.")
    mask_ratio: float = option(0.0, "BART: share of words whose every token is replaced by the mask token (token masking).")
    delete_ratio: float = option(0.0, "BART: share of words deleted from the source (token deletion).")
    permute_sentences: float = option(1.0, "BART: share of each example's sentences shuffled among their places (sentence permutation).")
    rotate_ratio: float = option(0.0, "BART: share of examples rotated to start at a random token (document rotation).")
    mask_random: float = option(0.1, "BART: share of the mask tokens (infilling and token masking) replaced by a random token instead.")
    plm_k: int = option(6, "XLNet (--objective plm): predict about 1/K of each example's tokens, the last of its sampled factorisation order, in spans of 1-5 tokens (the paper's K = 6).")
    noise_density: float = option(0.15, "T5 (--objective span-corruption): share of each example's tokens corrupted, in (0, 1).")
    mean_span_length: float = option(3.0, "T5 (--objective span-corruption): mean length in tokens of the corrupted spans, each replaced by one sentinel (at least 1).")
    mass_ratio: float = option(0.5, "MASS (--objective mass): share of each example's tokens in the one contiguous fragment masked in the encoder and predicted by the decoder, in (0, 1).")
    unilm_mix: str = option("1/3,1/6,1/6,1/3", "UniLM (--objective unilm): shares of the micro-batches trained under each attention regime, in the order bidirectional, left-to-right, right-to-left, sequence-to-sequence; four fractions or decimals (1/3 or 0.25) summing to 1 [default: the paper's 1/3,1/6,1/6,1/3].")
    teacher: str | None = option(None, "DistilBERT (--objective mlm-distill): the pretrained masked-LM checkpoint the student learns from, of --arch's family and the shards' tokenizer; frozen, not saved with the student.")
    init_from_teacher: bool = option(False, "--objective mlm-distill: start the student from the teacher's embeddings, heads and every other layer (student layer i from teacher layer i*Lt/Ls), as DistilBERT; needs the teacher's width and at most its layers.")
    distill_temperature: float = option(2.0, "--objective mlm-distill: softmax temperature T of the teacher's soft targets; their KL divergence is multiplied by T^2.")
    alpha_ce: float = option(5.0, "--objective mlm-distill: weight of the soft-target loss (KL to the teacher at the masked positions).")
    alpha_mlm: float = option(2.0, "--objective mlm-distill: weight of the student's own masked-LM cross-entropy.")
    alpha_cos: float = option(1.0, "--objective mlm-distill: weight of the cosine loss (1 - cos) between the student's and the teacher's last hidden states over the real tokens (needs equal widths; 0 turns it off).")
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
    dim: int | None = option(None, "Static vectors: width of each word vector [default: 100].")
    window: int | None = option(None, "word2vec, fastText: largest distance from a word to its context words (each word draws 1..N), 5 unless given; GloVe: words counted either side, weighted 1/distance, 10 unless given; NNLM: previous words the model reads, 4 unless given.")
    negative: int | None = option(None, "word2vec, fastText: noise words per window for negative sampling; 0 with --hs for hierarchical softmax alone [default: 5].")
    hs: bool | None = option(None, "word2vec, fastText: train a hierarchical softmax (alone with --negative 0, else beside negative sampling) [default: off].")
    epochs: int | None = option(None, "Static vectors: passes over the corpus [default: 5; GloVe 25].")
    min_count: int | None = option(None, "Static vectors: train only words seen this often; rarer words are dropped from the text [default: 5].")
    sample: float | None = option(None, "word2vec, fastText: frequent-word subsampling threshold; 0 keeps every word [default: 1e-3].")
    buckets: int | None = option(None, "fastText: hash buckets for the character n-grams [default: 2000000].")
    min_n: int | None = option(None, "fastText: shortest character n-gram [default: 3].", flag="--minn")
    max_n: int | None = option(None, "fastText: longest character n-gram; below --minn, words alone [default: 6].", flag="--maxn")
    x_max: float | None = option(None, "GloVe: co-occurrence count at which an entry's weight reaches 1 [default: 100].")
    alpha: float | None = option(None, "GloVe: exponent of the weighting function (x / x_max) ** alpha [default: 0.75].")
    workers: int | None = option(None, "word2vec, fastText, GloVe: processes updating the shared vectors; 0: one per CPU [default: 0].")
    init_vectors: str | None = option(None, "CoVe (--objective translation): the static word vectors its encoder reads, frozen: a ptm glove/word2vec checkpoint or a converted .vec file (ptm convert); encode the source side with its tokenizer.")
    init_from: str | None = option(None, "Start from this checkpoint's weights (continued pretraining / domain adaptation, e.g. a converted Hugging Face BERT): its architecture and shape are used, the shards must use its tokenizer; optimizer and data order start fresh.")
    resume: str | None = option(None, "Continue a run: a run directory (its latest checkpoint) or a checkpoint directory.")
    tensorboard: bool = options.tensorboard()
    progress: bool | None = options.progress()
    config: str | None = options.config_file()

    def model_overrides(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_FIELDS if getattr(self, name) is not None}
