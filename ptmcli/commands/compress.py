"""``ptm compress``: a smaller checkpoint for deployment, by head pruning, int8 weights, or both (docs/compress.md).

The output is a checkpoint like any other: ``--prune-heads`` writes an fp32
checkpoint with fewer heads (``heads_per_layer`` in its model config);
``--quantize int8`` writes int8 Linear weights with their scales (config.json
``"quantization"``), which ``ptm eval``, ``extract-features``, ``predict`` and
``finetune --mode features`` load as torch's dynamic int8 Linears. Pruning runs
first (its importances need gradients), then ``--recover-steps`` finetuning of a
pruned finetuned checkpoint (through ptm finetune, commands/compress_recovery.py), then
quantization. Every tensor the
source holds is carried over: only the pruned and quantized ones change.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ptmcli.errors import PtmError

QUANTIZE_METHODS = ("int8",)
QUANTIZABLE = ("bert", "roberta", "distilbert", "gpt")
"""Families whose Linears are only ever called as modules (an int8 Linear has no ``.weight`` to read)."""
PRUNE_TASKS = ("classification", "pair-classification", "regression", "multiple-choice", "token-classification")


@dataclass(frozen=True)
class CompressConfig:
    checkpoint: str
    out: str
    quantize: str | None = None
    scheme: str = "per-channel"
    prune_heads: float | None = None
    data: str | None = None
    batch_size: int = 32
    max_len: int = 128
    max_examples: int | None = None
    seed: int = 0
    threads: int | None = None
    recover_steps: int | None = None
    recover_lr: float | None = None


def check_flags(cfg: CompressConfig) -> None:
    """Refuse impossible flags before anything is read."""
    from ptmcli.compress.quantize import SCHEMES

    if cfg.quantize is None and cfg.prune_heads is None:
        raise PtmError("nothing to do: give --quantize int8, --prune-heads FRACTION --data FILE, or both")
    if cfg.quantize is not None and cfg.quantize not in QUANTIZE_METHODS:
        raise PtmError(f"--quantize {cfg.quantize}: choose one of {', '.join(QUANTIZE_METHODS)}")
    if cfg.scheme not in SCHEMES:
        raise PtmError(f"--scheme {cfg.scheme}: choose one of {', '.join(SCHEMES)}")
    if cfg.prune_heads is not None:
        if not 0.0 <= cfg.prune_heads < 1.0:
            raise PtmError(f"--prune-heads {cfg.prune_heads}: the fraction of heads to remove must be in [0, 1)")
        if not cfg.data:
            raise PtmError("--prune-heads needs --data FILE: the labeled data (finetuned checkpoint) or text "
                           "(pretrained checkpoint) whose loss ranks the heads")
    elif cfg.data:
        raise PtmError("--data applies to --prune-heads")
    if cfg.recover_steps is not None:
        if cfg.prune_heads is None:
            raise PtmError("--recover-steps finetunes a pruned model: it needs --prune-heads FRACTION --data FILE")
        if cfg.recover_steps < 1:
            raise PtmError(f"--recover-steps {cfg.recover_steps}: must be at least 1")
    elif cfg.recover_lr is not None:
        raise PtmError("--recover-lr applies to --recover-steps")
    if cfg.recover_lr is not None and not cfg.recover_lr > 0:
        raise PtmError(f"--recover-lr {cfg.recover_lr}: must be positive")
    for flag, value in (("--batch-size", cfg.batch_size), ("--max-len", cfg.max_len),
                        ("--max-examples", cfg.max_examples), ("--threads", cfg.threads)):
        if value is not None and value < 1:
            raise PtmError(f"{flag} {value}: must be at least 1")


def run(cfg: CompressConfig) -> dict:
    """Carry out ``cfg``; returns a summary (what was written, sizes, heads kept)."""
    import torch

    from ptmcli.checkpoint import WEIGHTS, read_config, read_weights, save_checkpoint
    from ptmcli.checkpoint.loading import TASK_PARTS
    from ptmcli.convert.open import open_checkpoint
    from ptmcli.tasks import QA, SEQ2SEQ

    started = time.perf_counter()
    check_flags(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ckpt = open_checkpoint(cfg.checkpoint)
    out = Path(cfg.out)
    if out.resolve() == Path(ckpt).resolve():
        raise PtmError(f"-o {cfg.out}: the output would replace the checkpoint it is made from")
    config = read_config(ckpt)
    if config.get("quantization"):
        raise PtmError(f"{cfg.checkpoint}: already int8-quantized; compress the fp32 checkpoint it was made from")
    task = config.get("task")
    if task is not None and task.get("type") in (QA, SEQ2SEQ):
        raise PtmError(f"{cfg.checkpoint}: a {task['type']} checkpoint; ptm compress takes pretrained checkpoints and "
                       f"{', '.join(PRUNE_TASKS)} ones")
    if cfg.recover_steps is not None and task is None:
        raise PtmError(f"--recover-steps: {cfg.checkpoint} is a pretrained checkpoint; recovery finetunes a finetuned "
                       "one on its task (prune, then ptm finetune the pruned checkpoint instead)")
    if cfg.quantize and config["arch"] not in QUANTIZABLE:
        raise PtmError(f"--quantize: a {config['arch']} checkpoint cannot be quantized; int8 supports "
                       f"{', '.join(QUANTIZABLE)}")
    model, family, tokenizer, initialised = _load(ckpt, config)
    state = read_weights(ckpt)
    before = (Path(ckpt) / WEIGHTS).stat().st_size
    # The source's dev score ("best") does not describe the compressed model; compressed_from names the source.
    new_config = {k: v for k, v in config.items() if k not in ("format", "version", "ptm_version", "best")}
    new_config["compressed_from"] = str(ckpt)
    summary: dict = {"checkpoint": str(ckpt), "out": str(out), "arch": config["arch"]}
    if cfg.prune_heads is not None:
        state, new_config, kept = _prune(cfg, model, family, tokenizer, config, state, new_config, initialised)
        summary["heads_kept"] = [len(k) for k in kept]
        if cfg.recover_steps is not None:  # prune, recover, then quantize
            from ptmcli.commands.compress_recovery import recover

            state, record = recover(state, new_config, ckpt, data=cfg.data, steps=cfg.recover_steps, lr=cfg.recover_lr,
                                    seed=cfg.seed, batch_size=cfg.batch_size, threads=cfg.threads,
                                    out=out)
            new_config["pruning"]["recovery"] = record
            summary["recovery"] = record
    if cfg.quantize:
        from ptmcli.compress.quantize import METHOD, linear_names, quantize_state, saved_name

        tied = {saved_name(k): saved_name(v) for k, v in model.tied_weights().items()}
        names = [n for n in linear_names(model, tied) if n + ".weight" in state and state[n + ".weight"].dim() == 2]
        if task is None:  # a pretraining checkpoint keeps a task part (rare: a converted head) as it is
            names = [n for n in names if not n.startswith(tuple(TASK_PARTS.values()))]
        state = quantize_state(state, names, cfg.scheme)
        new_config["quantization"] = {"method": METHOD, "scheme": cfg.scheme, "bits": 8, "symmetric": True,
                                      "activations": "dynamic", "modules": names}
        summary["quantized_linears"] = len(names)
    save_checkpoint(out, config=new_config, weights={k: v.contiguous() for k, v in state.items()}, tokenizer_dir=ckpt)
    after = (out / WEIGHTS).stat().st_size
    summary.update(bytes_before=before, bytes_after=after, ratio=round(after / before, 4))
    pruned = f", heads kept per layer {summary['heads_kept']}" if "heads_kept" in summary else ""
    if "recovery" in summary:
        pruned += f", {summary['recovery']['steps']} recovery steps at lr {summary['recovery']['lr']:g}"
    quantized = f", {summary['quantized_linears']} Linears int8 ({cfg.scheme})" if "quantized_linears" in summary else ""
    print(f"ptm compress: {ckpt} -> {out}{pruned}{quantized}; {WEIGHTS} {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB "
          f"({after / before:.2f}x) in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return summary


def _load(ckpt: Path, config: dict):
    """(fp32 model, family, tokenizer, heads the file lacked): the task model of a finetuned checkpoint, else
    the pretraining model."""
    if config.get("task") is not None:
        from ptmcli.finetuning.multitask_checkpoint import refuse_multitask
        from ptmcli.finetuning.task_model import load_task_model
        from ptmcli.models.registry import get_family

        refuse_multitask(config, str(ckpt), "ptm compress")

        model, _, tokenizer = load_task_model(ckpt)
        return model, get_family(config["arch"]), tokenizer, []
    from ptmcli.checkpoint.loading import load_checkpoint

    loaded = load_checkpoint(ckpt, note_initialised=False)
    return loaded.model, loaded.family, loaded.tokenizer, loaded.initialised or []


def _prune(cfg: CompressConfig, model, family, tokenizer, config: dict, state: dict, new_config: dict,
           initialised: list[str]):
    import dataclasses

    from ptmcli.compress.prune import (
        attention_layers,
        choose_heads,
        head_importance,
        normalise,
        prune_state,
    )

    attentions = attention_layers(family, model)
    batches, loss = (_task_loss(cfg, model, tokenizer, config) if config.get("task") is not None
                     else _mlm_loss(cfg, model, family, tokenizer, initialised))
    raw = head_importance(model, attentions, batches, loss)
    kept = choose_heads(normalise(raw), cfg.prune_heads)
    model_config = family.config_class.from_dict(config["model"])
    heads_now = [a.num_heads for a in attentions]
    state = prune_state(state, family.encoder_prefix, kept, heads_now, attentions[0].head_dim)
    # Heads already pruned away keep their absence: indices below are of the heads this checkpoint has.
    new_model = dataclasses.replace(model_config, heads_per_layer=tuple(len(k) for k in kept)).to_dict()
    new_model["heads_per_layer"] = list(new_model["heads_per_layer"])
    new_config["model"] = new_model
    new_config["pruning"] = {
        "method": "head-importance", "fraction": cfg.prune_heads, "data": str(Path(cfg.data).resolve()),
        "loss": "task" if config.get("task") is not None else "mlm",
        "heads_kept": kept, "importance": [[round(float(s), 6) for s in layer] for layer in normalise(raw)],
    }
    return state, new_config, kept


def _task_loss(cfg: CompressConfig, model, tokenizer, config: dict):
    """Batches of the labeled ``--data`` and the task model's mean loss on one."""
    from ptmcli.tasks.collate import collate
    from ptmcli.tasks.labeled_shards import prepare_labeled

    task = config["task"]
    style, max_len = task.get("input_style", config["arch"]), int(task.get("max_len", cfg.max_len))
    rows = prepare_labeled(cfg.data, tokenizer, task["type"], style, max_len, labels=task.get("labels") or None,
                           text_columns=task.get("text_columns"), label_column=task.get("label_column"), cache=False)
    count = min(len(rows), cfg.max_examples or len(rows))
    if count == 0:
        raise PtmError(f"--data {cfg.data}: no examples")
    positions = getattr(model.lm.config, "max_position_embeddings", None)
    batches = [collate([rows[i] for i in range(start, min(count, start + cfg.batch_size))], rows.pad_id,
                       max_length=positions) for start in range(0, count, cfg.batch_size)]

    def loss(batch):
        out = model({k: v for k, v in batch.items() if k not in ("line", "word_index")})
        return out["loss_sum"] / out["count"].clamp(min=1)

    return batches, loss


