"""The numbers an evaluation returns, and how they are shown: a table on stderr, JSON on stdout.

Per-token perplexity is ``exp(total nll / tokens scored)``; per-word perplexity
is ``exp(total nll / words)``, the same total spread over the whitespace words
of the text, which does not depend on the tokenizer.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite instead of an overflow error."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def nll_summary(prefix: str, nll_sum: float, tokens: int, words: int) -> dict[str, float | None]:
    """``{prefix}loss``, ``{prefix}ppl`` (per token) and ``{prefix}word_ppl`` of a summed nll."""
    loss = nll_sum / tokens if tokens else None
    return {
        f"{prefix}loss": loss,
        f"{prefix}ppl": perplexity(loss) if loss is not None else None,
        f"{prefix}word_ppl": perplexity(nll_sum / words) if words else None,
    }


# Labels for the table; keys not listed are shown by their name.
_LABELS = {
    "checkpoint": "checkpoint",
    "arch": "architecture",
    "data": "data",
    "metric": "metric",
    "tokens_scored": "tokens scored",
    "text_tokens": "text tokens",
    "words": "words",
    "documents": "documents",
    "loss": "loss / token (nats)",
    "ppl": "perplexity / token",
    "word_ppl": "perplexity / word",
    "accuracy": "accuracy",
    "fwd_loss": "forward loss / token",
    "fwd_ppl": "forward perplexity / token",
    "fwd_word_ppl": "forward perplexity / word",
    "bwd_loss": "backward loss / token",
    "bwd_ppl": "backward perplexity / token",
    "bwd_word_ppl": "backward perplexity / word",
    "mlm_tokens": "MLM tokens masked",
    "mlm_loss": "MLM loss / token",
    "mlm_ppl": "MLM perplexity / token",
    "mlm_accuracy": "MLM accuracy",
    "context": "context",
    "stride": "stride",
    "sequences": "sequences",
    "precision": "precision",
    "device": "device",
    "truncated": "stopped at --max-tokens",
    "seconds": "time (s)",
    "tokens_per_s": "tokens / s",
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(metrics: dict[str, Any], title: str) -> None:
    """The metrics as a two-column table on stderr (None values are left out)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        table.add_row(_LABELS.get(key, key.replace("_", " ")), _shown(value))
    Console(stderr=True).print(table)


def json_safe(value: Any) -> Any:
    """NaN and infinities (an accuracy over nothing, a loss that diverged) become null, at any depth, so the
    output is strict JSON that every parser reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def print_json(record: dict[str, Any]) -> None:
    """One JSON object on one line of stdout (non-finite values become null)."""
    sys.stdout.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
    sys.stdout.flush()
