"""`ptm compress`: flags for ptmcli.commands.compress (int8 weights, attention-head pruning)."""

from __future__ import annotations

import typer

SHORT_HELP = "Make a checkpoint smaller for deployment: int8 Linear weights, pruned attention heads, or both."
HELP = """Write a smaller copy of a checkpoint to -o OUT.

--quantize int8: dynamic int8 quantization of the Linear layers (torch's quantize_dynamic scheme: symmetric int8 weights, one scale per output row with --scheme per-channel or per tensor, activations quantized on the fly), stored as int8 tensors and scales in model.safetensors. ptm eval, extract-features, predict and finetune --mode features load it and run torch's int8 kernels on the CPU; training it is refused. Families: bert, roberta, distilbert, gpt.

--prune-heads FRACTION --data FILE: remove that fraction of the attention heads, the least important by the gradient of the loss with respect to a gate on each head (Michel et al., 2019), normalised per layer and ranked across the model, keeping one head per layer at least. The loss is the checkpoint's own: a finetuned checkpoint's task loss on FILE, labeled data in its task's format (its TSV); a pretrained checkpoint's masked-LM loss on FILE, one text per line. The result is an ordinary fp32 checkpoint with fewer heads that every command reads and finetune trains. Families: bert, roberta, distilbert.

--recover-steps N (a finetuned checkpoint): after pruning, finetune the pruned model for N optimizer steps on FILE with its own task loss (ptm finetune's training: AdamW, 10% warmup then linear decay, --batch-size, --seed), at --recover-lr (default: ptm finetune's default rate for the model's width), before writing OUT (and before quantizing).

Both flags together prune first, then quantize. docs/compress.md has the file format and measured sizes and speeds.

Examples:

ptm compress runs/sst2/best -o sst2-int8 --quantize int8

ptm compress runs/sst2/best -o sst2-pruned --prune-heads 0.4 --data sst2/dev.tsv

ptm compress runs/sst2/best -o sst2-pruned-recovered --prune-heads 0.5 --data sst2/train.tsv --max-examples 2000 --recover-steps 150 --recover-lr 1e-4

ptm compress runs/bert-mini -o bert-mini-pruned --prune-heads 0.25 --data wiki.txt --quantize int8
"""


def compress(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint directory, or a run directory (its best or newest checkpoint)."),
    out: str = typer.Option(..., "--out", "-o", help="The checkpoint directory to write (replaced if it exists)."),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: dynamic int8 quantization of the Linear layers."),
    scheme: str = typer.Option("per-channel", "--scheme", help="int8 weight scales: per-channel (one per output row) or per-tensor."),
    prune_heads: float | None = typer.Option(None, "--prune-heads", metavar="FRACTION", help="Remove this fraction of the attention heads, in [0, 1)."),
    data: str | None = typer.Option(None, "--data", help="--prune-heads: labeled data of a finetuned checkpoint's task, or text (one per line) for a pretrained one."),
    batch_size: int = typer.Option(32, "--batch-size", help="--prune-heads: examples per gradient of the head gates (and per --recover-steps step)."),
    max_len: int = typer.Option(128, "--max-len", help="--prune-heads: tokens per example at most (a finetuned checkpoint keeps its own)."),
    max_examples: int | None = typer.Option(None, "--max-examples", help="--prune-heads: read at most this many examples of --data."),
    seed: int = typer.Option(0, "--seed", help="--prune-heads on text: the seed of the masked positions; --recover-steps: the seed of the data order and dropout."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    recover_steps: int | None = typer.Option(None, "--recover-steps", metavar="N", help="--prune-heads on a finetuned checkpoint: finetune the pruned model for N optimizer steps on --data (all of it, not only --max-examples) with its task loss."),
    recover_lr: float | None = typer.Option(None, "--recover-lr", metavar="LR", help="--recover-steps: peak learning rate [default: ptm finetune's default for the model's width]."),
) -> None:
    from ptmcli.commands.compress import CompressConfig, run

    run(CompressConfig(checkpoint, out, quantize, scheme, prune_heads, data, batch_size, max_len, max_examples, seed, threads,
                       recover_steps=recover_steps, recover_lr=recover_lr))
