"""`ptm plot`: flags for ptmcli.commands.plot (matplotlib is imported only when a plot is drawn)."""

from __future__ import annotations

import typer

SHORT_HELP = "Plot the training curves of one or more runs (metrics.jsonl) to a PNG or SVG."
HELP = """Plot loss and every other logged metric of each RUN_DIR's metrics.jsonl, one subplot per metric: training records as lines, evaluation records as markers, several runs overlaid in their own colours and named in the legend (the run directory's name, or --label).

--x chooses the axis: step, tokens (tokens seen) or time (training time). The output's suffix chooses the format (.png, .svg, or any other matplotlib writes). Needs matplotlib (pip install ptm\\[plot]).

Examples:

ptm plot runs/bert-mini -o curves.png

ptm plot runs/a runs/b --label "lr 1e-4" --label "lr 3e-4" --x tokens -o compare.svg
"""


def plot(
    run_dirs: list[str] = typer.Argument(..., metavar="RUN_DIR", help="Run directories of ptm pretrain or ptm finetune (or checkpoint directories with a metrics.jsonl)."),
    out: str = typer.Option(..., "--out", "-o", help="Output image; its suffix (.png, .svg) sets the format.", show_default=False, metavar="FILE"),
    x: str = typer.Option("step", "--x", help="The x axis: step, tokens (tokens seen) or time (training time). \\[default: step]", show_default=False, metavar="AXIS"),
    label: list[str] = typer.Option(None, "--label", help="A run's name in the legend, once per RUN_DIR in order \\[default: the directory names].", show_default=False, metavar="TEXT"),
) -> None:
    from ptmcli.commands.plot import run

    run(run_dirs, out, x, label or None)
