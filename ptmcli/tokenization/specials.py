"""Special-token sets and the per-model defaults of ``ptm tokenize train``.

A set lists (role, token) pairs; the distinct tokens, in this order, take the
first ids of the vocabulary. Roles are pad, unk, cls, sep, mask, bos, eos.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmcli.errors import PtmError

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
MODELS = ("wordpiece", "bpe", "bytelevel", "unigram", "sp-bpe", "word")
SENTENCEPIECE_MODELS = ("unigram", "sp-bpe")

# GPT-2 has a single <|endoftext|>; it also stands for "unknown" only where no
# unknown can occur (byte-level), other models get a real <unk>.
SPECIAL_SETS: dict[str, list[tuple[str, str]]] = {
    "bert": [("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"), ("mask", "[MASK]")],
    "gpt": [("bos", "<|endoftext|>"), ("eos", "<|endoftext|>"), ("unk", "<|endoftext|>")],
    "roberta": [("bos", "<s>"), ("cls", "<s>"), ("pad", "<pad>"), ("eos", "</s>"), ("sep", "</s>"),
                ("unk", "<unk>"), ("mask", "<mask>")],
    # T5's roles (pad 0, eos 1, unk 2), then its sentinels (SENTINEL_SETS).
    "t5": [("pad", "<pad>"), ("eos", "</s>"), ("unk", "<unk>")],
    # RoBERTa's (and BART's) tokens plus T5's sentinels: --objective span-corruption with --arch bart.
    "roberta-sentinels": [("bos", "<s>"), ("cls", "<s>"), ("pad", "<pad>"), ("eos", "</s>"), ("sep", "</s>"),
                          ("unk", "<unk>"), ("mask", "<mask>")],
}

# Sets that also carry sentinels <extra_id_0> ... <extra_id_{N-1}> (span corruption replaces each span by one).
# They hold no role: an objective finds them by name, so a converted T5 tokenizer, whose sentinels stand at
# the end of its vocabulary, serves as well as ptm's, where they follow the roles' tokens.
SENTINEL_SETS = {"t5": 100, "roberta-sentinels": 100}

# Sets whose single end-of-text token cannot stand for "unknown" outside a byte-level model.
UNK_OUTSIDE_BYTE_LEVEL = {"gpt": "<unk>"}
# Sets whose pairs are framed <s> A </s></s> B </s>, as RoBERTa's tokenizer does.
DOUBLE_SEPARATOR_PAIRS = {"roberta", "roberta-sentinels"}


@dataclass(frozen=True)
class ModelDefaults:
    lowercase: bool
    split_cjk: bool
    special: str


DEFAULTS = {
    "wordpiece": ModelDefaults(lowercase=True, split_cjk=True, special="bert"),
    "bpe": ModelDefaults(lowercase=False, split_cjk=True, special="bert"),
    "bytelevel": ModelDefaults(lowercase=False, split_cjk=False, special="gpt"),
    "unigram": ModelDefaults(lowercase=False, split_cjk=False, special="bert"),
    "sp-bpe": ModelDefaults(lowercase=False, split_cjk=False, special="bert"),
    # Whole words, for static word vectors: lowercased as the usual similarity and analogy sets are.
    "word": ModelDefaults(lowercase=True, split_cjk=True, special="bert"),
}


def special_roles(special: str, model: str) -> dict[str, str]:
    """role -> token for a named set, adapted to ``model``."""
    if special not in SPECIAL_SETS:
        raise PtmError(f"unknown --special-tokens {special!r}; choose one of {', '.join(SPECIAL_SETS)}")
    roles = dict(SPECIAL_SETS[special])
    if special in UNK_OUTSIDE_BYTE_LEVEL and model != "bytelevel":
        roles["unk"] = UNK_OUTSIDE_BYTE_LEVEL[special]
    return roles


def ordered_tokens(roles: dict[str, str], special: str | None = None) -> list[str]:
    """The distinct special tokens in vocabulary order."""
    order = [token for _, token in SPECIAL_SETS[special]] if special in SPECIAL_SETS else []
    tokens: list[str] = []
    for token in [*order, *roles.values()]:
        if token in roles.values() and token not in tokens:
            tokens.append(token)
    return tokens + sentinel_tokens(SENTINEL_SETS.get(special or "", 0))


def sentinel_tokens(count: int) -> list[str]:
    """T5's sentinel tokens ``<extra_id_0>`` ... ``<extra_id_{count-1}>``, in the order they are used."""
    return [f"<extra_id_{i}>" for i in range(count)]
