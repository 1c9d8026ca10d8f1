"""Evaluation of finetuned checkpoints (a task head: ``config.json`` "task" is not null).

The place for labeled metrics (accuracy, F1, ...) on a labeled data set, with
predictions. ``ptmcli.commands.eval`` sends every checkpoint with a task here.
"""

from __future__ import annotations

from typing import Any

from ptmcli.errors import PtmError


def evaluate_labeled(checkpoint, config: dict, cfg) -> dict[str, Any]:
    """Task metrics of a finetuned checkpoint on ``cfg.data``; not built yet."""
    task = config.get("task") or {}
    kind = f" ({task['type']})" if isinstance(task, dict) and task.get("type") else ""
    raise PtmError(f"{checkpoint}: checkpoint has a task head{kind}; labeled evaluation is not available yet")
