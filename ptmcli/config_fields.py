"""Frozen dataclass configs whose fields are also command-line flags.

Each field carries its help text in ``metadata["help"]``. ``cli_parameters``
turns the fields into typer options (all defaulting to None, so we can tell
what the user set), and ``merge`` layers defaults < config file < flags.
Kept free of heavy imports: it runs while building ``--help``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

from ptmcli.errors import PtmError


class Named(int):
    """A word a number option also takes (``--batch-size auto``), as the field's value.

    It is an ``int`` (so the field keeps its type, and ``0``'s place in
    comparisons), yet no typed number is it: code asks ``value is AUTO``. It
    prints as its word; one object per word, kept through copies.
    """

    word: str

    def __new__(cls, word: str) -> Named:
        value = super().__new__(cls, 0)
        value.word = word
        return value

    def __repr__(self) -> str:
        return self.word

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        try:
            return format(self.word, spec)
        except ValueError:  # a number's format (``,d``)
            return int.__format__(self, spec)

    def __copy__(self) -> Named:
        return self

    def __deepcopy__(self, memo) -> Named:
        return self


AUTO = Named("auto")


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None, choices: tuple[str, ...] | None = None,
           default_factory=None, required: str | None = None, named: tuple[Named, ...] = ()):
    """A dataclass field with its command-line help. ``required``: when the flag must be given
    (``"always"``, or the condition, e.g. ``"unless --resume"``), shown in the help; the command checks it.
    ``named``: words a number option takes besides numbers (``(AUTO,)``); the field's help says what they mean."""
    meta = {"help": help, "flag": flag, "short": short, "choices": choices, "required": required, "named": named}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(annotation) -> type:
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing, "Any": Any})  # noqa: S307 - our own annotations only
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def cli_parameters(cls, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """typer parameters for every field of ``cls``: ``--field-name``, default None."""
    import typer

    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        base = _base_type(f.type)
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        # Help text is rich markup: a literal "[default: ...]" in it would be read as a tag and vanish.
        help_text = meta.get("help", "").replace("[", "\\[")
        if meta.get("choices"):
            help_text += f" One of: {', '.join(meta['choices'])}."
        says_default = "[default:" in help_text or "(default:" in help_text
        if meta.get("required"):
            help_text += " \\[required]" if meta["required"] == "always" else f" \\[required {meta['required']}]"
        elif default is not None and default != "" and base is not bool and not says_default:
            help_text += f" \\[default: {default}]"
        if base is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
            if default is not None and not says_default:
                help_text += f" \\[default: {'on' if default else 'off'}]"
        else:
            decls = [flag]
        if meta.get("short"):
            decls.append(meta["short"])
        annotation = base | None
        metavar = "" if base is bool else _METAVARS.get(base, "VALUE")
        extra = {}
        if meta.get("named"):
            metavar = "|".join([metavar, *(n.word for n in meta["named"])])
            extra["parser"] = _named_parser(base, meta["named"])
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                # No type label: the help says what a value is, and bool flags take none.
                default=typer.Option(None, *decls, help=help_text, show_default=False, metavar=metavar, **extra),
                annotation=annotation,
            )
        )
    return params


_METAVARS = {int: "N", float: "X", str: "TEXT", list: "TEXT"}


def _expected(base: type, named: tuple[Named, ...]) -> str:
    return " or ".join([_TYPE_NAMES[base], *(n.word for n in named)])


def _named_parser(base: type, named: tuple[Named, ...]):
    """The command-line parser of a number option that also takes words: the word's ``Named``, else the number."""
    import typer

    words = {n.word: n for n in named}

    def parse(text: str):
        if text.strip().lower() in words:
            return words[text.strip().lower()]
        try:
            return base(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r}: expected {_expected(base, named)}") from None

    return parse


def with_parameters(func, params: list[inspect.Parameter]):
    """Give ``func(**kwargs)`` a real signature so typer builds options from it."""
    func.__signature__ = inspect.Signature(params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


def read_config_file(path: str | Path) -> dict:
    """A JSON or TOML file of config fields (a ``[model]`` table sets model fields)."""
    path = Path(path)
    if not path.is_file():
        raise PtmError(f"--config {path}: no such file")
    text = path.read_bytes()
    try:
        if path.suffix in (".toml", ".tml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text.decode("utf-8"))
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise PtmError(f"--config {path}: not UTF-8 text") from None
    except ValueError as err:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise PtmError(f"--config {path}: cannot parse ({err})") from None


def merge(cls, file_values: dict, flag_values: dict, source: str = "--config"):
    """Build ``cls`` from its defaults, then the config file, then explicit flags."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    if source == "--config" and flag_values.get("config"):
        source = f"--config {flag_values['config']}"
    values: dict[str, Any] = {}
    for key, value in file_values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise PtmError(f"{source}: unknown setting {key!r}")
        values[name] = _typed(names[name], key, value, source)
    for key, value in flag_values.items():
        if value is not None:
            values[key] = value
    for name, value in values.items():
        choices = names[name].metadata.get("choices")
        if choices and value not in choices:
            flag = names[name].metadata.get("flag") or "--" + name.replace("_", "-")
            raise PtmError(f"{flag} {value!r}: expected one of {', '.join(choices)}")
    try:
        return cls(**values)
    except TypeError as err:
        raise PtmError(f"{source}: {err}") from None


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(f: dataclasses.Field, key: str, value: Any, source: str) -> Any:
    """A config-file value of the field's type (an integer stands for a float); else one line naming the key."""
    base = _base_type(f.type)
    if base not in _TYPE_NAMES or (value is None and f.default is None):
        return value
    named = f.metadata.get("named") or ()
    for word in named:
        if isinstance(value, str) and value.strip().lower() == word.word:
            return word
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise PtmError(f"{source}: {key} = {value!r}: expected {_expected(base, named)}")


def parse_size(text: str, flag: str) -> int:
    """``256MB``, ``1GB``, ``4096`` -> bytes."""
    units = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
    s = text.strip().upper()
    number = s.rstrip("KMGB")
    unit = s[len(number):]
    try:
        value = float(number)
    except ValueError:
        raise PtmError(f"{flag} {text!r}: expected a size such as 256MB") from None
    if unit not in units or value <= 0:
        raise PtmError(f"{flag} {text!r}: expected a positive size such as 256MB")
    return int(value * units[unit])


def parse_duration(text: str, flag: str) -> float:
    """``90s``, ``20m``, ``1.5h``, ``3600`` -> seconds."""
    s = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(s[-1:], None)
    number = s[:-1] if scale else s
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise PtmError(f"{flag} {text!r}: expected a duration such as 90m or 1.5h") from None
    if value <= 0:
        raise PtmError(f"{flag} {text!r}: must be positive")
    return value
