"""What the encoder-decoder families (BART, T5) share: one pass through encoder and decoder, the LM's
summed loss over a two-sequence batch, and the family's answers about the encoder stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ptmcli.errors import PtmError
from ptmcli.models.family import Family
from ptmcli.models.layers import linear_cross_entropy, padding_attention_mask

IGNORE_INDEX = -100


def encode_then_decode(backbone: Any, title: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       decoder_input_ids: torch.Tensor | None, decoder_attention_mask: torch.Tensor | None,
                       output_hidden_states: bool) -> dict[str, Any]:
    """``hidden`` (decoder top ``[B, T, H]``) and ``encoder_hidden`` (``[B, S, H]``) of a backbone with
    ``encode``, ``decode`` and ``decoder.memory``; with ``output_hidden_states`` also both stacks."""
    if decoder_input_ids is None:
        raise PtmError(f"{title}'s forward needs decoder_input_ids (or labels to shift right)")
    source, target = embed_both(backbone.tokens, input_ids, decoder_input_ids)
    encoded, encoder_states = backbone.encode(input_ids, attention_mask, output_hidden_states, embedded=source)
    hidden, decoder_states = backbone.decode(decoder_input_ids, backbone.decoder.memory(encoded),
                                             padding_attention_mask(attention_mask), decoder_attention_mask, None,
                                             output_hidden_states, embedded=target)
    out: dict[str, Any] = {"hidden": hidden, "encoder_hidden": encoded}
    if output_hidden_states:
        out.update(encoder_hidden_states=encoder_states, decoder_hidden_states=decoder_states)
    return out


def embed_both(tokens: Callable[[torch.Tensor], torch.Tensor], source_ids: torch.Tensor,
               target_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides' token embeddings from one lookup of the shared table.

    Two lookups would give the table two dense ``[V, H]`` gradients for autograd to zero-fill and sum
    (besides the tied output layer's); one lookup gives one.
    """
    flat = tokens(torch.cat([source_ids.reshape(-1), target_ids.reshape(-1)]))
    split = source_ids.numel()
    return flat[:split].view(*source_ids.shape, -1), flat[split:].view(*target_ids.shape, -1)


def add_lm_terms(out: dict[str, Any], labels: torch.Tensor, projected_input: torch.Tensor,
                 weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, Any]:
    """``lm_loss_sum``, ``lm_count``, ``lm_correct`` over the labels that are not -100.

    With gradients on, the loss is fused with the vocabulary projection of ``projected_input`` (the
    decoder top as the output layer reads it) and the logits are never materialised; without, they
    are read from ``out["logits"]``.
    """
    flat_labels = labels.reshape(-1)
    if torch.is_grad_enabled():
        flat = projected_input.reshape(-1, projected_input.shape[-1])
        loss_sum, correct = linear_cross_entropy(flat, weight, bias, flat_labels)
    else:
        logits = out["logits"].reshape(flat_labels.shape[0], -1)
        loss_sum = F.cross_entropy(logits.float(), flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
        correct = ((logits.argmax(-1) == flat_labels) & (flat_labels != IGNORE_INDEX)).sum()
    out.update(lm_loss_sum=loss_sum, lm_count=(flat_labels != IGNORE_INDEX).sum(), lm_correct=correct)
    return out


class EncoderDecoderFamily(Family):
    """A family whose stack (features, finetuning's encoder) is its encoder's, under ``encoder_prefix``;
    the decoder is never read by features."""

    is_encoder_decoder = True

    def unused_by_features(self, stored_keys):
        return ("decoder.",)

    def stack(self, model, input_ids, type_ids, attention_mask, normed_top=True):
        last, states = self.encoder(model).encode(input_ids, attention_mask, output_hidden_states=True)
        return last, list(states)

    def top(self, model, input_ids, type_ids, attention_mask):
        return self.encoder(model).encode(input_ids, attention_mask)[0]

    def input_embeddings(self, model):
        return self.encoder(model).word_embeddings.weight

    def fsdp_units(self, model):
        trunk = self.encoder(model)
        return [*trunk.encoder.layers, *trunk.decoder.layers]
