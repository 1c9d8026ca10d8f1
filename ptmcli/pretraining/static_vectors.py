"""``ptm pretrain --arch word2vec|fasttext|glove|nnlm``: static word vectors from word-level shards.

The engines (``ptmcli.static``) are not batched gradient steps over a model,
so these objectives train the run themselves (``Objective.own_loop``) instead
of handing a task to the shared loop. ``ENGINES`` has one row per family: the
function that trains it and the run settings it reads; any other setting given
on the command line is refused rather than ignored.

The run reads the shards (documents of word ids from a ``--model word``
tokenizer), counts the words, keeps those seen ``--min-count`` times (special
tokens never), renumbered most frequent first, and trains. It writes
``run.json``, ``metrics.jsonl`` (one line per epoch) and one checkpoint,
``checkpoints/step-<epochs>``. word2vec, fastText and GloVe write arch
``static``: the layout ``ptm convert`` makes of a word2vec file, fastText's with
its n-gram table besides (``ptmcli.models.static``). The NNLM writes arch
``nnlm``, the whole language model (``ptmcli.models.nnlm``), so ``ptm eval
--data`` scores text with it. Either way ``ptm eval --probe
similarity|analogy`` and ``ptm convert --to word2vec`` read the word rows. Its
tokenizer is the training one cut down to the kept words, with the unknown
token as the last row (a zero vector, or the NNLM's sentence-boundary row;
listed as added so exported files leave it out). Nothing is written until
training has finished.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptmcli.errors import PtmError

# Settings every static run may be given; each engine adds its own.
RUN_FIELDS = frozenset({"arch", "objective", "data", "tokenizer", "out", "overwrite", "seed", "device", "threads",
                        "progress", "config", "lr", "dim", "epochs", "min_count"})
_WINDOWED = ("window", "negative", "hs", "sample", "workers")
_ENCODE_HINT = ("ptm tokenize train FILE --model word -o TOK, then ptm tokenize encode FILE --tokenizer TOK "
                "-o SHARDS")


@dataclass
class StaticRun:
    """What an engine gets: the run config, the flags given, the kept vocabulary and a fresh pass over the text."""

    cfg: Any
    explicit: set[str]
    vocab: Any  # ptmcli.static.vocab.Vocabulary
    sentences: Callable[[], Iterable[np.ndarray]]
    held_out: Callable[[], Iterable[np.ndarray]] | None
    progress: Callable[[Any], None] | None

    def given(self, **names: str) -> dict[str, Any]:
        """Engine settings (by their engine name) from the run fields that were set."""
        return {engine: getattr(self.cfg, field) for engine, field in names.items() if getattr(self.cfg, field) is not None}

    def learning_rate(self) -> float | None:
        """--lr when given; the shared default (1e-4, for transformers) would not fit these engines."""
        return self.cfg.lr if "lr" in self.explicit else None


@dataclass
class Trained:
    arch: str  # the checkpoint's family
    model: dict[str, Any]  # its config.json "model"
    weights: dict[str, Any]  # its tensors; the word rows first, the unknown token's row last
    dim: int
    epoch_losses: list[float]
    seconds: float
    metrics: dict[str, float]  # reported beside the loss (words/s, held-out perplexity)


def _static(vectors: np.ndarray, subwords: dict[str, Any] | None = None,
            ngrams: np.ndarray | None = None) -> tuple[str, dict[str, Any], dict[str, Any], int]:
    """A ``static`` checkpoint of word vectors: a zero row for the unknown token, and fastText's n-gram table."""
    import torch

    from ptmcli.models.static import FAMILY, NGRAMS, VECTORS

    dim = int(vectors.shape[1])
    rows = np.concatenate([np.asarray(vectors, dtype=np.float32), np.zeros((1, dim), dtype=np.float32)])
    model = {"vocab_size": int(rows.shape[0]), "hidden_size": dim, "num_layers": 0, **(subwords or {})}
    weights = {VECTORS: torch.from_numpy(rows)}
    if ngrams is not None:
        weights[NGRAMS] = torch.from_numpy(np.ascontiguousarray(ngrams, dtype=np.float32))
    return FAMILY.name, model, weights, dim


