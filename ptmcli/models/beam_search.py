"""Beam search over any :class:`ptmcli.models.generation.Decoder`, all inputs of a batch at once.

Each input keeps ``K = num_beams`` running beams and up to ``K`` finished
hypotheses. A step scores every continuation of every running beam (summed
log-probabilities), takes the ``2K`` best of the input (so that ``K`` remain
that did not just stop), and then:

- a candidate among the first ``K`` that ends in a stop token, or that reaches
  ``max_new_tokens``, competes for the finished list with its score divided by
  ``(new tokens) ** length_penalty``; the list keeps the ``K`` best;
- the ``K`` best candidates that did not stop become the running beams, and
  the decoder's state is reordered to follow them.

An input stops taking hypotheses (and the batch stops when every input has)
when its finished list is full and, by the early-stopping rule, no running
beam can do better; ``early_stopping=True`` stops as soon as the list is full.
These are the rules of ``transformers``' beam search, so on the same weights
both choose the same tokens. Excluded candidates are pushed down by a large
negative offset rather than removed, which keeps every tensor's shape fixed.
"""

from __future__ import annotations

import torch

from ptmcli.models.generation import Continuation, Decoder, Settings, constrain, start

_EXCLUDED = -1.0e9
"""Added to a score that must not be chosen (finite, so sums and orderings stay defined)."""


def beam_search(decoder: Decoder, ids: torch.Tensor, mask: torch.Tensor | None, settings: Settings) -> list[list[Continuation]]:
    """The ``num_return_sequences`` best hypotheses of each of the ``[B, T]`` inputs, best first."""
    batch, beams, device = ids.shape[0], settings.num_beams, ids.device
    longest = settings.max_new_tokens
    logits, state = start(decoder, ids, mask)
    # One encoding per input, then each row repeated into its beams.
    rows = torch.arange(batch, device=device).repeat_interleave(beams)
    logits, state = logits.index_select(0, rows), decoder.reorder(state, rows)
    stops = torch.tensor(sorted(set(settings.stop_ids)), dtype=torch.long, device=device)
    wide = max(2, 1 + len(stops)) * beams
    in_top = torch.arange(wide, device=device) < beams
    base = torch.arange(batch, device=device)[:, None] * beams

    # Only the first beam is live at the start: the others are copies and would repeat its choices.
    running = torch.zeros(batch, beams, device=device)
    running[:, 1:] = _EXCLUDED
    running_tokens = torch.zeros(batch, beams, 0, dtype=torch.long, device=device)
    finished_tokens = torch.full((batch, beams, longest), settings.pad_id, dtype=torch.long, device=device)
    finished_scores = torch.full((batch, beams), _EXCLUDED, device=device)
    finished_lengths = torch.zeros(batch, beams, dtype=torch.long, device=device)
    is_finished = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)

    for step in range(longest):
        length = step + 1
        scores = constrain(torch.log_softmax(logits.float(), dim=-1), step, settings)
        vocab = scores.shape[-1]
        totals = (scores.view(batch, beams, vocab) + running[:, :, None]).view(batch, beams * vocab)
        top_scores, top_index = torch.topk(totals, wide)
        source, token = top_index // vocab, top_index % vocab
        candidates = torch.cat([_gather(running_tokens, source), token[:, :, None]], dim=2)
        ends = torch.isin(token, stops) | (length == longest)

        # The finished list: the best ``beams`` of what it held and the candidates that just stopped.
        offered = top_scores / (length ** settings.length_penalty)
        full = is_finished.all(dim=1, keepdim=True) & (settings.early_stopping is True)
        offered = offered + full.float() * _EXCLUDED + (~improvable).float() * _EXCLUDED
        just_finished = ends & in_top[None, :]
        offered = offered + (~just_finished).float() * _EXCLUDED
        padded = torch.full((batch, wide, longest), settings.pad_id, dtype=torch.long, device=device)
        padded[:, :, :length] = candidates
        keep = torch.topk(torch.cat([finished_scores, offered], dim=1), beams).indices
        finished_tokens = _gather(torch.cat([finished_tokens, padded], dim=1), keep)
        finished_scores = torch.cat([finished_scores, offered], dim=1).gather(1, keep)
        finished_lengths = torch.cat([finished_lengths, torch.full_like(token, length)], dim=1).gather(1, keep)
        is_finished = torch.cat([is_finished, just_finished], dim=1).gather(1, keep)

        # The running beams: the best candidates that did not stop.
        continuing = top_scores + ends.float() * _EXCLUDED
        chosen = torch.topk(continuing, beams).indices
        running = continuing.gather(1, chosen)
        running_tokens = _gather(candidates, chosen)

        best_possible = running[:, :1] / (_hoped_length(length, settings) ** settings.length_penalty)
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values,
                            torch.full_like(finished_scores, _EXCLUDED))
        improvable = improvable & (best_possible > worst).any(dim=1, keepdim=True)
        done = (not bool(improvable.any())) or (settings.early_stopping is True and bool(is_finished.all()))
        if done or bool(ends.all()):
            break
        state = decoder.reorder(state, (base + source.gather(1, chosen)).view(-1), same_source=True)
        logits, state = decoder.step(state, running_tokens[:, :, -1].reshape(-1, 1))
    return _results(finished_tokens, finished_scores, finished_lengths, stops, settings.num_return_sequences)


def _hoped_length(length: int, settings: Settings) -> int:
    """The length the early-stopping rule scores the best running beam at."""
    if settings.early_stopping == "never" and settings.length_penalty > 0:
        return settings.max_new_tokens
    return length


def _gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens[b, index[b, j], :]`` for ``[B, N, L]`` tokens and a ``[B, M]`` index."""
    return tokens.gather(1, index[:, :, None].expand(-1, -1, tokens.shape[2]))


def _results(tokens: torch.Tensor, scores: torch.Tensor, lengths: torch.Tensor, stops: torch.Tensor,
             count: int) -> list[list[Continuation]]:
    out: list[list[Continuation]] = []
    stop_set = set(stops.tolist())
    for row_tokens, row_scores, row_lengths in zip(tokens.tolist(), scores.tolist(), lengths.tolist(), strict=True):
        row: list[Continuation] = []
        for ids, score, length in list(zip(row_tokens, row_scores, row_lengths, strict=True))[:count]:
            ids = ids[:length]
            stopped = bool(ids) and ids[-1] in stop_set
            row.append(Continuation(ids[:-1] if stopped else ids, "eos" if stopped else "length", score))
        out.append(row)
    return out

