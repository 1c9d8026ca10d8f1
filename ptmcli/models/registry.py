"""The architectures ptm knows, by the name stored as ``arch`` in a checkpoint's config.json.

An explicit table: adding a family means adding a line here, not importing a
module for its side effects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ptmcli.errors import PtmError
from ptmcli.models import bert, elmo, gpt


class Architecture(NamedTuple):
    """What ``arch`` names: its config dataclass, its pretraining model class, its presets."""

    config_class: type
    model_class: type
    presets: dict[str, dict[str, Any]]
    preset_config: Callable[..., Any]
    """``preset_config(preset_name, **overrides)`` -> a config instance."""


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture(bert.BertConfig, bert.BertForPreTraining, bert.PRESETS, bert.preset_config),
    "gpt": Architecture(gpt.GPTConfig, gpt.GPTForCausalLM, gpt.PRESETS, gpt.preset_config),
    "elmo": Architecture(elmo.ElmoConfig, elmo.ElmoBiLM, elmo.PRESETS, elmo.preset_config),
}


def get_architecture(name: str) -> Architecture:
    """The entry for ``name``, or a PtmError listing the known names."""
    if name not in ARCHITECTURES:
        raise PtmError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def find_preset(preset: str) -> tuple[str, Architecture]:
    """``(arch name, entry)`` of the architecture that has a preset called ``preset``."""
    for name, entry in ARCHITECTURES.items():
        if preset in entry.presets:
            return name, entry
    known = sorted(p for entry in ARCHITECTURES.values() for p in entry.presets)
    raise PtmError(f"unknown model preset {preset!r}; choose one of: {', '.join(known)}")
