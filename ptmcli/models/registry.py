"""The model families ptm knows, by the name stored as ``arch`` in a checkpoint's config.json.

An explicit table: adding a family means one model file defining its
:class:`~ptmcli.models.family.Family` and one line here (docs/extending.md).
"""

from __future__ import annotations

from ptmcli.errors import PtmError
from ptmcli.models import (
    albert,
    bart,
    bert,
    cove,
    distilbert,
    electra,
    elmo,
    gpt,
    nnlm,
    roberta,
    static,
    t5,
    xlnet,
)
from ptmcli.models.family import Family

FAMILIES: dict[str, Family] = {
    "bert": bert.FAMILY,
    "gpt": gpt.FAMILY,
    "elmo": elmo.FAMILY,
    "albert": albert.FAMILY,
    "roberta": roberta.FAMILY,
    "distilbert": distilbert.FAMILY,
    "electra": electra.FAMILY,
    "static": static.FAMILY,
    "nnlm": nnlm.FAMILY,
    "cove": cove.FAMILY,
    "bart": bart.FAMILY,
    "t5": t5.FAMILY,
    "xlnet": xlnet.FAMILY,
}


def get_family(name: str) -> Family:
    """The family called ``name``, or a PtmError listing the known names."""
    if name not in FAMILIES:
        raise PtmError(f"unknown architecture {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def find_preset(preset: str) -> Family:
    """The family that has a preset called ``preset``."""
    for family in FAMILIES.values():
        if preset in family.presets:
            return family
    known = sorted(p for family in FAMILIES.values() for p in family.presets)
    raise PtmError(f"unknown model preset {preset!r}; choose one of: {', '.join(known)}")
