"""``PtmTokenizer``: one object for every tokenizer ptm trains or reads.

A tokenizer directory holds the model file (``tokenizer.json`` for Hugging Face
``tokenizers``, ``tokenizer.model`` for sentencepiece) and
``tokenizer_config.json``. The config carries ptm's own keys (``format``,
``kind``, ``special_tokens`` ...) and the keys Hugging Face tokenizers use
(``do_lower_case``, ``unk_token`` ...), so the directory loads in either.
Directories written by other tools (a Hugging Face model directory with a
``tokenizer.json``) load too; their settings are inferred.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.textio.atomic import atomic_directory
from ptmcli.tokenization.backends import HFBackend, SentencePieceBackend
from ptmcli.tokenization.specials import ROLES, SENTENCEPIECE_MODELS

CONFIG_FILE = "tokenizer_config.json"
CONFIG_FORMAT = "ptm-tokenizer"
CONFIG_VERSION = 1
DEFAULT_MAX_LENGTH = 512

# Names of special tokens in directories written by other tools, for inferring roles.
_KNOWN_SPECIALS = {
    "[PAD]": ("pad",), "<pad>": ("pad",), "[UNK]": ("unk",), "<unk>": ("unk",),
    "[CLS]": ("cls",), "[SEP]": ("sep",), "[MASK]": ("mask",), "<mask>": ("mask",),
    "<s>": ("bos",), "</s>": ("eos",), "<|endoftext|>": ("bos", "eos"),
}


@dataclass
class TokenizerSettings:
    """What ``tokenizer_config.json`` records besides the model file itself."""

    kind: str
    lowercase: bool = False
    strip_accents: bool = False
    split_cjk: bool = False
    special_tokens: dict[str, str] = field(default_factory=dict)
    model_max_length: int = DEFAULT_MAX_LENGTH
    special_set: str | None = None


class PtmTokenizer:
    """A trained tokenizer: encode text to ids (no special tokens added), decode, save, load."""

    def __init__(self, backend: HFBackend | SentencePieceBackend, settings: TokenizerSettings,
                 model_bytes: bytes | None = None) -> None:
        self._backend = backend
        self._settings = settings
        self._model_bytes = model_bytes
        unknown = sorted(set(settings.special_tokens) - set(ROLES))
        if unknown:
            raise PtmError(f"unknown special-token roles {unknown}; roles are {', '.join(ROLES)}")
        missing = [t for t in settings.special_tokens.values() if backend.token_to_id(t) is None]
        if missing:
            raise PtmError(f"special tokens {missing} are not in the tokenizer's vocabulary")

    # -- settings ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._settings.kind

    @property
    def lowercase(self) -> bool:
        return self._settings.lowercase

    @property
    def strip_accents(self) -> bool:
        return self._settings.strip_accents

    @property
    def split_cjk(self) -> bool:
        return self._settings.split_cjk

    @property
    def model_max_length(self) -> int:
        return self._settings.model_max_length

    @property
    def special_tokens(self) -> dict[str, str]:
        return dict(self._settings.special_tokens)

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    @property
    def backend(self):
        """The underlying ``tokenizers.Tokenizer`` or ``sentencepiece.SentencePieceProcessor``."""
        return self._backend.tokenizer if isinstance(self._backend, HFBackend) else self._backend.processor

    def _role_id(self, role: str) -> int | None:
        token = self._settings.special_tokens.get(role)
        return None if token is None else self._backend.token_to_id(token)

    pad_id = property(lambda self: self._role_id("pad"))
    unk_id = property(lambda self: self._role_id("unk"))
    cls_id = property(lambda self: self._role_id("cls"))
    sep_id = property(lambda self: self._role_id("sep"))
    mask_id = property(lambda self: self._role_id("mask"))
    bos_id = property(lambda self: self._role_id("bos"))
    eos_id = property(lambda self: self._role_id("eos"))

    @property
    def all_special_ids(self) -> list[int]:
        ids = {self._backend.token_to_id(t) for t in self._settings.special_tokens.values()}
        return sorted(i for i in ids if i is not None)

    @property
    def sha256(self) -> str:
        """sha256 of the model file (tokenizer.json or tokenizer.model) as saved."""
        return hashlib.sha256(self._model_file_bytes()).hexdigest()

    def _model_file_bytes(self) -> bytes:
        if self._model_bytes is None:
            self._model_bytes = self._backend.model_bytes()
        return self._model_bytes

    def __repr__(self) -> str:
        return f"PtmTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    # -- encoding ---------------------------------------------------------------------------

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens; batched in the library's native threads."""
        return self._backend.encode_batch(list(texts))

    def encode_batch_words(self, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
        """(ids, starts_word) per text: whether each token begins a word of the pre-tokenizer.

        Derived from the tokenizer's word boundaries (word ids, or sentencepiece's
        ▁), so it holds for every model kind; special tokens start a word.
        """
        return self._backend.encode_batch_words(list(texts))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens left out."""
        return self._backend.decode(list(ids), frozenset(self.all_special_ids))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._backend.id_to_token(i) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    # -- files ------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        """tokenizer_config.json: ptm's keys, then the equivalent Hugging Face keys."""
        s = self._settings
        config = {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "kind": s.kind,
            "lowercase": s.lowercase,
            "strip_accents": s.strip_accents,
            "split_cjk": s.split_cjk,
            "special_tokens": dict(s.special_tokens),
            "special_set": s.special_set,
            "model_max_length": s.model_max_length,
            "vocab_size": self.vocab_size,
            "do_lower_case": s.lowercase,
            "tokenize_chinese_chars": s.split_cjk,
        }
        for role, token in s.special_tokens.items():
            config[f"{role}_token"] = token
        if isinstance(self._backend, HFBackend):
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        return config

    def write_files(self, directory: str | Path) -> None:
        """Write the model file, tokenizer_config.json (and vocab.txt for wordpiece) into an
        existing directory; a caller building a checkpoint directory atomically uses this."""
        from ptmcli.tokenization.pipelines import write_vocab_file

        directory = Path(directory)
        (directory / self._backend.filename).write_bytes(self._model_file_bytes())
        (directory / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        if self.kind == "wordpiece" and isinstance(self._backend, HFBackend):
            write_vocab_file(self._backend.tokenizer, directory / "vocab.txt")

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write a tokenizer directory atomically; an existing one is replaced only with ``overwrite``."""
        with atomic_directory(path, overwrite=overwrite) as staging:
            self.write_files(staging)

    @classmethod
    def load(cls, path: str | Path) -> PtmTokenizer:
        """Read a tokenizer directory (ptm's, or a Hugging Face one with tokenizer.json)."""
        directory = Path(path)
        if not directory.is_dir():
            why = "it does not exist" if not directory.exists() else "it is a file, not a directory"
            raise PtmError(f"{directory} is not a tokenizer directory: {why}")
        json_file, model_file = directory / HFBackend.filename, directory / SentencePieceBackend.filename
        if not json_file.is_file() and not model_file.is_file():
            raise PtmError(f"{directory} is not a tokenizer directory: it has neither tokenizer.json "
                           "nor tokenizer.model")
        config = _read_config(directory)
        if config.get("format") == CONFIG_FORMAT:
            use_sentencepiece = config.get("kind") in SENTENCEPIECE_MODELS
        else:
            use_sentencepiece = not json_file.is_file()
        model_path = model_file if use_sentencepiece else json_file
        if not model_path.is_file():
            raise PtmError(f"{directory} is not a tokenizer directory: it has no {model_path.name}")
        try:
            data = model_path.read_bytes()
        except OSError as err:
            raise PtmError(f"cannot read {model_path}: {err.strerror}") from None
        if use_sentencepiece:
            backend: HFBackend | SentencePieceBackend = SentencePieceBackend.from_bytes(data)
        else:
            try:
                backend = HFBackend.from_bytes(data)
            except Exception as err:  # tokenizers raises plain Exception for a malformed file
                raise PtmError(f"cannot read {model_path}: {str(err).splitlines()[0]}") from None
        if config.get("format") == CONFIG_FORMAT:
            settings = _settings_from_ptm_config(config, directory)
        else:
            settings = _settings_from_foreign(config, backend)
        return cls(backend, settings, model_bytes=data)


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise PtmError(f"{path} must hold a JSON object")
    fmt = config.get("format")
    if fmt is not None and fmt != CONFIG_FORMAT:
        raise PtmError(f"{path} has format {fmt!r}; expected {CONFIG_FORMAT!r}")
    if fmt == CONFIG_FORMAT and config.get("version") != CONFIG_VERSION:
        raise PtmError(f"{path} has version {config.get('version')!r}; this ptm reads version {CONFIG_VERSION}")
    return config


def _settings_from_ptm_config(config: dict, directory: Path) -> TokenizerSettings:
    try:
        return TokenizerSettings(
            kind=str(config["kind"]),
            lowercase=bool(config.get("lowercase", False)),
            strip_accents=bool(config.get("strip_accents", False)),
            split_cjk=bool(config.get("split_cjk", False)),
            special_tokens={str(k): str(v) for k, v in dict(config.get("special_tokens", {})).items()},
            model_max_length=int(config.get("model_max_length", DEFAULT_MAX_LENGTH)),
            special_set=config.get("special_set"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise PtmError(f"{directory / CONFIG_FILE}: bad or missing entry ({err})") from None


def _settings_from_foreign(config: dict, backend: HFBackend | SentencePieceBackend) -> TokenizerSettings:
    """Best-effort settings for a directory another tool wrote (no ptm config)."""
    if isinstance(backend, HFBackend):
        from ptmcli.tokenization.pipelines import describe_model

        description = backend.describe()
        kind, lowercase = describe_model(description)
        added = [t["content"] for t in description.get("added_tokens", []) if t.get("special")]
    else:
        kind, lowercase = backend.model_type(), False
        added = [backend.id_to_token(i) for i in backend.special_piece_ids()]
    specials: dict[str, str] = {}
    for token in added:
        for role in _KNOWN_SPECIALS.get(token, ()):
            specials.setdefault(role, token)
    for role in ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and backend.token_to_id(value) is not None:
            specials[role] = value
    max_length = config.get("model_max_length", DEFAULT_MAX_LENGTH)
    if not isinstance(max_length, int) or max_length > 1_000_000:  # HF writes 1e30 for "no limit"
        max_length = DEFAULT_MAX_LENGTH
    lowercase = bool(config.get("do_lower_case", lowercase))
    return TokenizerSettings(kind=kind, lowercase=lowercase, strip_accents=bool(config.get("strip_accents") or False),
                             split_cjk=bool(config.get("tokenize_chinese_chars", kind == "wordpiece")),
                             special_tokens=specials, model_max_length=max_length)