def _word2vec_like(run: StaticRun, module: str, settings_class: str, checkpoint_of: Callable[[Any], tuple],
                   extra: dict[str, str]) -> Trained:
    import importlib

    engine = importlib.import_module(module)
    lr = run.learning_rate()
    settings = getattr(engine, settings_class)(
        architecture=run.cfg.objective, seed=run.cfg.seed, device=run.cfg.device,
        **({"alpha": lr} if lr is not None else {}),
        **run.given(dim="dim", window="window", negative="negative", hierarchical_softmax="hs", epochs="epochs",
                    sample="sample", workers="workers", **extra))
    result = engine.train(run.sentences, run.vocab, settings, run.progress)
    return Trained(*checkpoint_of(result), result.epoch_losses, result.seconds,
                   {"words_per_s": round(result.words_per_second, 1)})


def _word2vec(run: StaticRun) -> Trained:
    return _word2vec_like(run, "ptmcli.static.word2vec", "Word2VecSettings", lambda r: _static(r.vectors), {})


def _fasttext_checkpoint(result) -> tuple:
    """The word vectors and the n-gram table with what finds a word's rows in it, so unseen words get vectors."""
    from ptmcli.models.static import NGRAM_HASH

    settings = result.settings
    subwords = {"buckets": settings.buckets, "min_n": settings.min_n, "max_n": settings.max_n, "ngram_hash": NGRAM_HASH}
    return _static(result.word_vectors, subwords, result.ngram_vectors)


def _fasttext(run: StaticRun) -> Trained:
    return _word2vec_like(run, "ptmcli.static.fasttext", "FastTextSettings", _fasttext_checkpoint,
                          {"buckets": "buckets", "min_n": "min_n", "max_n": "max_n"})


def _glove(run: StaticRun) -> Trained:
    from ptmcli.static import glove

    lr = run.learning_rate()
    settings = glove.GloveSettings(seed=run.cfg.seed, device=run.cfg.device,
                                   **({"learning_rate": lr} if lr is not None else {}),
                                   **run.given(dim="dim", window="window", epochs="epochs", x_max="x_max",
                                               power="alpha", workers="workers"))
    result = glove.train(run.sentences, run.vocab, settings, run.progress)
    return Trained(*_static(result.vectors), result.epoch_losses, result.seconds, {"cooccurrences": result.cooccurrences})


def _nnlm(run: StaticRun) -> Trained:
    from ptmcli.static import nnlm

    lr = run.learning_rate()
    settings = nnlm.NNLMSettings(seed=run.cfg.seed, device=run.cfg.device,
                                 **({"learning_rate": lr} if lr is not None else {}),
                                 **run.given(dim="dim", context="window", hidden="hidden_size", epochs="epochs"),
                                 **({"batch_size": run.cfg.batch_size} if "batch_size" in run.explicit else {}))
    result = nnlm.train(run.sentences, run.vocab, settings, run.progress)
    metrics: dict[str, float] = {"ppl": float(np.exp(result.epoch_losses[-1]))}
    if run.held_out is not None:
        loss, ppl = nnlm.evaluate(result.model, run.held_out(), run.vocab, settings)
        metrics.update(heldout_loss=loss, heldout_ppl=ppl)
    # The whole model, so that ptm eval scores text with it; its boundary row sits where the unknown token's id is.
    from ptmcli.models.nnlm import FAMILY

    weights = {k: v.detach().float().cpu().contiguous() for k, v in result.model.state_dict().items()}
    return Trained(FAMILY.name, result.model.config.to_dict(), weights, settings.dim, result.epoch_losses,
                   result.seconds, metrics)


@dataclass(frozen=True)
class Engine:
    train: Callable[[StaticRun], Trained]
    fields: tuple[str, ...]
    """Run settings it reads besides ``RUN_FIELDS``."""
    holds_out: bool = False
    """Whether --eval-rows documents are held out and scored (a language model)."""


