"""``PtmTokenizer``: one object for every tokenizer ptm trains or reads.

A tokenizer directory holds the model file (``tokenizer.json`` for Hugging Face
``tokenizers``, ``tokenizer.model`` for sentencepiece) and
``tokenizer_config.json``. The config carries ptm's own keys (``format``,
``kind``, ``special_tokens`` ...) and the keys Hugging Face tokenizers use
(``do_lower_case``, ``unk_token`` ...), so the directory loads in either.
Directories written by other tools (a Hugging Face model directory with a
``tokenizer.json``, a sentencepiece ``spiece.model``, a BERT ``vocab.txt``, a
GPT-2 ``vocab.json`` + ``merges.txt``) load too, read as transformers reads
them (``ptmcli.tokenization.published``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ptmcli.errors import PtmError
from ptmcli.textio.atomic import atomic_directory
from ptmcli.tokenization.backends import TEXT_STEPS, HFBackend, SentencePieceBackend
from ptmcli.tokenization.specials import ROLES, SENTENCEPIECE_MODELS

CONFIG_FILE = "tokenizer_config.json"
CONFIG_FORMAT = "ptm-tokenizer"
CONFIG_VERSION = 1
DEFAULT_MAX_LENGTH = 512


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
    text_steps: tuple[str, ...] = ()
    """Steps applied to text before a sentencepiece model (``backends.TEXT_STEPS``): what
    published tokenizers such as ALBERT's do outside the model file."""


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
        if tuple(settings.text_steps) != getattr(backend, "text_steps", ()):
            raise ValueError("the settings' text steps must be the backend's")

    # -- settings ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._settings.kind

    @property
    def word_level(self) -> bool:
        """One id per whole word (a ``WordLevel`` model): what static word vectors are trained on.

        Read from the model itself, so a tokenizer made by ``ptm convert`` from a vector file counts too.
        """
        describe = getattr(self._backend, "describe", None)
        return describe is not None and (describe().get("model") or {}).get("type") == "WordLevel"

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
    def text_steps(self) -> tuple[str, ...]:
        return tuple(self._settings.text_steps)

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
        return hashlib.sha256(self.model_file_bytes()).hexdigest()

    def model_file_bytes(self) -> bytes:
        """The model file as saved: a published tokenizer.json keeps the padding and
        truncation it stores, which the tokenizer in use has switched off."""
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

    def encode_batch_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, (start, end) character span of each token in its text) per text, without special tokens:
        where a token came from, for mapping answers to tokens and predicted tokens back to text."""
        return self._backend.encode_batch_offsets(list(texts))

    def prepare_text(self, text: str) -> str:
        """What the model's own tokenizer is given: ``text`` after a published sentencepiece
        model's text steps (lowercasing ...); unchanged for every other tokenizer."""
        return self._backend.prepare(text)

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
            **({"text_steps": list(s.text_steps)} if s.text_steps else {}),
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
        (directory / self._backend.filename).write_bytes(self.model_file_bytes())
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
        """Read a tokenizer directory: ptm's, or one another tool wrote (read as transformers reads it)."""
        directory = Path(path)
        if not directory.is_dir():
            why = "it does not exist" if not directory.exists() else "it is a file, not a directory"
            raise PtmError(f"{directory} is not a tokenizer directory: {why}")
        config = read_tokenizer_config(directory)
        if config.get("format") != CONFIG_FORMAT:
            from ptmcli.tokenization.published import read_hf_tokenizer

            tokenizer = read_hf_tokenizer(directory, config)
            if tokenizer is None:
                raise PtmError(f"{directory} is not a tokenizer directory: it has neither tokenizer.json "
                               "nor tokenizer.model")
            return tokenizer
        settings = _settings_from_ptm_config(config, directory)
        use_sentencepiece = settings.kind in SENTENCEPIECE_MODELS
        model_path = directory / (SentencePieceBackend.filename if use_sentencepiece else HFBackend.filename)
        if not model_path.is_file():
            raise PtmError(f"{directory} is not a tokenizer directory: it has no {model_path.name}")
        data = read_model_file(model_path)
        if use_sentencepiece:
            backend: HFBackend | SentencePieceBackend = SentencePieceBackend.from_bytes(data, settings.text_steps)
        else:
            backend = hf_backend(data, model_path)
        return cls(backend, settings, model_bytes=data)


def read_model_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise PtmError(f"cannot read {path}: {err.strerror}") from None


def hf_backend(data: bytes, path: Path) -> HFBackend:
    try:
        return HFBackend.from_bytes(data)
    except Exception as err:  # tokenizers raises plain Exception for a malformed file
        raise PtmError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def read_json_object(path: Path) -> dict:
    """A JSON object file ({} when absent); one line naming the file when it is not one."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PtmError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise PtmError(f"{path} must hold a JSON object")
    return value


def read_tokenizer_config(directory: Path) -> dict:
    """tokenizer_config.json as a dict ({} when absent); checked when it is ptm's."""
    path = directory / CONFIG_FILE
    config = read_json_object(path)
    fmt = config.get("format")
    if fmt is not None and fmt != CONFIG_FORMAT:
        raise PtmError(f"{path} has format {fmt!r}; expected {CONFIG_FORMAT!r}")
    if fmt == CONFIG_FORMAT and config.get("version") != CONFIG_VERSION:
        raise PtmError(f"{path} has version {config.get('version')!r}; this ptm reads version {CONFIG_VERSION}")
    return config


def _settings_from_ptm_config(config: dict, directory: Path) -> TokenizerSettings:
    try:
        settings = TokenizerSettings(
            kind=str(config["kind"]),
            lowercase=bool(config.get("lowercase", False)),
            strip_accents=bool(config.get("strip_accents", False)),
            split_cjk=bool(config.get("split_cjk", False)),
            special_tokens={str(k): str(v) for k, v in dict(config.get("special_tokens", {})).items()},
            model_max_length=int(config.get("model_max_length", DEFAULT_MAX_LENGTH)),
            special_set=config.get("special_set"),
            text_steps=tuple(str(step) for step in config.get("text_steps", ())),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise PtmError(f"{directory / CONFIG_FILE}: bad or missing entry ({err})") from None
    unknown = [step for step in settings.text_steps if step not in TEXT_STEPS]
    if unknown:
        raise PtmError(f"{directory / CONFIG_FILE}: text_steps has unknown step {unknown[0]!r}; "
                       f"steps are {', '.join(TEXT_STEPS)}")
    if settings.text_steps and settings.kind not in SENTENCEPIECE_MODELS:
        raise PtmError(f"{directory / CONFIG_FILE}: text_steps apply only to sentencepiece models, not {settings.kind}")
    settings.text_steps = tuple(step for step in TEXT_STEPS if step in settings.text_steps)
    return settings
