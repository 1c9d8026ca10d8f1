"""``ptm eval``: open a checkpoint and measure it, by what the checkpoint is.

- a finetuned checkpoint (``config.json`` "task" set): labeled metrics (``ptmcli.evaluation.labeled``);
- a pretrained language model with ``--data``: perplexity and kin (``ptmcli.evaluation.language_model``);
- a causal language model with ``--sample``: generated continuations (``ptmcli.evaluation.sampling``);
- ``--probe similarity|analogy``: word vectors of a checkpoint or a vector file (``ptmcli.evaluation.word_vectors``).

Metrics go to stderr as a table and, with ``--json``, to stdout as one JSON object.
"""

from __future__ import annotations

from ptmcli.errors import PtmError
from ptmcli.evaluation.config import EvalConfig
from ptmcli.tasks import SEQ2SEQ


def run(cfg: EvalConfig) -> dict | None:
    """Carry out ``cfg``; returns the metrics of a ``--data`` evaluation (None for ``--sample``)."""
    import torch

    from ptmcli.checkpoint import read_config
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.runtime.device import check_precision, resolve_device

    if not cfg.checkpoint:
        raise PtmError("--checkpoint is required: a checkpoint directory or a run directory")
    if cfg.probe is None:
        for flag, value in (("--restrict", cfg.restrict), ("--contextual-from", cfg.contextual_from), ("--lowercase", cfg.lowercase)):
            if value is not None:
                raise PtmError(f"{flag} applies to --probe similarity|analogy")
        if cfg.data is None and not cfg.sample and not (cfg.source_file or cfg.target_file):
            raise PtmError("nothing to do: give --data FILE to score text, or --sample PROMPT to generate (gpt)")
        if cfg.data is not None and cfg.sample:
            raise PtmError("give either --data (scoring) or --sample (generation), not both")
    if cfg.num_beams is not None and cfg.num_beams < 1:
        raise PtmError(f"--num-beams {cfg.num_beams}: must be at least 1")
    if cfg.part is not None and cfg.probe is not None:
        raise PtmError("--part applies to scoring --data, not to --probe (the input embeddings are shared)")
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise PtmError(f"--threads {cfg.threads}: must be positive")
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    if cfg.probe is not None:
        from ptmcli.evaluation.word_vectors import run_probe

        return run_probe(cfg, device)

    checkpoint = open_checkpoint(cfg.checkpoint)
    from ptmcli.finetuning.multitask_checkpoint import select_head

    config = select_head(read_config(checkpoint), cfg.head, f"--checkpoint {cfg.checkpoint}")
    seq2seq_flags = [flag for flag, value in (("--source-file", cfg.source_file), ("--target-file", cfg.target_file),
                                              ("--num-beams", cfg.num_beams), ("--metrics", cfg.metrics)) if value is not None]
    if seq2seq_flags and (config.get("task") or {}).get("type") != SEQ2SEQ:
        raise PtmError(f"{seq2seq_flags[0]} applies to a checkpoint finetuned with --task seq2seq; {checkpoint} is not one")
    if config.get("task") is not None and cfg.part is not None:
        raise PtmError(f"--part {cfg.part}: {checkpoint} is a finetuned {config['task'].get('type')} model, one network")
    if config.get("task") is not None:
        from ptmcli.evaluation.labeled import evaluate_labeled
        from ptmcli.tasks.readers import UnlabeledData

        try:
            metrics = evaluate_labeled(checkpoint, config, cfg)
        except UnlabeledData as err:
            raise PtmError(f"{err}; eval scores labeled data: for predictions on unlabeled text use "
                           f"ptm predict -c {cfg.checkpoint} {cfg.data}") from None
        return _report(metrics, cfg)

    from ptmcli.checkpoint.loading import load_checkpoint

    loaded = _part(load_checkpoint(checkpoint, device, note_initialised=cfg.part is None), cfg.part)
    if cfg.sample:
        from ptmcli.evaluation.sampling import run_samples

        run_samples(loaded, cfg, device)
        return None
    from ptmcli.evaluation.language_model import evaluate_language_model

    metrics = evaluate_language_model(loaded, cfg, device)
    if cfg.part is not None:
        items = list(metrics.items())
        after_arch = [key for key, _ in items].index("arch") + 1
        metrics = dict([*items[:after_arch], ("part", cfg.part), *items[after_arch:]])
    return _report(metrics, cfg)


def _part(loaded, name: str | None):
    """The checkpoint as ``--part name`` reads it: the whole model for its default part, else the family's view."""
    from ptmcli.checkpoint.loading import select_part

    return select_part(loaded, name, "nothing to score with")


def _report(metrics: dict, cfg: EvalConfig) -> dict:
    from ptmcli.evaluation.results import print_json, print_table

    print_table(metrics, f"ptm eval: {metrics.get('metric', 'metrics')}")
    if cfg.json:
        print_json(metrics)
    return metrics