ENGINES: dict[str, Engine] = {
    "word2vec": Engine(_word2vec, _WINDOWED),
    "fasttext": Engine(_fasttext, (*_WINDOWED, "buckets", "min_n", "max_n")),
    "glove": Engine(_glove, ("window", "x_max", "alpha", "workers")),
    "nnlm": Engine(_nnlm, ("window", "hidden_size", "batch_size", "eval_rows"), holds_out=True),
}


def train(cfg, explicit: set[str], resolve_data: Callable[[Any], tuple[str, str]]) -> dict:
    """The whole run (``Objective.own_loop``); returns the final metrics with the checkpoint path."""
    if cfg.arch not in ENGINES:
        raise PtmError(f"--arch {cfg.arch}: no static-vector engine trains it (choose from {', '.join(ENGINES)})")
    engine = ENGINES[cfg.arch]
    _refuse_other_fields(cfg, explicit, engine)
    _check_values(cfg)
    if cfg.data is None:
        raise PtmError(f"--arch {cfg.arch} needs --data SHARDS encoded with a word-level tokenizer ({_ENCODE_HINT})")
    from ptmcli.training.run_dir import check_run_dir

    run_dir = check_run_dir(cfg.out, cfg.overwrite, resuming=False)
    data_dir, tokenizer_dir = resolve_data(cfg)
    cfg = dataclasses.replace(cfg, data=str(Path(data_dir).absolute()), tokenizer=str(Path(tokenizer_dir).absolute()))

    import torch

    from ptmcli.data.shards import ShardDataset
    from ptmcli.pretraining.examples import split_rows
    from ptmcli.static.corpus import sentences_of_rows
    from ptmcli.static.vocab import Vocabulary, count_words
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    if cfg.threads is not None:
        if cfg.threads <= 0:
            raise PtmError(f"--threads {cfg.threads}: must be positive")
        torch.set_num_threads(cfg.threads)
    tokenizer = PtmTokenizer.load(tokenizer_dir)
    if not tokenizer.word_level:
        raise PtmError(f"--arch {cfg.arch} trains one vector per word, but {tokenizer_dir} is a {tokenizer.kind} "
                       f"tokenizer (sub-word pieces); encode the text with a word-level one: {_ENCODE_HINT}")
    dataset = ShardDataset.open(data_dir, verify=True)
    dataset.check_tokenizer(tokenizer)
    rows, held = split_rows(len(dataset), cfg.eval_rows) if engine.holds_out else (np.arange(len(dataset)), [])

    def over(chosen) -> Callable[[], Iterable[np.ndarray]]:
        return lambda: sentences_of_rows(dataset[int(i)] for i in chosen)

    counts = count_words(over(rows)(), tokenizer.vocab_size)
    counts[[i for i in tokenizer.all_special_ids if i < counts.size]] = 0  # [UNK], [PAD]... are not words
    words = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    min_count = cfg.min_count if cfg.min_count is not None else 5
    vocab = Vocabulary.from_counts(counts, min_count, None, words)
    say = _Reporter(cfg)
    say(f"ptm: training {cfg.arch} ({cfg.objective}) on {data_dir}: {len(vocab):,} words seen at least {min_count} "
        f"times, {vocab.total:,} words of text -> {run_dir}")
    run = StaticRun(cfg, explicit, vocab, over(rows), over(held) if len(held) else None, say.progress)
    trained = engine.train(run)
    return _save(cfg, run_dir, tokenizer, tokenizer_dir, dataset, vocab, trained, say)


def _refuse_other_fields(cfg, explicit: set[str], engine: Engine) -> None:
    allowed = RUN_FIELDS | set(engine.fields)
    flags = {f.name: f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in dataclasses.fields(cfg)}
    for name in sorted(explicit):
        if name in flags and name not in allowed:
            accepted = " ".join(flags[n] for n in flags if n in allowed and n not in ("arch", "objective", "config"))
            raise PtmError(f"{flags[name]} does not apply to --arch {cfg.arch} (it takes {accepted})")


