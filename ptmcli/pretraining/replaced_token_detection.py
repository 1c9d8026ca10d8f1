"""Builder of ``rtd``, ELECTRA's replaced-token detection: packed blocks, 15% of tokens masked, the
generator fills them from its softmax, the discriminator says which tokens were replaced.

Rows are ``[CLS] block [SEP]`` from the packed full-sentence stream (as ``mlm``). Masking is the keyed
MLM masking with every chosen token replaced by [MASK], as the reference does (no 10% random / 10%
kept). The generator's samples are drawn by inverting its softmax's CDF at a uniform keyed, like the
masks, by (seed, example number, position): any process builds the same draws for a row, and a
resumed run needs no generator state. The loss is the generator's MLM loss (mean over masked tokens)
plus ``--disc-weight`` (50) times the discriminator's (mean over non-padding tokens).
"""

from __future__ import annotations

import torch

from ptmcli.errors import PtmError
from ptmcli.objectives.collate import collate_blocks
from ptmcli.pretraining import mask_units
from ptmcli.pretraining.bert_task import Specials
from ptmcli.pretraining.examples import Drawn, ExampleStream
from ptmcli.pretraining.keyed_masking import KeyedMasker
from ptmcli.pretraining.keyed_random import keyed_uniform
from ptmcli.pretraining.masked_lm import example_streams
from ptmcli.pretraining.objective_context import ObjectiveContext
from ptmcli.pretraining.task_base import PretrainTask

# keyed_random purpose of the generator's sampling draws: far from the masking purposes (1, 2, 3...).
SAMPLE = 101
_SUM_KEYS = ("mlm_loss_sum", "mlm_count", "mlm_correct", "disc_loss_sum", "disc_count", "disc_correct", "disc_correct_replaced",
             "replaced_count")


class ReplacedTokenTask(PretrainTask):
    """Generator MLM + discriminator replaced-token detection on packed blocks; the loop's ``TrainTask``."""

    sum_keys = _SUM_KEYS

    def __init__(self, stream: ExampleStream, specials: Specials, *, batch_size: int, mask_prob: float, seed: int,
                 disc_weight: float, eval_streams: dict[str, ExampleStream] | None = None, eval_batches: int = 20,
                 pad_to_longest: bool = True, masker=None) -> None:
        self.specials = specials
        self.disc_weight = disc_weight
        self.pad_to_longest = pad_to_longest
        self.seq_len = stream.seq_len
        self.whole_word = stream.whole_word
        self.mask_seed, self.eval_mask_seed = seed + 17, seed + 4242
        self.masker = masker or KeyedMasker(specials.vocab_size, specials.mask_id, (specials.cls_id, specials.sep_id, specials.pad_id),
                                            mask_prob, replace_prob=1.0, random_prob=0.0)
        super().__init__(stream, batch_size, eval_streams, eval_batches)

    def _batch(self, taken: Drawn, evaluation: bool = False) -> dict[str, torch.Tensor]:
        s = self.specials
        batch = collate_blocks(taken.examples, s.cls_id, s.sep_id, s.pad_id, self.seq_len, pad_to_longest=False)
        # As wide as the longest row of the whole batch, so a part built alone has the shape of its slice.
        width = taken.widest + 2 if self.pad_to_longest else self.seq_len
        batch = {k: v[:, :width].contiguous() if v.dim() == 2 else v for k, v in batch.items()}
        seed = self.eval_mask_seed if evaluation else self.mask_seed
        word_starts = batch.get("word_starts") if self.whole_word else None
        inputs, labels = self.masker(batch["input_ids"], batch["special_tokens_mask"], taken.numbers, seed, word_starts)
        uniforms = keyed_uniform(seed, SAMPLE, taken.numbers, inputs.shape[1])
        return {"input_ids": inputs, "attention_mask": batch["attention_mask"], "mlm_labels": labels,
                "sample_uniforms": torch.from_numpy(uniforms)}

    def normalizer_counts(self, batches) -> dict[str, float]:
        return {"mlm": float(sum(int((b["mlm_labels"] != -100).sum()) for b in batches)),
                "disc": float(sum(int(b["attention_mask"].sum()) for b in batches))}

    def normalizers_from(self, counts: dict[str, float], micro_batches: int) -> dict[str, float]:
        return {name: max(1.0, value) for name, value in counts.items()}

    def _forward(self, model, batch):
        return model(batch["input_ids"], None, batch["attention_mask"], mlm_labels=batch["mlm_labels"],
                     sample_uniforms=batch["sample_uniforms"])

    def _objective(self, out, norms):
        return out["mlm_loss_sum"] / norms["mlm"] + self.disc_weight * out["disc_loss_sum"] / norms["disc"]

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {}
        if sums.get("mlm_count"):
            out["mlm_loss"] = sums["mlm_loss_sum"] / sums["mlm_count"]
            out["mlm_acc"] = sums["mlm_correct"] / sums["mlm_count"]
        if sums.get("disc_count"):
            out["disc_loss"] = sums["disc_loss_sum"] / sums["disc_count"]
            out["disc_acc"] = sums["disc_correct"] / sums["disc_count"]
            out["replaced_fraction"] = sums["replaced_count"] / sums["disc_count"]
            # Overall accuracy hides a discriminator that calls everything original (the prior): score each class.
            replaced, original = sums["replaced_count"], sums["disc_count"] - sums["replaced_count"]
            if replaced:
                out["disc_acc_replaced"] = sums["disc_correct_replaced"] / replaced
            if original:
                out["disc_acc_original"] = (sums["disc_correct"] - sums["disc_correct_replaced"]) / original
        if sums.get("mlm_count"):
            # Only masked positions can differ from the original: those that do not drew it back.
            out["sampled_original_fraction"] = 1.0 - sums["replaced_count"] / sums["mlm_count"]
        return out


def build(context: ObjectiveContext) -> ReplacedTokenTask:
    cfg, tokenizer = context.config, context.tokenizer
    if cfg.disc_weight < 0:
        raise PtmError(f"--disc-weight {cfg.disc_weight}: must not be negative")
    train, evaluation = example_streams(context, "mlm")
    specials = Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size)
    # Every chosen token becomes [MASK], as the reference, whatever the unit.
    masker = mask_units.build_masker(cfg, tokenizer, context.dataset, (specials.cls_id, specials.sep_id, specials.pad_id),
                                     replace_prob=1.0, random_prob=0.0)
    return ReplacedTokenTask(train, specials, batch_size=cfg.batch_size, mask_prob=cfg.mask_prob, seed=cfg.seed,
                             disc_weight=cfg.disc_weight, eval_streams=evaluation, eval_batches=cfg.eval_batches,
                             pad_to_longest=not cfg.compile, masker=masker)
