"""Open a checkpoint's encoder for features and run it to its stack of layers.

Features need only the encoder, so only its tensors are loaded (strictly: each
must be present with its shape); pretraining heads, task heads and a learned
scalar mix may be present or not. The mix, when present, is returned beside
the model (tensors ``scalar_mix.weights`` and ``scalar_mix.gamma``, the names
:class:`ptmcli.models.scalar_mix.ScalarMix` gives them under a ``scalar_mix``
attribute).

The stack is what ``--layers all`` means, L + 1 tensors ``[B, T, D]``:
- BERT: the embedding output, then each block's output;
- GPT: the embedding output, then each block's output, the last one after the
  final LayerNorm (what Hugging Face's ``hidden_states[-1]`` and
  ``last_hidden_state`` hold);
- ELMo: the token encoding (doubled to the LSTM width), then each biLSTM
  layer's forward and backward outputs, concatenated (``representations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptmcli.errors import PtmError

SCALAR_MIX_WEIGHTS = "scalar_mix.weights"
SCALAR_MIX_GAMMA = "scalar_mix.gamma"


@dataclass
class FeatureModel:
    path: Path
    config: dict
    arch: str
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

    def stack(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None,
              attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The L + 1 layers for a right-padded batch; ``attention_mask`` None means no padding."""
        if self.arch == "bert":
            _, states = self.model.bert(input_ids, type_ids, attention_mask, output_hidden_states=True)
            return list(states)
        if self.arch == "gpt":
            # Causal attention: right padding never reaches a real token, so no mask is needed.
            last, states = self.model.gpt(input_ids, output_hidden_states=True)
            return [*states[:-1], last] if self.normed_top else list(states)
        if self.arch == "elmo":
            return list(self.model.representations(input_ids, attention_mask))
        raise PtmError(f"ptm extract-features cannot run {self.arch!r} models")


def _architecture(name: str):
    from ptmcli.models.registry import ARCHITECTURES, get_architecture

    if name == "elmo" and name not in ARCHITECTURES:
        from ptmcli.models import elmo

        return elmo.ElmoConfig, elmo.ElmoBiLM
    entry = get_architecture(name)
    return entry.config_class, entry.model_class


def _encoder(arch: str, model) -> tuple[torch.nn.Module, str]:
    """The module that computes features and its key prefix in the checkpoint."""
    if arch == "bert":
        return model.bert, "bert."
    if arch == "gpt":
        return model.gpt, "gpt."
    if arch == "elmo":
        if not hasattr(model, "representations"):
            raise PtmError("this ELMo model has no representations(); update ptm to extract ELMo features")
        return model, ""
    raise PtmError(f"ptm extract-features supports bert, gpt and elmo checkpoints, not {arch!r}")


def _load_encoder(ckpt: Path, arch: str, model) -> dict[str, torch.Tensor]:
    """Load the encoder's tensors strictly; return the scalar-mix tensors, if any."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ptmcli.training.checkpoint import WEIGHTS

    file = ckpt / WEIGHTS
    if not file.exists():
        raise PtmError(f"{ckpt}: checkpoint has no {WEIGHTS}")
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise PtmError(f"{file}: unreadable safetensors file ({err})") from None
    encoder, prefix = _encoder(arch, model)
    expected = encoder.state_dict()
    if arch == "elmo":
        # The softmax predicts words; features never use it.
        expected = {k: v for k, v in expected.items() if not k.startswith("softmax.")}
    if arch == "bert" and not any(k.startswith(prefix + "pooler.") for k in state):
        # BERT's pooler reads [CLS] for NSP and classification, never a layer; a model converted from
        # BertForMaskedLM or a sentence-transformers directory has none.
        expected = {k: v for k, v in expected.items() if not k.startswith("pooler.")}
    tensors = {}
    for key, target in expected.items():
        stored = state.get(prefix + key)
        if stored is None:
            raise PtmError(f"{file}: the encoder tensor {prefix + key!r} is missing")
        if tuple(stored.shape) != tuple(target.shape):
            raise PtmError(f"{file}: tensor {prefix + key!r} has shape {tuple(stored.shape)}, the model expects {tuple(target.shape)}")
        tensors[key] = stored
    encoder.load_state_dict(tensors, strict=False)
    mix = {}
    for name, key in (("weights", SCALAR_MIX_WEIGHTS), ("gamma", SCALAR_MIX_GAMMA)):
        if key in state:
            mix[name] = state[key].float().reshape(-1)
    return mix


def load_feature_model(path: str | Path, device: torch.device | str = "cpu") -> FeatureModel:
    """The checkpoint's encoder in eval mode on ``device``, its tokenizer and its limits."""
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training.checkpoint import read_config, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    config = read_config(ckpt)
    arch = config["arch"]
    config_class, model_class = _architecture(arch)
    model_config = config_class.from_dict(config["model"])
    tokenizer = PtmTokenizer.load(ckpt)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise PtmError(f"{ckpt}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has {model_config.vocab_size}")
    from ptmcli.models.unfilled import without_random_init

    with without_random_init():
        model = model_class(model_config)
    mix = _load_encoder(ckpt, arch, model)
    model.to(torch.device(device) if isinstance(device, str) else device)
    model.eval()
    if arch == "elmo":
        num_layers, dim, positions = model_config.num_layers, 2 * model_config.projection_dim, None
    else:
        num_layers, dim, positions = model_config.num_layers, model_config.hidden_size, model_config.max_position_embeddings
    trained = (config.get("training") or {}).get("seq_len")
    default = trained or positions or tokenizer.model_max_length
    if positions is not None:
        default = min(default, positions)
    from ptmcli.finetuning.task_model import saved_normed_top

    # Without a learned mix the stack is the documented one; a mix meets the layers it was learned on.
    normed_top = not mix or saved_normed_top(config.get("task"))
    return FeatureModel(ckpt, config, arch, model, tokenizer, num_layers, dim, int(default), positions, mix, normed_top)
