"""``ptm convert``'s settings: one frozen dataclass whose fields are also the command's flags.

Kept free of heavy imports: it is read while building ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.config_fields import option

TARGETS = ("hf", "ptm", "word2vec", "onnx")


@dataclass(frozen=True)
class ConvertConfig:
    to: str | None = option(None, "Output format (default: hf for a ptm checkpoint, ptm for a Hugging Face directory).", choices=TARGETS)
    hf_class: str | None = option(None, "transformers class to write with --to hf, e.g. BertModel to keep only the encoder; default: the one the checkpoint's objective or task implies.")
    binary: bool = option(False, "With --to word2vec: the binary word2vec format instead of text.")
    overwrite: bool = option(False, "Replace an existing DST (only once the new one is complete).")