def _check_values(cfg) -> None:
    at_least = {"dim": 1, "window": 1, "epochs": 1, "min_count": 1, "negative": 0, "buckets": 1, "min_n": 1,
                "max_n": 0, "workers": 0, "hidden_size": 0, "batch_size": 1, "eval_rows": 0}
    flags = {f.name: f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in dataclasses.fields(cfg)}
    for name, low in at_least.items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise PtmError(f"{flags[name]} {value}: must be {'positive' if low == 1 else 'at least ' + str(low)}")
    for name in ("x_max", "alpha", "lr"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise PtmError(f"{flags[name]} {getattr(cfg, name)}: must be positive")
    if cfg.sample is not None and cfg.sample < 0:
        raise PtmError(f"--sample {cfg.sample}: must not be negative (0 keeps every word)")
    if cfg.negative == 0 and not cfg.hs:
        raise PtmError("--negative 0 leaves no output layer: add --hs for hierarchical softmax, or keep negative sampling")


class _Reporter:
    """Lines on stderr: the banner, progress every few seconds (with --progress, or on a terminal), the end."""

    def __init__(self, cfg) -> None:
        self.enabled = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, line: str) -> None:
        print(line, file=sys.stderr)

    def progress(self, state) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < 5.0:
            return
        self.last = now
        self(f"ptm: epoch {state.epoch}/{state.epochs}, {100 * state.fraction:.0f}%, loss {state.loss:.4f}, "
             f"{state.per_second:,.0f}/s")


def _save(cfg, run_dir: Path, tokenizer, tokenizer_dir: str, dataset, vocab, trained: Trained, say) -> dict:
    from ptmcli.checkpoint import save_checkpoint, step_dir_name
    from ptmcli.textio.atomic import atomic_write_text
    from ptmcli.tokenization.word_level import restricted_word_tokenizer
    from ptmcli.training.run_dir import create_run_dir

    table = restricted_word_tokenizer(tokenizer, vocab.words)
    unknown = table.special_tokens["unk"]
    dim = trained.dim
    epochs = len(trained.epoch_losses)
    final = {"loss": trained.epoch_losses[-1], **trained.metrics, "words": len(vocab), "seconds": round(trained.seconds, 3)}
    config = {
        "arch": trained.arch, "model": trained.model,
        "objective": cfg.objective, "task": None,
        "tokenizer": {"sha256": table.sha256, "vocab_size": table.vocab_size},
        "training": {"arch": cfg.arch, "data": cfg.data, "data_sha256": dataset.fingerprint, "epochs": epochs,
                     "min_count": cfg.min_count if cfg.min_count is not None else 5, **final},
        # The unknown token's row is no word's vector: --to word2vec leaves it out, as for converted files.
        "converted_from": {"added_tokens": [unknown]},
    }
    create_run_dir(run_dir, resuming=False)
    atomic_write_text(run_dir / "run.json", json.dumps({"config": cfg.to_dict(), "data": cfg.data,
                                                        "tokenizer": cfg.tokenizer}, indent=2) + "\n")
    metrics = run_dir / "metrics.jsonl"
    lines = [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(trained.epoch_losses)]
    lines[-1].update(final)
    atomic_write_text(metrics, "".join(json.dumps(line) + "\n" for line in lines))
    target = run_dir / "checkpoints" / step_dir_name(epochs)
    with tempfile.TemporaryDirectory() as scratch:
        table.save(Path(scratch) / "tokenizer")
        save_checkpoint(target, config=config, weights=trained.weights,
                        tokenizer_dir=Path(scratch) / "tokenizer", metrics_file=metrics)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k not in ("words", "seconds"))
    say(f"ptm: done: {epochs} epochs, {len(vocab):,} words x {dim}, {shown} in {trained.seconds:.0f}s; "
        f"checkpoint {target}")
    return dict(final, checkpoint=str(target), step=epochs)
