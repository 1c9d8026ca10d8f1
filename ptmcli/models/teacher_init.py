"""Starting a shallower student from a deeper teacher of the same width (DistilBERT's initialisation), for task
distillation (``ptm distill --init-from-teacher``) and pretraining distillation (``--objective mlm-distill``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ptmcli.errors import PtmError


def check_fits(student_layers: int, student_width: int, teacher_layers: int, teacher_width: int,
               where: str | None = None) -> None:
    """A PtmError line unless the student has the teacher's width and at most its layers (``where`` names the
    teacher in the message)."""
    if student_width != teacher_width or student_layers > teacher_layers:
        teacher = f"({where}) " if where else ""
        raise PtmError(f"--init-from-teacher needs the teacher's width and at most its layers: the student is "
                       f"{student_layers} layers x {student_width}, the teacher {teacher}{teacher_layers} x {teacher_width}")


def init_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (0-based) whose weights start student layer i: i*Lt/Ls, every other layer at half the depth."""
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def copy_from_teacher(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], layers_prefix: str,
                      mapping: list[int], required: Callable[[str], bool] = lambda key: True,
                      shown: Callable[[str], str] = lambda key: key) -> list[str]:
    """Copy, in place, each tensor of the ``student`` state dict from the ``teacher``'s: block i (keys under
    ``layers_prefix``) from teacher block ``mapping[i]``, every other tensor under its own name. A tensor
    without a teacher counterpart of its shape is a PtmError line when ``required(key)``, else left as it is
    (``shown`` gives a key as the message names it). Returns the keys copied."""
    copied = []
    with torch.no_grad():
        for key, tensor in student.items():
            name = key
            if key.startswith(layers_prefix):
                index, rest = key[len(layers_prefix):].split(".", 1)
                name = f"{layers_prefix}{mapping[int(index)]}.{rest}"
            theirs = teacher.get(name)
            if theirs is None or tuple(theirs.shape) != tuple(tensor.shape):
                if required(key):
                    have = "nothing" if theirs is None else f"shape {tuple(theirs.shape)}"
                    raise PtmError(f"--init-from-teacher: the student's {shown(key)} {tuple(tensor.shape)} has no teacher "
                                   f"counterpart ({shown(name)}: {have})")
                continue
            tensor.copy_(theirs)
            copied.append(key)
    return copied
