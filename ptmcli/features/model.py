"""A checkpoint's encoder opened for features, run to its stack of layers.

Features need only the encoder (:func:`ptmcli.checkpoint.loading.load_encoder`);
the stack is what ``--layers all`` means, L + 1 tensors ``[B, T, D]`` as the
family defines them (:meth:`ptmcli.models.family.Family.stack`): for BERT the
embedding output and each block's; for GPT the same with the top one after the
final LayerNorm (Hugging Face's ``hidden_states[-1]``); for ELMo the token
encoding (doubled to the LSTM width) and each biLSTM layer's two directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class FeatureModel:
    path: Path
    config: dict
    arch: str
    family: Any
    model: Any
    tokenizer: Any
    num_layers: int
    """L: Transformer blocks or LSTM layers; the stack has L + 1 entries."""
    dim: int
    """Width of every entry of the stack."""
    max_length: int
    """Default sequence limit: the length the checkpoint was trained with, else its positions."""
    position_limit: int | None
    """Hard limit of the model (learned positions), or None (LSTMs)."""
    scalar_mix: dict[str, torch.Tensor]
    """``weights`` and ``gamma`` of a learned mix, when the checkpoint has one."""
    normed_top: bool = True
    """GPT: the stack's top entry is after the final LayerNorm. False only for a mix learned
    before that was the rule (a task checkpoint without ``normed_top_layer``), so it is applied
    to the layers it was learned on."""
    part: str | None = None
    """The network read when not the checkpoint's default one (``--part generator``)."""

    def stack(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None,
              attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The L + 1 layers for a right-padded batch; ``attention_mask`` None means no padding."""
        return self.family.stack(self.model, input_ids, type_ids, attention_mask, self.normed_top)[1]


def load_feature_model(path: str | Path, device: torch.device | str = "cpu", head: str | None = None,
                       part: str | None = None) -> FeatureModel:
    """The checkpoint's encoder in eval mode on ``device``, its tokenizer and its limits; ``head``: the head of a
    multi-task checkpoint whose scalar mix and settings apply; ``part``: another network of the checkpoint
    (``Family.parts``, ELECTRA's generator), whose stack the features are then."""
    from ptmcli.checkpoint.loading import (
        load_checkpoint,
        load_encoder,
        saved_normed_top,
        select_part,
    )

    if part is None:
        loaded = load_encoder(path, device, head)
    else:
        # The other network lies outside the encoder's prefix: the whole model is loaded, and a missing part refused.
        loaded = select_part(load_checkpoint(path, device, note_initialised=False), part, "nothing to extract features from")
    family, model_config, config = loaded.family, loaded.model_config, loaded.config
    positions = family.position_limit(model_config)
    trained = (config.get("training") or {}).get("seq_len")
    default = trained or positions or loaded.tokenizer.model_max_length
    if positions is not None:
        default = min(default, positions)
    mix = loaded.scalar_mix or {}
    # Without a learned mix the stack is the documented one; a mix meets the layers it was learned on.
    task = config.get("task") if head is None else config["task"]["heads"][head]  # a multi-task checkpoint's head
    normed_top = not mix or saved_normed_top(task)
    return FeatureModel(loaded.path, config, loaded.arch, family, loaded.model, loaded.tokenizer,
                        family.num_layers(model_config), family.feature_size(model_config), int(default), positions, mix,
                        normed_top, part)
