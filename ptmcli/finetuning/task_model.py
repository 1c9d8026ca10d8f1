"""A pretrained model with a task head: what ``ptm finetune`` trains and ``ptm eval`` runs.

The pretrained model (BERT, GPT or ELMo, as pretraining built it) is kept whole
under ``lm``; its weights are saved under their pretraining names, so a
finetuned checkpoint still loads in every command that reads the pretrained
model, and the head adds ``classifier.*`` (and ``scalar_mix.*``) keys.

What feeds the head, per family and mode:

=========  =========================================  ==============================================
arch       ``--mode finetune`` (all weights train)     ``--mode features`` (frozen, ELMo's recipe)
=========  =========================================  ==============================================
bert       pooled [CLS] (sentence) / last layer (token)  scalar mix of the L+1 layers
gpt        last real token (sentence) / last layer       scalar mix of the L+1 layers
elmo       scalar mix of the 2L+1 layers                 scalar mix of the 2L+1 layers
=========  =========================================  ==============================================

Sentence tasks over a scalar mix mean-pool it over the real tokens (or, for a
model trained on stored features, read it where those were pooled: [CLS] or the
last token). A BERT whose pretraining never trained its pooler (MLM alone) reads
the mean over the real tokens instead of the pooled [CLS], and a
sentence-transformers model reads what it was trained to pool
(``checkpoint_pool``). In features mode the head is a one-hidden-layer MLP;
otherwise a linear layer after dropout. Static word vectors (a family with a ``task_encoder``) feed a
small BiLSTM or CNN trained with the head (``word_encoders.py``: ``word_encoder.*`` keys), the vectors
frozen unless ``--no-freeze-embeddings``; in features mode ``--encoder`` puts the same encoder over the
scalar mix (ELMo's and CoVe's task BiLSTM), and a linear layer after it.

A batch may carry the layers themselves instead of token ids (``features``:
``[B, K, D]`` pooled, ``[B, W, K, D]`` per word, as ``ptm extract-features``
stores them): the encoder is then skipped and only the mix and the head run,
which is how ``ptm finetune --train-features`` trains. The K stored layers are
entries of the L + 1 stack (``read_stored_layers``); the mix's weights for the
others stay at ``UNUSED_LAYER`` (softmax 0), so the saved model, run on text,
computes exactly what it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptmcli.errors import PtmError
from ptmcli.finetuning.config import MODES, POOLS  # noqa: E402
from ptmcli.finetuning.word_encoders import ENCODERS, WordEncoder
from ptmcli.models.layers import Dropout
from ptmcli.models.scalar_mix import ScalarMix
from ptmcli.tasks import FINETUNE_TASKS as TASK_TYPES  # noqa: E402
from ptmcli.tasks import QA, SEQ2SEQ

PER_TOKEN_TASKS = ("token-classification", QA)  # heads over every token, not a pooled vector

LM_PREFIX = "lm."
# A scalar-mix weight whose softmax is exactly 0 in float32 and float64: layers a model never read.
UNUSED_LAYER = -1e4
PADDING_LOGIT = -1e4  # keeps an answer's start and end off the padding


class TaskModel(nn.Module):
    def __init__(self, arch: str, lm: nn.Module, task_type: str, num_labels: int, mode: str = "finetune",
                 pool: str | None = None, normed_top: bool = False, word_encoder: dict | None = None) -> None:
        """``pool``: where a sentence task reads its vector (mean or max over the real tokens, position 0,
        the last real token, or BERT's pooler on [CLS]); None is the architecture's own: BERT's pooler and GPT's
        last real token when finetuning, the mean over a scalar mix (``checkpoint_pool`` says when a
        checkpoint asks for another). ``normed_top``: GPT's top layer
        after its final LayerNorm, as ``ptm extract-features`` defines the stack (the default keeps
        the block's own output). ``word_encoder``: the small encoder between static word vectors and the
        head (``finetuning/word_encoders.py``'s spec), whose pooling ``pool`` then names."""
        super().__init__()
        if pool is not None and pool not in POOLS:
            raise PtmError(f"pooling {pool!r}: choose one of {', '.join(POOLS)}")
        if task_type not in TASK_TYPES:
            raise PtmError(f"--task {task_type!r}: choose one of {', '.join(TASK_TYPES)}")
        if mode not in MODES:
            raise PtmError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
        from ptmcli.models.registry import get_family

        family = get_family(arch)
        self.arch, self.family, self.task_type, self.mode = arch, family, task_type, mode
        self.lm = lm
        self.uses_mix = mode == "features" or family.always_mixes
        if pool == "pooler":
            if family.sentence_pool != "pooler" or self.uses_mix:
                raise PtmError(f"--pool pooler reads BERT's pooler, which a {family.title} model has not (only a family with a pooler, in --mode finetune)")
            pool = None
        self.word_encoder: WordEncoder | None = None
        if word_encoder is not None:
            pool = pool or ENCODERS[word_encoder["type"]].pools[0]
        elif pool is None and (self.uses_mix or family.sentence_pool != "pooler"):
            pool = "mean" if self.uses_mix else family.sentence_pool
        self.pool, self.normed_top = pool, normed_top  # pool None: the family's pooler
        self.stored_layers: tuple[int, ...] | None = None
        self._mask_id: int | None = None
        self._last_hidden: torch.Tensor | None = None
        size = family.feature_size(lm.config)
        if self.uses_mix:
            self.scalar_mix = ScalarMix(self._num_layer_outputs())
        outputs = 1 if task_type in ("regression", "multiple-choice") else num_labels
        self.dropout = Dropout(family.head_dropout(lm.config))
        self.frozen_lm = mode == "features"
        if word_encoder is not None:
            self.word_encoder = WordEncoder(size, word_encoder, pool, family.pair_delimiter_repeats)
            size = self.word_encoder.token_size if task_type in PER_TOKEN_TASKS else self.word_encoder.sentence_size
            self.dropout = Dropout(float(word_encoder["dropout"]))
            self.frozen_lm = bool(word_encoder["frozen_embeddings"])  # always so in --mode features (encoder_spec)
        if mode == "features" and word_encoder is None:
            self.classifier = nn.Sequential(nn.Linear(size, size), nn.GELU(), Dropout(family.head_dropout(lm.config)), nn.Linear(size, outputs))
        else:
            self.classifier = nn.Linear(size, outputs)
        for module in self.classifier.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        if self.frozen_lm:
            for param in self.lm.parameters():
                param.requires_grad_(False)

    def _num_layer_outputs(self) -> int:
        return self.family.num_layers(self.lm.config) + 1

    @property
    def bottom_prefixes(self) -> tuple[str, ...]:
        """Key prefixes of layer group 0 (embeddings or token encoder), for ULMFiT's methods."""
        return tuple(LM_PREFIX + prefix for prefix in self.family.bottom_prefixes)

    # -- the pretrained model's outputs ----------------------------------------------------------

    def encoder_layers(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(top output, every layer's output) of the pretrained model."""
        return self.family.stack(self.lm, batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"], self.normed_top)

    def _top(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features for the head: ``[B, T, D]`` per token, and ``[B, D]`` per sequence (None for tagging)."""
        mask = batch["attention_mask"]
        tokens, self._last_hidden = self._tokens_and_top(batch)
        if self.word_encoder is not None:  # over the static vectors, or in --mode features the scalar mix
            per_token = self.task_type in PER_TOKEN_TASKS
            out = self.word_encoder(tokens, mask, batch.get("token_type_ids"), per_token)
            return (out, None) if per_token else (out, out)
        if self.task_type in PER_TOKEN_TASKS:
            return tokens, None
        return tokens, self.pool_sentence(tokens, mask)

    def pool_sentence(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, D]``: the vector a sentence task reads from ``tokens``: the family's pooler, or ``pool_tokens``."""
        return self.family.pool(self.lm, tokens) if self.pool is None else self.pool_tokens(tokens, mask)

    def _encoder_top(self, batch: dict[str, torch.Tensor], states: list | None = None) -> torch.Tensor:
        """The pretrained model's top layer; with ``states`` (a list), its layers are appended to it."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_lm):
            if states is not None:
                last, layers = self.encoder_layers(batch)
                states.extend(layers)
                return last
            return self.family.top(self.lm, batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"])

    def token_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, T, D]``: what the head reads at each token (the top layer or the scalar mix), before pooling.
        ``attention_mask`` may be any mask the encoder takes (cross-view training's per-query patterns)."""
        return self._tokens_and_top(batch)[0]

    def _tokens_and_top(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        states: list | None = [] if self.uses_mix else None
        last = self._encoder_top(batch, states)
        if self.uses_mix:
            return self.scalar_mix([s.float() if s.dtype != last.dtype else s for s in states]), last
        return last, last

    def pool_tokens(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` from ``[B, T, D]`` (also ``[B, T, K, D]``) as ``pool`` says, over the real tokens of ``mask``."""
        if self.pool == "cls":
            return tokens[:, 0]
        if self.pool == "last":
            last_index = mask.sum(1).long().clamp(min=1) - 1
            return tokens[torch.arange(tokens.shape[0], device=tokens.device), last_index]
        if self.pool == "max":
            padding = (mask == 0).reshape(*mask.shape, *[1] * (tokens.dim() - 2))
            return tokens.masked_fill(padding, torch.finfo(tokens.dtype).min).amax(1)
        weights = mask.to(tokens.dtype).reshape(*mask.shape, *[1] * (tokens.dim() - 2))
        return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    # -- stored features instead of the encoder ----------------------------------------------------

    def read_stored_layers(self, stack_layers: tuple[int, ...] | None) -> None:
        """Train on stored layers: entries ``stack_layers`` of the L + 1 stack, or None for one vector the
        mix already combined (set the mix to that combination and freeze it first)."""
        self.stored_layers = None if stack_layers is None else tuple(int(i) for i in stack_layers)

    def _mix_stored(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., K, D]`` stored layers -> ``[..., D]``: the scalar mix restricted to the layers stored."""
        if self.stored_layers is None:
            return features[..., 0, :]
        probs = self.scalar_mix.weights.softmax(0)[list(self.stored_layers)]
        mixed = torch.einsum("...kd,k->...d", features, probs.to(features.dtype))
        return self.scalar_mix.gamma.to(mixed.dtype) * mixed

    # -- the task ----------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``logits`` and, when ``labels`` are in the batch, ``loss_sum`` and ``count``.

        Multiple choice: ``input_ids`` etc. are ``[B, C, T]``; logits are ``[B, C]``.
        Token classification: logits ``[B, T, labels]``; labels -100 are ignored.
        Question answering: logits ``[B, T, 2]`` (start, end); labels ``[B, 2]``, the loss the mean of the
        start and end cross-entropies over the real tokens.
        """
        choices = None
        if "features" in batch:
            features = self._mix_stored(batch["features"])
        else:
            if self.task_type == "multiple-choice":
                choices = batch["input_ids"].shape[1]
                batch = {k: v.flatten(0, 1) if k != "labels" and v.dim() >= 2 else v for k, v in batch.items()}
            tokens, pooled = self._top(batch)
            features = tokens if pooled is None else pooled
        logits = self.classifier(self.dropout(features))
        if choices is not None:
            logits = logits.view(-1, choices)
        elif self.task_type == "regression":
            logits = logits.squeeze(-1)
        out = {"logits": logits}
        labels = batch.get("labels")
        if labels is None:
            return out
        if self.task_type == "regression":
            out["loss_sum"] = F.mse_loss(logits.float(), labels.float(), reduction="sum")
            out["count"] = torch.tensor(labels.numel(), device=logits.device)
        elif self.task_type == QA:
            padding = (batch["attention_mask"] == 0).unsqueeze(-1)
            scores = logits.float().masked_fill(padding, PADDING_LOGIT)
            out["loss_sum"] = (F.cross_entropy(scores[..., 0], labels[:, 0], reduction="sum")
                               + F.cross_entropy(scores[..., 1], labels[:, 1], reduction="sum")) / 2
            out["count"] = torch.tensor(labels.shape[0], device=logits.device)
        elif self.task_type == "token-classification":
            flat = labels.reshape(-1)
            out["loss_sum"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=-100, reduction="sum")
            out["count"] = (flat != -100).sum()
        else:
            out["loss_sum"] = F.cross_entropy(logits.float(), labels, reduction="sum")
            out["count"] = torch.tensor(labels.numel(), device=logits.device)
        return out

    def aux_lm_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed LM loss, predicted tokens) on the task's own inputs, as GPT's auxiliary objective.

        A causal LM reuses the forward pass's last hidden state; ELMo runs its biLM; a masked LM
        (``lm_needs_mask_token``) has 15% of the tokens masked here and predicts them.
        """
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if ids.dim() == 3:
            ids, mask = ids.flatten(0, 1), mask.flatten(0, 1)
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": batch.get("token_type_ids")}
        if inputs["token_type_ids"] is not None and inputs["token_type_ids"].dim() == 3:
            inputs["token_type_ids"] = inputs["token_type_ids"].flatten(0, 1)
        if self.family.lm_needs_mask_token():
            from ptmcli.objectives.mlm import mask_tokens

            special = batch.get("special_tokens_mask")
            if special is None:
                special = mask == 0
            if special.dim() == 3:
                special = special.flatten(0, 1)
            masked, labels = mask_tokens(ids.cpu(), special.cpu().bool() | (mask.cpu() == 0), self.lm.config.vocab_size,
                                         self._mask_id, generator or torch.Generator().manual_seed(0))
            inputs.update(mlm_input_ids=masked.to(ids.device), mlm_labels=labels.to(ids.device))
        return self.family.lm_loss(self.lm, inputs, self._last_hidden, self._mask_id, generator)

    def set_mask_id(self, mask_id: int | None) -> None:
        """The [MASK] id a masked LM's auxiliary loss needs (from the tokenizer)."""
        self._mask_id = mask_id

    # -- saving under the pretraining names ------------------------------------------------------

    def tied_weights(self) -> dict[str, str]:
        return {LM_PREFIX + k: LM_PREFIX + v for k, v in self.lm.tied_weights().items()}

    def tie_weights(self) -> None:
        self.lm.tie_weights()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Tensors to save: the pretrained model's under their own names, plus the head's."""
        tied = self.tied_weights()
        out = {}
        for key, tensor in self.state_dict().items():
            if key in tied:
                continue
            name = key[len(LM_PREFIX):] if key.startswith(LM_PREFIX) else key
            out[name] = tensor.detach().contiguous().cpu()
        return out

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Inverse of :meth:`checkpoint_state`, strict about missing, extra and misshapen tensors."""
        own = {key for key in self.state_dict() if not key.startswith(LM_PREFIX)}
        mapped = {(key if key in own else LM_PREFIX + key): value for key, value in state.items()}
        expected = {k: v for k, v in self.state_dict().items() if k not in self.tied_weights()}
        missing = sorted(set(expected) - set(mapped))
        extra = sorted(set(mapped) - set(expected))
        if missing or extra:
            what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
            raise PtmError(f"{source}: weights do not fit the task model ({what})")
        for key, tensor in mapped.items():
            if tuple(tensor.shape) != tuple(expected[key].shape):
                raise PtmError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}")
        self.load_state_dict(mapped, strict=False)
        self.tie_weights()


POOLED_TASKS = ("classification", "pair-classification", "regression", "multiple-choice")  # one vector per text or choice


def checkpoint_pool(family, task_type: str, mode: str, config: dict, initialised: list[str] | None,
                    where: str) -> tuple[str | None, str | None]:
    """(pool, why) when a pretrained checkpoint says how its sentences should be read, else (None, None),
    which leaves the architecture's own default (see ``TaskModel``).

    A sentence-transformers model is read the way it was trained (its ``sentence_embedding.pool``).
    A BERT finetuned end to end reads BERT's pooler on [CLS] only where pretraining trained that
    pooler (next-sentence prediction); after MLM alone neither the pooler nor [CLS] was ever asked to
    summarise a sentence, so it reads the mean over the real tokens, as Sentence-BERT found best.
    """
    if task_type not in POOLED_TASKS:
        return None, None
    from ptmcli.convert.sentence_transformers import check_embedding

    embedding = check_embedding(config.get("sentence_embedding"), where)
    if embedding is not None:
        return embedding["pool"], "as the sentence-transformers model was trained"
    if family.sentence_pool != "pooler" or mode != "finetune":
        return None, None
    objective = config.get("objective")
    if family.pooler_trained(objective, initialised):
        return None, None
    if "pooler" in (initialised or []):
        return "mean", f"since the checkpoint has no weights for {family.title}'s pooler"
    return "mean", f"since {objective} pretraining left {family.title}'s pooler untrained"


def load_task_model(path, device: torch.device | str = "cpu", head: str | None = None):
    """(TaskModel with its weights, config.json, tokenizer) of a finetuned checkpoint directory; ``head``
    picks one head of a multi-task checkpoint (which is refused without it), and config.json is its view."""
    from ptmcli.checkpoint import WEIGHTS, read_config, read_weights
    from ptmcli.checkpoint.loading import apply_quantization, saved_normed_top
    from ptmcli.finetuning.multitask_checkpoint import head_weights, select_head
    from ptmcli.models.registry import get_family
    from ptmcli.tasks.labels import output_size
    from ptmcli.tokenization.tokenizer import PtmTokenizer

    config = select_head(read_config(path), head, str(path))
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
        raise PtmError(f"{path}: config.json has no usable task (type one of {', '.join(TASK_TYPES)})")
    family = get_family(config["arch"])
    lm = family.build(family.config_class.from_dict(config["model"]))
    if task["type"] == SEQ2SEQ:  # no head: the encoder-decoder's own weights, under their pretraining names
        from ptmcli.finetuning import seq2seq

        model = seq2seq.style(family, config["arch"], str(path)).Seq2SeqModel(
            config["arch"], lm, float(task.get("label_smoothing", 0.0)), where=str(path))
        apply_quantization(model, config)
        model.load_checkpoint_state(read_weights(path), str(path / WEIGHTS))
        model.to(device)
        model.eval()
        return model, config, PtmTokenizer.load(path)
    model = TaskModel(config["arch"], lm, task["type"], output_size(task["type"], task.get("labels") or []), task.get("mode", "finetune"),
                      pool=task.get("pool"), normed_top=saved_normed_top(task), word_encoder=task.get("encoder"))
    apply_quantization(model, config)
    state = read_weights(path) if head is None else head_weights(read_weights(path), head)
    # A checkpoint converted from a transformers task model has no pretraining heads (nor, for a token or
    # span model, the pooler); the task never reads them, so the freshly built ones stand in.
    reads_pooler = model.pool is None and task["type"] not in PER_TOKEN_TASKS
    tied = lm.tied_weights()
    for part, prefix in family.head_parts.items():
        if part != "pooler" or not reads_pooler:
            state.update({k: v for k, v in lm.state_dict().items() if k.startswith(prefix) and k not in state and k not in tied})
    model.load_checkpoint_state(state, str(path / WEIGHTS))
    model.to(device)
    model.eval()
    return model, config, PtmTokenizer.load(path)
