"""Published tokenizer directories (a transformers model's) read into a ``PtmTokenizer``.

Reading takes, in order, ``tokenizer.json``; a sentencepiece model
(``tokenizer.model``, or ``spiece.model`` / ``sentencepiece.bpe.model`` as
published models name it); ``vocab.txt`` (a BERT WordPiece tokenizer rebuilt with
the settings of ``tokenizer_config.json``); or ``vocab.json`` + ``merges.txt``
(GPT-2's and RoBERTa's byte-level BPE). Each is read as
``transformers.AutoTokenizer`` reads it: the tokenizer class named by
``tokenizer_config.json`` (or implied by ``config.json``'s ``model_type``)
decides what is built from the config's keys rather than taken from the files
(BERT's lowercasing, byte-level BPE's prefix space, ALBERT's text steps, the
default special tokens), and what ptm cannot reproduce is refused, naming the
file and key. Stored padding and truncation are never applied (ptm frames and
pads sequences itself) but stay in the saved file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.tokenization.backends import HFBackend, SentencePieceBackend
from ptmcli.tokenization.specials import ROLES
from ptmcli.tokenization.tokenizer import (
    CONFIG_FILE,
    CONFIG_FORMAT,
    DEFAULT_MAX_LENGTH,
    PtmTokenizer,
    TokenizerSettings,
    hf_backend,
    read_json_object,
    read_model_file,
    read_tokenizer_config,
)

# ptm's own name first, then the names published models use.
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
# Classes that take tokenizer.json as it is.
_GENERIC_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend", "PreTrainedTokenizer"}
# The class AutoTokenizer picks from config.json when tokenizer_config.json names none.
_MODEL_TYPE_CLASSES = {
    "bert": "BertTokenizer", "distilbert": "BertTokenizer", "electra": "BertTokenizer",
    "gpt2": "GPT2Tokenizer", "roberta": "RobertaTokenizer", "albert": "AlbertTokenizer", "t5": "T5Tokenizer",
    "xlnet": "XLNetTokenizer", "xlm-roberta": "XLMRobertaTokenizer", "camembert": "CamembertTokenizer",
    "llama": "LlamaTokenizer",
}
_BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# The special tokens a class uses when tokenizer_config.json does not name them.
_CLASS_SPECIALS = {
    "GPT2Tokenizer": {"unk": "<|endoftext|>", "bos": "<|endoftext|>", "eos": "<|endoftext|>"},
    "RobertaTokenizer": {"bos": "<s>", "cls": "<s>", "eos": "</s>", "sep": "</s>", "unk": "<unk>", "pad": "<pad>",
                         "mask": "<mask>"},
    "AlbertTokenizer": {"bos": "[CLS]", "cls": "[CLS]", "eos": "[SEP]", "sep": "[SEP]", "unk": "<unk>", "pad": "<pad>",
                        "mask": "[MASK]"},
    "T5Tokenizer": {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"},
    "XLNetTokenizer": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "sep": "<sep>", "pad": "<pad>", "cls": "<cls>",
                       "mask": "<mask>"},
}
# Whether a class lowercases when tokenizer_config.json has no do_lower_case (ALBERT's checkpoints are uncased).
_LOWERCASE_DEFAULT = {"AlbertTokenizer": True, "XLNetTokenizer": False}
# Names of special tokens in directories written by other tools, for inferring roles.
_KNOWN_SPECIALS = {
    "[PAD]": ("pad",), "<pad>": ("pad",), "[UNK]": ("unk",), "<unk>": ("unk",),
    "[CLS]": ("cls",), "[SEP]": ("sep",), "[MASK]": ("mask",), "<mask>": ("mask",),
    "<s>": ("bos",), "</s>": ("eos",), "<|endoftext|>": ("bos", "eos"),
}


def _token(value) -> str | None:
    if isinstance(value, dict):  # transformers' AddedToken as JSON
        value = value.get("content")
    return value if isinstance(value, str) else None


@dataclass
class _Foreign:
    """A tokenizer directory another tool wrote, with what transformers would make of its config."""

    directory: Path
    config: dict
    """tokenizer_config.json"""
    special_tokens_map: dict
    tokenizer_class: str | None
    """The transformers class without "Fast"; None for one that takes tokenizer.json as it is."""
    named_by: str
    """Where the class comes from, for messages: "DIR/tokenizer_config.json: tokenizer_class X"."""

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def family(self) -> str | None:
        from ptmcli.tokenization.pipelines import BERT_CLASSES

        return "BertTokenizer" if self.tokenizer_class in BERT_CLASSES else self.tokenizer_class

    def role_tokens(self) -> dict[str, str]:
        """role -> token: the class's defaults, then special_tokens_map.json, then tokenizer_config.json."""
        roles = dict(_BERT_SPECIALS if self.family == "BertTokenizer" else _CLASS_SPECIALS.get(self.family or "", {}))
        for source in (self.special_tokens_map, self.config):
            for role in ROLES:
                token = _token(source.get(f"{role}_token"))
                if token:
                    roles[role] = token
        return roles

    def declared_added_tokens(self) -> list[tuple[int, dict]]:
        """(id, {"content", flags}) of tokenizer_config.json's added_tokens_decoder, else of added_tokens.json."""
        decoder = self.config.get("added_tokens_decoder")
        if decoder is not None:
            if not isinstance(decoder, dict):
                raise PtmError(f"{self.config_path}: added_tokens_decoder must be an object of id -> token")
            declared = []
            for key, entry in decoder.items():
                content = _token(entry)
                if not str(key).isdigit() or content is None:
                    raise PtmError(f"{self.config_path}: added_tokens_decoder entry {key!r} must map an id to a token")
                declared.append((int(key), entry if isinstance(entry, dict) else {"content": content}))
            return declared
        path = self.directory / "added_tokens.json"
        legacy = read_json_object(path)
        specials = set(self.role_tokens().values())
        declared = []
        for content, token_id in legacy.items():
            if not isinstance(token_id, int):
                raise PtmError(f"{path}: the id of {content!r} must be an integer")
            # transformers' reading of the old file: special tokens match raw text, others normalized text.
            declared.append((token_id, {"content": content, "special": content in specials,
                                        "normalized": content not in specials}))
        return declared


