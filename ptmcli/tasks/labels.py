"""The label vocabulary of a task, taken from its training data, and label -> id.

The list is stored in the shard manifest and in a finetuned checkpoint's
``config.json`` (``task.labels``); an id is an index into it. Its order is
fixed by the data alone (not by the order labels first appear), so the same
training file always gives the same ids:

- class labels are sorted, numerically when every label is an integer
  (``0, 1, 2, 10``), else as text;
- token tags put ``O`` first, then the rest sorted by entity type and then
  by tag (``B-LOC, I-LOC, B-MISC, ...``);
- regression and multiple choice have no label list (``[]``): the target is a
  score or the index of the right choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptmcli.errors import PtmError, where
from ptmcli.tasks import QA
from ptmcli.tasks.readers import LabeledExample

OUTSIDE = "O"
_TAG_ORDER = {"B": 0, "I": 1, "E": 2, "L": 2, "S": 3, "U": 3}


def has_label_list(task: str) -> bool:
    return task in ("classification", "pair-classification", "token-classification")


def build_label_list(examples: Sequence[LabeledExample], task: str) -> list[str]:
    """The sorted label list of ``examples`` (see the module docstring); [] for tasks without one."""
    if not has_label_list(task):
        return []
    if task == "token-classification":
        tags = {t for e in examples if e.word_labels for t in e.word_labels}
        rest = sorted(tags - {OUTSIDE}, key=_tag_key)
        return [OUTSIDE, *rest] if OUTSIDE in tags else rest
    names = {e.label for e in examples if e.label is not None}
    if all(_is_int(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def check_label_list(labels: Sequence[str], task: str) -> list[str]:
    """A label list given by the caller (say, from a checkpoint), checked for duplicates."""
    labels = [str(label) for label in labels]
    if not has_label_list(task):
        if labels:
            raise PtmError(f"task {task} has no label list, but {len(labels)} labels were given")
        return labels
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise PtmError(f"the label list names {label!r} twice")
        seen.add(label)
    if not labels:
        raise PtmError(f"task {task} needs at least one label")
    return labels


def label_index(labels: Sequence[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(labels)}


def unknown_label(source: str, line: int, label: str, labels: Sequence[str]) -> PtmError:
    shown = ", ".join(labels[:20]) + (" ..." if len(labels) > 20 else "")
    return PtmError(f"{where(source, line)}: label {label!r} is not among the {len(labels)} labels of the "
                    f"training data ({shown})")


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _tag_key(tag: str) -> tuple[str, int, str]:
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in _TAG_ORDER:
        return (kind, _TAG_ORDER[prefix], tag)
    return (tag, -1, tag)


def output_size(task: str, labels: Sequence[str]) -> int:
    """Width of the task head: one logit per label, a start and an end logit per token (question
    answering), or a single score (regression, each choice)."""
    if has_label_list(task):
        return len(labels)
    return 2 if task == QA else 1
