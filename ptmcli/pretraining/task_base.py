"""What the pretraining tasks share: batches from a stream, fixed evaluation sets, loss normalisers, state.

A task (``bert_task``, ``clm_task``, ``elmo_task``) says how a batch is made
from what its stream hands out (``_batch``), how the model is run on a batch
(``_forward``), which summed statistics its objective reports (``sum_keys``)
and how its loss and logged metrics follow from them. The rest is here.

Batches can be built in part: ``next_micro_batches(count, rows)`` builds only
``rows`` of each micro-batch of ``batch_size`` examples, exactly as those rows
of the whole batch, which is how each process under torchrun builds only its
share. Loss normalisers are counted over the rows at hand
(``normalizer_counts``, additive across processes) and finished by
``normalizers_from``, so a process can add its counts to the others' first.
"""

from __future__ import annotations

import torch

from ptmcli.pretraining.lexicon_units import check_same_lexicon, lexicon_fingerprint
from ptmcli.runtime.device import autocast
from ptmcli.training.running_sums import RunningSums


class PretrainTask:
    """Base of the pretraining ``TrainTask``s; subclasses set their fields, then call ``__init__`` here."""

    sum_keys: tuple[str, ...] = ()

    def __init__(self, stream, batch_size: int, eval_streams: dict | None, eval_batches: int) -> None:
        self.stream = stream
        self.batch_size = batch_size
        # One fixed set of evaluation batches, so evaluations along a run are comparable.
        self.eval_sets = {
            name: [self._batch(s.take(batch_size), evaluation=True) for _ in range(eval_batches)]
            for name, s in (eval_streams or {}).items()
        }

    # -- what a subclass defines ----------------------------------------------------------------

    def _batch(self, taken, evaluation: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _forward(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _objective(self, out: dict[str, torch.Tensor], norms: dict) -> torch.Tensor:
        raise NotImplementedError

    def normalizer_counts(self, batches) -> dict[str, float]:
        raise NotImplementedError

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        raise NotImplementedError

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The logged metrics of summed statistics."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------

    def next_micro_batches(self, count: int, rows: slice | None = None) -> list[dict[str, torch.Tensor]]:
        return [self._batch(self.stream.take(self.batch_size, rows)) for _ in range(count)]

    def normalizers(self, batches) -> dict[str, float]:
        return self.normalizers_from(self.normalizer_counts(batches), len(batches))

    def loss(self, model, batch, norms):
        """(normalised loss, the objective's sums as detached tensors: the loop reads them when it logs)."""
        out = self._forward(model, batch)
        return self._objective(out, norms), {key: out[key].detach() for key in self.sum_keys}

    def summarize(self, sums: dict) -> dict[str, float]:
        return self._metrics({key: float(value) for key, value in sums.items()})

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def evaluate(self, model, precision: str, device: torch.device) -> dict[str, float]:
        results = {}
        for name, batches in self.eval_sets.items():
            sums = RunningSums()
            for batch in batches:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with autocast(precision, device):
                    out = self._forward(model, batch)
                for key in self.sum_keys:
                    sums.add(key, out[key])
            prefix = "" if name == "heldout" else f"{name}_"
            results.update({prefix + k: v for k, v in self.summarize(sums.read()).items()})
        return results

    def state_dict(self) -> dict:
        state = {"stream": self.stream.state_dict()}
        # Masks drawn from a lexicon (--mask-unit phrase/entity) repeat on resume only with the same lexicon.
        fingerprint = lexicon_fingerprint(getattr(self, "masker", None))
        return state if fingerprint is None else dict(state, mask_lexicon_sha256=fingerprint)

    def load_state_dict(self, state: dict) -> None:
        check_same_lexicon(getattr(self, "masker", None), state)
        self.stream.load_state_dict(state["stream"])