def _foreign(directory: Path, config: dict) -> _Foreign:
    named = config.get("tokenizer_class")
    if isinstance(named, str) and named:
        name = named if named in _GENERIC_CLASSES else named.removesuffix("Fast")
        return _Foreign(directory, config, read_json_object(directory / "special_tokens_map.json"),
                        None if name in _GENERIC_CLASSES else name, f"{directory / CONFIG_FILE}: tokenizer_class {named}")
    model_type = read_json_object(directory / "config.json").get("model_type")
    name = _MODEL_TYPE_CLASSES.get(model_type) if isinstance(model_type, str) else None
    return _Foreign(directory, config, read_json_object(directory / "special_tokens_map.json"), name,
                    f"{directory / 'config.json'}: model_type {model_type}" if name else "")


def read_hf_tokenizer(directory: str | Path, config: dict | None = None) -> PtmTokenizer | None:
    """The tokenizer of a transformers model directory, or None when it has no tokenizer files.

    ``config`` is its tokenizer_config.json when the caller has read it already.
    """
    directory = Path(directory)
    if config is None:
        config = read_tokenizer_config(directory)
    if config.get("format") == CONFIG_FORMAT:
        return PtmTokenizer.load(directory)
    foreign = _foreign(directory, config)
    if (directory / HFBackend.filename).is_file():
        return _tokenizer_json(foreign, directory / HFBackend.filename)
    for name in SENTENCEPIECE_FILES:
        if (directory / name).is_file():
            return _sentencepiece(foreign, directory / name)
    if (directory / "vocab.txt").is_file():
        return _wordpiece(foreign)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _byte_level_bpe(foreign)
    return None


# -- tokenizer.json -----------------------------------------------------------------------------


