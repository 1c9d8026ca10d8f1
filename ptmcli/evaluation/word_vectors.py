"""``ptm eval --probe similarity|analogy``: intrinsic evaluation of word vectors.

The vectors come from ``--checkpoint``: a word2vec, GloVe or fastText .vec
file read directly (``ptmcli.static.vector_files``), or a checkpoint of any
family through its input embeddings (``token_words``; a fastText checkpoint's
n-gram table gives words outside its vocabulary vectors) or, with
``--contextual-from FILE``, its top layer averaged over a text
(``contextual_words``). The test file is read before the vectors, so a bad
line fails at once. Results: a table on stderr, ``--json`` one object on stdout.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ptmcli.errors import PtmError
from ptmcli.evaluation.config import EvalConfig
from ptmcli.static.analogy import METHODS, read_analogies
from ptmcli.static.similarity import read_similarity_pairs
from ptmcli.static.word_table import WordTable

SIMILARITY, ANALOGY = "similarity", "analogy"
DEFAULT_RESTRICT = 30000
_METHOD_NAMES = {"3cosadd": "3CosAdd", "3cosmul": "3CosMul"}


def run_probe(cfg: EvalConfig, device) -> dict:
    """Evaluate ``cfg.checkpoint``'s word vectors on ``cfg.data``; returns the result it reports."""
    if cfg.data is None:
        raise PtmError(f"--probe {cfg.probe} needs --data FILE: "
                       + ("word pairs with scores (WordSim-353, SimLex-999)" if cfg.probe == SIMILARITY
                          else "analogy questions (questions-words.txt)"))
    if cfg.sample:
        raise PtmError("--sample generates text; it does not go with --probe")
    if cfg.restrict is not None and cfg.probe != ANALOGY:
        raise PtmError("--restrict applies to --probe analogy")
    if cfg.restrict is not None and cfg.restrict < 0:
        raise PtmError(f"--restrict {cfg.restrict}: must be 0 (every word) or positive")
    if cfg.batch_size < 1:
        raise PtmError(f"--batch-size {cfg.batch_size}: must be positive")
    started = time.perf_counter()
    restrict = DEFAULT_RESTRICT if cfg.restrict is None else cfg.restrict
    if cfg.probe == SIMILARITY:
        from ptmcli.static.similarity import evaluate_similarity

        pairs = read_similarity_pairs(cfg.data)
        table, source = open_word_table(cfg, {w for p in pairs.pairs for w in (p.first, p.second)}, None, device)
        result = evaluate_similarity(pairs, table)
    else:
        from ptmcli.static.analogy import evaluate_analogies

        questions = read_analogies(cfg.data)
        table, source = open_word_table(cfg, {w for q in questions.questions for w in q}, restrict or None, device)
        result = evaluate_analogies(questions, table, restrict or None)
    result = {**result, **source, "seconds": round(time.perf_counter() - started, 3)}
    report(result, cfg.json)
    return result


def open_word_table(cfg: EvalConfig, needed: set[str], rows_needed: int | None, device) -> tuple[WordTable, dict]:
    """The vectors of ``cfg.checkpoint`` as a table, and what to report about where they came from.

    ``rows_needed``: only that many rows of a vector file are read (analogy's --restrict).
    """
    path = Path(cfg.checkpoint)
    if path.is_file():
        from ptmcli.static.vector_files import FORMAT_NAMES, read_vectors

        if cfg.contextual_from:
            raise PtmError(f"--contextual-from needs a checkpoint whose layers read text; {path} is a file of static vectors")
        vectors = read_vectors(path, limit=rows_needed)
        return WordTable(vectors.words, vectors.vectors, cfg.lowercase), \
            {"vectors": str(path), "vector_format": FORMAT_NAMES[vectors.format]}

    from ptmcli.checkpoint.loading import load_checkpoint
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.evaluation.token_words import TokenWordTable

    loaded = load_checkpoint(open_checkpoint(cfg.checkpoint), device)
    embeddings = loaded.family.input_embeddings(loaded.model).detach().float().cpu().numpy()
    tokens = TokenWordTable(loaded.tokenizer, embeddings, cfg.lowercase, loaded.family.subwords(loaded.model))
    source: dict[str, Any] = {"checkpoint": str(loaded.path), "arch": loaded.arch}
    if not cfg.contextual_from:
        return tokens, {**source, "vectors": "input embeddings"}
    table, counts = _contextual_table(cfg, loaded, needed, tokens.lowercase, device)
    return table, {**source, "vectors": f"top layer, mean over occurrences in {cfg.contextual_from}", **counts}


def _contextual_table(cfg: EvalConfig, loaded, needed: set[str], lowercase: bool, device) -> tuple[WordTable, dict]:
    from ptmcli.evaluation.contextual_words import OCCURRENCES_PER_WORD, contextual_vectors
    from ptmcli.evaluation.language_model import resolve_context

    found = contextual_vectors(loaded, needed, cfg.contextual_from, lowercase=lowercase,
                               context=resolve_context(loaded, cfg.context), batch_size=cfg.batch_size,
                               device=device, precision=cfg.precision, fmt=cfg.format, text_field=cfg.text_field,
                               errors=cfg.errors, split=cfg.split_sentences)
    counts = {"contextual_words": len(found.words), "contextual_occurrences": sum(found.occurrences.values()),
              "occurrences_per_word_cap": OCCURRENCES_PER_WORD, "contextual_sentences_run": found.sentences_run}
    return WordTable(found.words, found.vectors, lowercase), counts


# -- reporting ---------------------------------------------------------------------------------------


def report(result: dict, as_json: bool) -> None:
    from ptmcli.evaluation.results import print_json, print_table

    if result["probe"] == ANALOGY:
        _print_analogy_table(result)
    else:
        print_table(result, "ptm eval: word similarity")
    if as_json:
        print_json(result)


def _percent(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def _print_analogy_table(result: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    title = (f"ptm eval: word analogies, {result['answered']:,} of {result['questions']:,} questions answered "
             f"({result['skipped']:,} skipped: a word outside the {result['restrict']:,} most frequent)")
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("section")
    table.add_column("questions", justify="right")
    table.add_column("skipped", justify="right")
    for method in METHODS:
        table.add_column(_METHOD_NAMES[method], justify="right")
    for section in result["sections"]:
        table.add_row(section["section"] or "(no section)", f"{section['questions']:,}", f"{section['skipped']:,}",
                      *(_percent(section[m]) for m in METHODS))
    table.add_section()
    for kind in ("semantic", "syntactic"):
        mine = [s for s in result["sections"] if s["kind"] == kind]
        table.add_row(kind, f"{sum(s['questions'] for s in mine):,}", f"{sum(s['skipped'] for s in mine):,}",
                      *(_percent(result[m][f"{kind}_accuracy"]) for m in METHODS), style="bold")
    table.add_row("all", f"{result['questions']:,}", f"{result['skipped']:,}",
                  *(_percent(result[m]["accuracy"]) for m in METHODS), style="bold")
    Console(stderr=True).print(table)
