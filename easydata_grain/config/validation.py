"""The machinery every config dataclass shares: fields checked against their type hints on
construction, dicts converted to sub-configs, and errors that name the field's path.

A config class is a frozen dataclass deriving from ``Config``. Its ``__post_init__`` checks
every field against its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``tuple[X, ...]``, ``dict[str, X]``, unions, ``Callable``, ``Any`` and other config classes),
converts what has one obvious form (a list to a tuple, a dict to its sub-config, an int to a
float), applies the bounds declared with ``bounded`` and then the class's own ``_check``.

Errors are ``TypeError`` (a value of the wrong type) or ``ValueError`` (anything else) whose
message starts with the field's path: ``datasets[1].tokenizer.max_lenght: unknown field; did
you mean max_length?``. The path is relative to the dict given to ``from_dict`` (or starts with
the class's name when a config is constructed directly).
"""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import dataclasses
import difflib
import functools
import json
import math
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from easydata_grain.config.files import read_json, read_yaml

_PATH: contextvars.ContextVar[str | None] = contextvars.ContextVar("config_path", default=None)
"""The path of the config being built by ``from_dict`` (None: constructed directly)."""


def join(path: str, name: str) -> str:
    """``path.name``, or ``name`` at the root."""
    return f"{path}.{name}" if path else name


def did_you_mean(word: str, choices: collections.abc.Iterable[str], quote: bool = False) -> str:
    """``"; did you mean X?"`` for the closest of ``choices`` (``'X'`` when ``quote``: a value
    rather than a field name), or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {close[0]}?"


def describe_value(value: Any) -> str:
    """A value with its type, shortened: ``str '8'``."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def bounded(default: Any = dataclasses.MISSING, *, minimum: float | None = None) -> Any:
    """A field whose value, when not None, must be ``>= minimum`` (checked on construction)."""
    return dataclasses.field(default=default, metadata={"minimum": minimum})


@contextlib.contextmanager
def building_at(path: str) -> Iterator[None]:
    """Configs constructed inside report their errors under ``path``."""
    token = _PATH.set(path)
    try:
        yield
    finally:
        _PATH.reset(token)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(hint: Any) -> str:
    """A type hint in words, as error messages show it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if hint is Any:
        return "anything"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if origin is collections.abc.Callable:
        return "a function"
    if isinstance(hint, type) and issubclass(hint, Config):
        return f"{hint.__name__} (a mapping)"
    return getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the outer type of ``hint`` (its contents are checked later)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(a) for a in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, Mapping)
    if origin is collections.abc.Callable:
        return callable(value)
    if isinstance(hint, type) and issubclass(hint, Config):
        return isinstance(value, hint | Mapping)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str | os.PathLike)  # a pathlib.Path is a path
    return isinstance(value, hint)


def convert(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked against ``hint`` and put in its one form (tuples, sub-configs, floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for alternative in args:
            if _fits(value, alternative):
                return convert(value, alternative, path)
        raise TypeError(f"{path}: expected {type_name(hint)}, got {describe_value(value)}")
    if not _fits(value, hint):
        raise TypeError(f"{path}: expected {type_name(hint)}, got {describe_value(value)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            hint_text = did_you_mean(value, args, quote=True) if isinstance(value, str) else ""
            raise ValueError(f"{path}: expected one of {choices}, got {value!r}{hint_text}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            raise TypeError(f"{path}: expected {type_name(hint)}, got {describe_value(value)}")
        return tuple(convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        converted = {}
        for key, item in value.items():
            convert(key, args[0], f"{path} key {key!r}")
            converted[key] = convert(item, args[1], f"{path}[{key!r}]")
        return converted
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, Mapping):
        return hint.build(value, path)
    if hint is str:
        return os.fspath(value)
    if hint is float:
        if not math.isfinite(value):
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    return value


class Config:
    """The base of the config dataclasses: checked on construction, built from dicts, YAML or
    JSON, written back with ``to_dict`` (``from_dict(c.to_dict()) == c``)."""

    retired: ClassVar[dict[str, str]] = {}
    """EasyData fields this class does not keep, and what to use instead."""

    def __post_init__(self) -> None:
        """Check and convert every field, then the class's own rules (``_check``)."""
        path = _PATH.get()
        prefix = type(self).__name__ if path is None else path
        hints = _hints(type(self))
        with building_at(prefix):  # a sub-config made here reports under this one
            for field in dataclasses.fields(self):
                where = join(prefix, field.name)
                value = getattr(self, field.name)
                converted = convert(value, hints[field.name], where)
                minimum = field.metadata.get("minimum")
                if minimum is not None and converted is not None and converted < minimum:
                    raise ValueError(f"{where}: must be >= {minimum}, got {converted!r}")
                if converted is not value:
                    object.__setattr__(self, field.name, converted)
            self._check(prefix)

    def _check(self, path: str) -> None:
        """Rules across fields (subclasses); ``path`` is this config's, for messages."""

    @classmethod
    def build(cls, data: Mapping[str, Any], path: str) -> Self:
        """A config from a mapping of its fields, errors reported under ``path``."""
        if not isinstance(data, Mapping):
            where = path or cls.__name__
            raise TypeError(f"{where}: expected {type_name(cls)}, got {describe_value(data)}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if not isinstance(key, str):
                raise TypeError(f"{join(path, repr(key))}: field names are strings")
            if key in names:
                continue
            if key in cls.retired:
                raise ValueError(
                    f"{join(path, key)}: EasyData's {key} is not supported here: {cls.retired[key]}"
                )
            raise ValueError(f"{join(path, key)}: unknown field{did_you_mean(key, names)}")
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if required and field.name not in data:
                raise ValueError(f"{join(path, field.name)}: required field missing")
        with building_at(path):
            return cls(**data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A config from a dict (as YAML or JSON give it); nested dicts become sub-configs."""
        return cls.build(data, "")

    @classmethod
    def from_yaml(cls, source: str | Path) -> Self:
        """A config from a YAML file (a ``Path``, or a ``str`` ending in ``.yaml``/``.yml``) or
        from YAML text (any other ``str``). Read with ``yaml.safe_load``'s loader; a key given
        twice is an error."""
        return cls._from_file(*read_yaml(source))

    @classmethod
    def from_json(cls, source: str | Path) -> Self:
        """A config from a JSON file (a ``Path``, or a ``str`` ending in ``.json``) or from JSON
        text (any other ``str``); a key given twice is an error."""
        return cls._from_file(*read_json(source))

    @classmethod
    def _from_file(cls, data: Any, name: str | None) -> Self:
        """``from_dict(data)``, its errors prefixed with the file's name."""
        if name is None:
            return cls.from_dict(data)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (sub-configs as dicts, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_yaml(self) -> str:
        """The config as YAML text (``from_yaml`` reads it back equal)."""
        import yaml

        return yaml.safe_dump(self._serializable(), sort_keys=False)

    def to_json(self) -> str:
        """The config as JSON text (``from_json`` reads it back equal)."""
        return json.dumps(self._serializable(), indent=2)

    def _serializable(self) -> dict[str, Any]:
        data = self.to_dict()
        _check_serializable(data, "")
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_serializable(value: Any, path: str) -> None:
    """Raise a ``TypeError`` naming the first value YAML and JSON cannot hold (a function)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_serializable(item, join(path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_serializable(item, f"{path}[{i}]")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise TypeError(
            f"{path}: a {type(value).__name__} cannot be written as YAML or JSON; set it in "
            "Python after loading the file"
        )


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)