def _tokenizer_json(foreign: _Foreign, path: Path) -> PtmTokenizer:
    from ptmcli.tokenization.pipelines import class_pipeline

    data = read_model_file(path)
    backend = hf_backend(data, path)
    description = backend.describe()
    unk = foreign.role_tokens().get("unk")
    expected = class_pipeline(foreign.tokenizer_class, foreign.config, unk)
    if expected is not None:
        _check_added_tokens(foreign, description)
        patched = _as_class_builds(foreign, data, description, expected)
        if patched is not None:
            data, backend = patched, hf_backend(patched, path)
    return PtmTokenizer(backend, _foreign_settings(foreign, backend), model_bytes=data)


def _as_class_builds(foreign: _Foreign, data: bytes, description: dict, expected: dict) -> bytes | None:
    """tokenizer.json with the parts transformers' class rebuilds from tokenizer_config.json set
    as it rebuilds them (None when they already are): ptm must tokenize as transformers does,
    and the saved file then says so too. Padding, truncation, added tokens and the
    post-processor are left as they were."""
    model = description.get("model") or {}
    wanted = expected["model"]
    if model.get("type") != wanted["type"]:
        raise PtmError(f"{foreign.named_by} builds a {wanted['type']} tokenizer, but "
                       f"{foreign.directory / 'tokenizer.json'} holds a {model.get('type')} model")
    # "" and null mean the same for the model's prefixes and suffixes.
    model_changes = {k: v for k, v in wanted.items() if k != "type" and (model.get(k) or None) != (v or None)}
    changed = [k for k in ("normalizer", "pre_tokenizer") if description.get(k) != expected[k]]
    if not model_changes and not changed:
        return None
    original = json.loads(data.decode("utf-8"))
    for key in changed:
        original[key] = expected[key]
    original["model"].update(model_changes)
    return (json.dumps(original, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _check_added_tokens(foreign: _Foreign, description: dict) -> None:
    """A class that rebuilds the pipeline takes its added tokens from tokenizer_config.json's
    added_tokens_decoder when there is one: it must agree with tokenizer.json's."""
    if "added_tokens_decoder" not in foreign.config:
        return
    declared = dict((i, entry["content"]) for i, entry in foreign.declared_added_tokens())
    present = {t["id"]: t["content"] for t in description.get("added_tokens", [])}
    for token_id, content in sorted(declared.items()):
        if present.get(token_id) != content:
            found = f"gives it to {present[token_id]!r}" if token_id in present else "has no added token with that id"
            raise PtmError(f"{foreign.config_path}: added_tokens_decoder gives id {token_id} to {content!r}, but "
                           f"tokenizer.json {found}")
    model_size = len(description.get("model", {}).get("vocab") or ())
    for token_id, content in sorted(present.items()):
        if token_id >= model_size and token_id not in declared:
            raise PtmError(f"{foreign.config_path}: added_tokens_decoder does not list {content!r} (id {token_id}), "
                           f"which tokenizer.json adds; {foreign.tokenizer_class} would not have it")


# -- sentencepiece ------------------------------------------------------------------------------


def _sentencepiece(foreign: _Foreign, path: Path) -> PtmTokenizer:
    data = read_model_file(path)
    steps = _text_steps(foreign, path)
    if foreign.tokenizer_class == "T5Tokenizer":
        data = with_sentinels(data, _t5_extra_ids(foreign))
    backend = SentencePieceBackend.from_bytes(data, steps, name=str(path))
    return PtmTokenizer(backend, _foreign_settings(foreign, backend), model_bytes=data)


SENTINEL = "<extra_id_{}>"


def _t5_extra_ids(foreign: _Foreign) -> int:
    """How many sentinels T5Tokenizer adds after the model's pieces (``extra_ids``, 100 unless told)."""
    count = foreign.config.get("extra_ids", 100)
    if not isinstance(count, int) or count < 0:
        raise PtmError(f"{foreign.config_path}: extra_ids must be a non-negative integer, got {count!r}")
    listed = [t for t in foreign.config.get("additional_special_tokens") or [] if "<extra_id_" in str(_token(t))]
    if listed and count and len(listed) != count:
        raise PtmError(f"{foreign.config_path}: extra_ids {count} but additional_special_tokens lists {len(listed)} "
                       "<extra_id_N> tokens")
    return count or len(listed)


def _sentinel_pieces(count: int) -> bytes:
    """Serialized ModelProto pieces ``<extra_id_{count-1}>`` .. ``<extra_id_0>``, user-defined (matched whole in text)."""
    out = b""
    for i in range(count - 1, -1, -1):
        text = SENTINEL.format(i).encode("utf-8")
        # SentencePiece {piece: 1 (string), score: 2 (float 0.0), type: 3 (USER_DEFINED = 4)}.
        body = b"\x0a" + bytes([len(text)]) + text + b"\x15\x00\x00\x00\x00" + b"\x18\x04"
        out += b"\x0a" + bytes([len(body)]) + body
    return out


def with_sentinels(proto: bytes, count: int) -> bytes:
    """The sentencepiece model with T5's sentinels after its pieces, ``<extra_id_0>`` last, as T5Tokenizer
    numbers them. A repeated protobuf field may continue after other fields, so appending is enough."""
    if count == 0 or SENTINEL.format(0).encode("utf-8") in proto:
        return proto
    return proto + _sentinel_pieces(count)


def split_sentinels(proto: bytes) -> tuple[bytes, int]:
    """(the model without sentinels :func:`with_sentinels` appended, how many there were)."""
    count = 0
    while proto.endswith(_sentinel_pieces(count + 1)):
        count += 1
    return (proto[: len(proto) - len(_sentinel_pieces(count))], count) if count else (proto, 0)


def _text_steps(foreign: _Foreign, path: Path) -> tuple[str, ...]:
    """What the directory's class does to text before the sentencepiece model, as ptm's text steps."""
    config, cls = foreign.config, foreign.tokenizer_class
    if cls in _LOWERCASE_DEFAULT:
        # ALBERT's and XLNet's classes prepare text alike; only the lowercasing default differs.
        if config.get("add_prefix_space") is False:
            raise PtmError(f"{foreign.config_path}: add_prefix_space false is not supported (ptm's sentencepiece "
                           "models always mark the first word as a word start)")
        steps = ["quotes"]
        if not config.get("keep_accents", False):
            steps.append("strip-accents")
        if config.get("do_lower_case", _LOWERCASE_DEFAULT[cls]):
            steps.append("lowercase")
        return tuple(steps)
    if cls == "T5Tokenizer":
        return ()
    if cls is None:
        # No class to follow: do_lower_case is the one key with a plain meaning.
        return ("lowercase",) if config.get("do_lower_case") is True else ()
    raise PtmError(f"{foreign.named_by}: ptm cannot tokenize {path.name} as {cls} does "
                   "(it reproduces AlbertTokenizer, XLNetTokenizer, T5Tokenizer and plain sentencepiece models)")


# -- vocab.txt, vocab.json + merges.txt ---------------------------------------------------------


def _wordpiece(foreign: _Foreign) -> PtmTokenizer:
    from ptmcli.tokenization.pipelines import register_added_tokens
    from ptmcli.tokenization.train import wordpiece_from_vocab

    config = foreign.config
    if foreign.tokenizer_class is not None and foreign.family != "BertTokenizer":
        raise PtmError(f"{foreign.named_by}: ptm reads vocab.txt as BERT's WordPiece tokenizer, "
                       f"which {foreign.tokenizer_class} is not")
    if config.get("do_basic_tokenize") is False:
        raise PtmError(f"{foreign.config_path}: do_basic_tokenize false is not supported "
                       "(ptm's WordPiece always splits on whitespace and punctuation first)")
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    max_length = config.get("model_max_length")
    settings = TokenizerSettings(
        kind="wordpiece",
        lowercase=lowercase,
        # BERT's tokenizers strip accents whenever they lowercase, unless told otherwise.
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        split_cjk=bool(config.get("tokenize_chinese_chars", True)),
        special_tokens={**_BERT_SPECIALS, **foreign.role_tokens()},
        model_max_length=max_length if isinstance(max_length, int) and max_length <= 1_000_000 else 512,
        special_set="bert",
    )
    tokenizer = wordpiece_from_vocab(str(foreign.directory / "vocab.txt"), settings)
    register_added_tokens(tokenizer.backend, foreign.declared_added_tokens(), str(foreign.config_path))
    return tokenizer


def _byte_level_bpe(foreign: _Foreign) -> PtmTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from ptmcli.tokenization.pipelines import register_added_tokens, register_specials

    cls = foreign.tokenizer_class
    if cls not in (None, "GPT2Tokenizer", "RobertaTokenizer"):
        raise PtmError(f"{foreign.named_by}: ptm reads vocab.json + merges.txt as GPT-2's or RoBERTa's byte-level "
                       f"BPE, which {cls} is not")
    directory = foreign.directory
    try:
        model = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as err:  # tokenizers raises plain Exception for malformed files
        raise PtmError(f"{directory}: cannot read vocab.json/merges.txt ({str(err).splitlines()[0]})") from None
    tokenizer = Tokenizer(model)
    prefix_space = bool(foreign.config.get("add_prefix_space", False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    roles = {role: token for role, token in {**_CLASS_SPECIALS["GPT2Tokenizer"], **foreign.role_tokens()}.items()
             if tokenizer.token_to_id(token) is not None}
    if cls == "RobertaTokenizer" and "cls" in roles and "sep" in roles:
        # What RobertaTokenizer adds around a text, for when the tokenizer is written out again.
        tokenizer.post_processor = processors.RobertaProcessing(
            (roles["sep"], tokenizer.token_to_id(roles["sep"])), (roles["cls"], tokenizer.token_to_id(roles["cls"])),
            trim_offsets=bool(foreign.config.get("trim_offsets", True)), add_prefix_space=prefix_space)
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    register_specials(tokenizer, sorted(set(roles.values()), key=tokenizer.token_to_id))
    register_added_tokens(tokenizer, foreign.declared_added_tokens(), str(foreign.config_path))
    backend = HFBackend(tokenizer)
    return PtmTokenizer(backend, _foreign_settings(foreign, backend))


# -- settings -----------------------------------------------------------------------------------


def _foreign_settings(foreign: _Foreign, backend: HFBackend | SentencePieceBackend) -> TokenizerSettings:
    """ptm's settings for a tokenizer read from another tool's directory, from its pipeline as built."""
    config = foreign.config
    if isinstance(backend, HFBackend):
        from ptmcli.tokenization.pipelines import describe_model

        description = backend.describe()
        kind, lowercase = describe_model(description)
        normalizer = description.get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer":
            strip = normalizer.get("strip_accents")
            strip_accents = lowercase if strip is None else bool(strip)
            split_cjk = bool(normalizer.get("handle_chinese_chars"))
        else:
            strip_accents = "StripAccents" in json.dumps(normalizer)
            split_cjk = bool(config.get("tokenize_chinese_chars", kind == "wordpiece"))
        added = [t["content"] for t in description.get("added_tokens", []) if t.get("special")]
        text_steps: tuple[str, ...] = ()
    else:
        kind, text_steps = backend.model_type(), backend.text_steps
        lowercase, strip_accents, split_cjk = "lowercase" in text_steps, "strip-accents" in text_steps, False
        added = [backend.id_to_token(i) for i in backend.special_piece_ids()]
    specials: dict[str, str] = {}
    for token in added:
        for role in _KNOWN_SPECIALS.get(token, ()):
            specials.setdefault(role, token)
    for role, token in foreign.role_tokens().items():
        if backend.token_to_id(token) is not None:
            specials[role] = token
    max_length = config.get("model_max_length", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int) or max_length > 1_000_000:  # HF writes 1e30 for "no limit"
        max_length = DEFAULT_MAX_LENGTH
    return TokenizerSettings(kind=kind, lowercase=lowercase, strip_accents=strip_accents, split_cjk=split_cjk,
                             special_tokens=specials, model_max_length=max_length, text_steps=text_steps)


# -- writing ------------------------------------------------------------------------------------
