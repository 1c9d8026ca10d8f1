"""Masked language modelling: choose tokens to predict and corrupt them (BERT's 80/10/10 rule).

Masking is dynamic: it runs per batch from a ``torch.Generator``, so every epoch
sees new masks and a resumed run that restores the generator sees the same ones.
With ``word_starts`` it masks whole words: every sub-token of a chosen word.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: torch.Tensor,
    special_mask: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    word_starts: torch.Tensor | None = None,
    special_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(masked_input_ids, labels)``; labels are -100 where nothing is predicted.

    Each non-special token is chosen with probability ``mask_prob``. A chosen
    token becomes ``mask_id`` with probability ``replace_prob``, a random token
    with probability ``random_prob``, and stays as it is otherwise. Random
    tokens are drawn uniformly from the ids other than ``mask_id``, the ids in
    ``special_ids`` (pass the tokenizer's special ids, e.g. [UNK]) and the ids
    found at special positions of this batch ([CLS], [SEP], [PAD]).

    ``special_mask`` is True at special and padding tokens, which are never
    chosen. With ``word_starts`` (True where a word begins), whole words are
    chosen with probability ``mask_prob`` each (so about ``mask_prob`` of the
    tokens), and all of a chosen word's tokens are predicted together; the
    80/10/10 corruption is then drawn per token. A token right after a special
    token always starts a word, so a word never spans a special token.

    The draws depend only on the shapes and the generator: the same generator
    state gives the same result.
    """
    if input_ids.shape != special_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and special_mask {tuple(special_mask.shape)} differ")
    if not 0.0 <= mask_prob <= 1.0 or replace_prob < 0 or random_prob < 0 or replace_prob + random_prob > 1.0:
        raise ValueError(f"bad masking probabilities: mask {mask_prob}, replace {replace_prob}, random {random_prob}")
    device = input_ids.device
    special = special_mask.bool()
    if word_starts is None:
        chosen = torch.rand(input_ids.shape, generator=generator, device=device) < mask_prob
    else:
        chosen = _choose_whole_words(special, word_starts.bool(), mask_prob, generator)
    chosen &= ~special

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    to_mask = chosen & (action < replace_prob)
    to_random = chosen & (action >= replace_prob) & (action < replace_prob + random_prob)

    # Ids seen at special positions ([CLS], [SEP], [PAD]) are never drawn either.
    seen_special = input_ids[special].unique().tolist()
    allowed = _random_token_pool(vocab_size, mask_id, [*special_ids, *seen_special], device)
    picks = torch.randint(len(allowed), input_ids.shape, generator=generator, device=device)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, allowed[picks], masked)
    return masked, labels


def _choose_whole_words(
    special: torch.Tensor, word_starts: torch.Tensor, mask_prob: float, generator: torch.Generator
) -> torch.Tensor:
    """Token-level choice where every token of a word shares its word's draw."""
    starts = word_starts | special
    starts[:, 1:] |= special[:, :-1]  # the token after [CLS]/[SEP] begins a word
    starts[:, 0] = True  # a row never continues the previous row's word
    word_index = starts.reshape(-1).cumsum(0) - 1  # one id per word over the flattened batch
    num_words = int(word_index[-1]) + 1 if word_index.numel() else 0
    word_chosen = torch.rand(num_words, generator=generator, device=special.device) < mask_prob
    return word_chosen[word_index].view(special.shape)


def _random_token_pool(
    vocab_size: int, mask_id: int, special_ids: Sequence[int], device: torch.device
) -> torch.Tensor:
    excluded = torch.tensor(sorted({mask_id, *special_ids}), dtype=torch.long, device=device)
    ids = torch.arange(vocab_size, device=device)
    allowed = ids[~torch.isin(ids, excluded)]
    if allowed.numel() == 0:
        raise ValueError("no token id is left to draw random replacements from")
    return allowed