def _mlm_loss(cfg: CompressConfig, model, family, tokenizer, initialised: list[str]):
    """Batches of the text ``--data`` (one text per line, cut to ``--max-len``), 15% masked with a fixed seed,
    and the masked-LM mean loss on one."""
    import torch

    from ptmcli.objectives.mlm import mask_tokens
    from ptmcli.textio.lines import TextLines

    if not family.lm_needs_mask_token() or tokenizer.mask_id is None:
        raise PtmError(f"--prune-heads on a pretrained {family.name} checkpoint ranks heads by the masked-LM loss, "
                       "which it has not; prune a finetuned checkpoint with its labeled data")
    if "mlm" in initialised:
        raise PtmError(f"{cfg.checkpoint}: no masked-LM head to rank heads with; prune a finetuned checkpoint with its labeled data")
    framing = family.framing(tokenizer)
    room = cfg.max_len - len(framing.prefix) - len(framing.suffix)
    texts = []
    with TextLines(cfg.data) as lines:
        for _, line in lines:
            if line.strip():
                texts.append(line)
            if cfg.max_examples and len(texts) == cfg.max_examples:
                break
    if not texts:
        raise PtmError(f"--data {cfg.data}: no text")
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = []
    for start in range(0, len(texts), cfg.batch_size):
        encoded = [list(framing.prefix) + ids[:room] + list(framing.suffix)
                   for ids in tokenizer.encode_batch(texts[start:start + cfg.batch_size])]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), framing.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        special = torch.ones_like(ids, dtype=torch.bool)
        for row, seq in enumerate(encoded):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            special[row, len(framing.prefix):len(seq) - len(framing.suffix)] = False
        masked, labels = mask_tokens(ids, special, model.config.vocab_size, tokenizer.mask_id, generator)
        batches.append({"mlm_input_ids": masked, "mlm_labels": labels, "attention_mask": mask})

    def loss(batch):
        total, count = family.lm_loss(model, batch, None, tokenizer.mask_id, None)
        return total / count.clamp(min=1)

    return batches, loss
