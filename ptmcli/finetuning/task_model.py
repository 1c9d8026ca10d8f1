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
otherwise a linear layer after dropout.

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
from ptmcli.models.layers import Dropout, linear_cross_entropy
from ptmcli.models.scalar_mix import ScalarMix
from ptmcli.tasks import TASKS as TASK_TYPES  # noqa: E402

LM_PREFIX = "lm."
# A scalar-mix weight whose softmax is exactly 0 in float32 and float64: layers a model never read.
UNUSED_LAYER = -1e4


def feature_size(arch: str, lm: nn.Module) -> int:
    """Width of every layer the scalar mix reads."""
    if arch == "elmo":
        return 2 * lm.config.projection_dim
    return lm.config.hidden_size


def _dropout_p(arch: str, lm: nn.Module) -> float:
    return lm.config.dropout if arch == "elmo" else lm.config.hidden_dropout


class TaskModel(nn.Module):
    def __init__(self, arch: str, lm: nn.Module, task_type: str, num_labels: int, mode: str = "finetune",
                 pool: str | None = None, normed_top: bool = False) -> None:
        """``pool``: where a sentence task reads its vector (mean or max over the real tokens, position 0,
        the last real token, or BERT's pooler on [CLS]); None is the architecture's own: BERT's pooler and GPT's
        last real token when finetuning, the mean over a scalar mix (``checkpoint_pool`` says when a
        checkpoint asks for another). ``normed_top``: GPT's top layer
        after its final LayerNorm, as ``ptm extract-features`` defines the stack (the default keeps
        the block's own output)."""
        super().__init__()
        if pool is not None and pool not in POOLS:
            raise PtmError(f"pooling {pool!r}: choose one of {', '.join(POOLS)}")
        if task_type not in TASK_TYPES:
            raise PtmError(f"--task {task_type!r}: choose one of {', '.join(TASK_TYPES)}")
        if mode not in MODES:
            raise PtmError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
        if arch not in ("bert", "gpt", "elmo"):
            raise PtmError(f"finetuning is not available for arch {arch!r} (bert, gpt, elmo)")
        self.arch, self.task_type, self.mode = arch, task_type, mode
        self.lm = lm
        self.uses_mix = mode == "features" or arch == "elmo"
        if pool == "pooler":
            if arch != "bert" or self.uses_mix:
                raise PtmError("--pool pooler reads BERT's pooler, which only a BERT in --mode finetune has")
            pool = None
        if pool is None and (self.uses_mix or arch == "gpt"):
            pool = "mean" if self.uses_mix else "last"  # GPT: the paper's "extract" position
        self.pool, self.normed_top = pool, normed_top  # pool None: BERT's pooler on [CLS]
        self.stored_layers: tuple[int, ...] | None = None
        self._mask_id: int | None = None
        self._last_hidden: torch.Tensor | None = None
        size = feature_size(arch, lm)
        if self.uses_mix:
            self.scalar_mix = ScalarMix(self._num_layer_outputs())
        outputs = 1 if task_type in ("regression", "multiple-choice") else num_labels
        self.dropout = Dropout(_dropout_p(arch, lm))
        if mode == "features":
            self.classifier = nn.Sequential(nn.Linear(size, size), nn.GELU(), Dropout(_dropout_p(arch, lm)), nn.Linear(size, outputs))
        else:
            self.classifier = nn.Linear(size, outputs)
        for module in self.classifier.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        if mode == "features":
            for param in self.lm.parameters():
                param.requires_grad_(False)

    def _num_layer_outputs(self) -> int:
        return self.lm.config.num_layers + 1

    # -- the pretrained model's outputs ----------------------------------------------------------

    def encoder_layers(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(top output, every layer's output) of the pretrained model."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if self.arch == "bert":
            last, states = self.lm.bert(ids, batch.get("token_type_ids"), mask, output_hidden_states=True)
            return last, list(states)
        if self.arch == "gpt":
            last, states = self.lm.gpt(ids, output_hidden_states=True)
            return last, [*states[:-1], last] if self.normed_top else list(states)
        states = self.lm.representations(ids, mask)
        return states[-1], states

    def _top(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features for the head: ``[B, T, D]`` per token, and ``[B, D]`` per sequence (None for tagging)."""
        frozen = self.mode == "features"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            if self.uses_mix:
                last, states = self.encoder_layers(batch)
            elif self.arch == "bert":
                last = self.lm.bert(batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"])
            else:
                last = self.lm.gpt(batch["input_ids"])
        self._last_hidden = last
        mask = batch["attention_mask"]
        if self.uses_mix:
            tokens = self.scalar_mix([s.float() if s.dtype != last.dtype else s for s in states])
        else:
            tokens = last
        if self.task_type == "token-classification":
            return tokens, None
        pooled = self.lm.bert.pool(tokens) if self.pool is None else self.pool_tokens(tokens, mask)
        return tokens, pooled

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

        GPT reuses the forward pass's last hidden state (call after ``forward``);
        ELMo runs its biLM; BERT masks 15% of the tokens and runs its MLM head.
        """
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if ids.dim() == 3:
            ids, mask = ids.flatten(0, 1), mask.flatten(0, 1)
        if self.arch == "gpt":
            hidden = self._last_hidden[:, :-1]
            targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            loss, _ = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), self.lm.output_weight, None, targets.reshape(-1))
            return loss, (targets != -100).sum()
        if self.arch == "elmo":
            out = self.lm(ids, mask)
            return out["fwd_loss_sum"] + out["bwd_loss_sum"], out["fwd_count"] + out["bwd_count"]
        from ptmcli.objectives.mlm import mask_tokens

        special = batch.get("special_tokens_mask")
        if special is None:
            special = mask == 0
        if special.dim() == 3:
            special = special.flatten(0, 1)
        masked, labels = mask_tokens(ids.cpu(), special.cpu().bool() | (mask.cpu() == 0), self.lm.config.vocab_size,
                                     self._mask_id, generator or torch.Generator().manual_seed(0))
        out = self.lm(masked.to(ids.device), batch.get("token_type_ids"), mask, mlm_labels=labels.to(ids.device))
        return out["mlm_loss_sum"], out["mlm_count"]

    def set_mask_id(self, mask_id: int | None) -> None:
        """The [MASK] id BERT's auxiliary MLM needs (from the tokenizer)."""
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


def checkpoint_pool(arch: str, task_type: str, mode: str, config: dict, initialised: list[str] | None,
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
    from ptmcli.models.heads import objective_parts

    embedding = check_embedding(config.get("sentence_embedding"), where)
    if embedding is not None:
        return embedding["pool"], "as the sentence-transformers model was trained"
    if arch != "bert" or mode != "finetune":
        return None, None
    objective = config.get("objective")
    if "pooler" in (initialised or []):
        return "mean", "since the checkpoint has no weights for BERT's pooler"
    if objective and "nsp" not in objective_parts(objective):
        return "mean", f"since {objective} pretraining left BERT's pooler untrained"
    return None, None


def saved_normed_top(task: dict | None) -> bool:
    """Whether a saved task's GPT mix reads the top layer after the final LayerNorm; checkpoints
    written before ``normed_top_layer`` was recorded read the block's own output."""
    return bool((task or {}).get("normed_top_layer", False))


def load_task_model(path, device: torch.device | str = "cpu"):
    """(TaskModel with its weights, config.json, tokenizer) of a finetuned checkpoint directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ptmcli.models.registry import get_architecture
    from ptmcli.tasks.labels import output_size
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training.checkpoint import WEIGHTS, read_config

    config = read_config(path)
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
        raise PtmError(f"{path}: config.json has no usable task (type one of {', '.join(TASK_TYPES)})")
    arch = get_architecture(config["arch"])
    model_config = arch.config_class.from_dict(config["model"])
    lm = arch.model_class(model_config)
    model = TaskModel(config["arch"], lm, task["type"], output_size(task["type"], task.get("labels") or []), task.get("mode", "finetune"),
                      pool=task.get("pool"), normed_top=saved_normed_top(task))
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise PtmError(f"{path / WEIGHTS}: unreadable safetensors file ({err})") from None
    model.load_checkpoint_state(state, str(path / WEIGHTS))
    model.to(device)
    model.eval()
    return model, config, PtmTokenizer.load(path)
