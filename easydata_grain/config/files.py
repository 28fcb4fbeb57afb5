"""Config files: YAML (PyYAML's safe loader) and JSON, from a file or from text, with a key
given twice refused (both formats otherwise keep the last value silently)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a mapping that gives one key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:
                continue  # an unhashable key: the base class raises its own error
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (first on line {first + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _file_or_text(source: str | Path, suffixes: tuple[str, ...]) -> tuple[str, str | None]:
    """The text to parse and the file it came from (None for text given as such)."""
    if isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and source.strip().endswith(suffixes)
    ):
        path = Path(source)
        return path.read_text(encoding="utf-8"), str(path)
    if not isinstance(source, str):
        raise TypeError(f"expected a path or text, got {type(source).__name__}")
    return source, None


def read_yaml(source: str | Path) -> tuple[Any, str | None]:
    """The data of a YAML file or text, and the file's name (None for text)."""
    text, name = _file_or_text(source, (".yaml", ".yml"))
    try:
        return yaml.load(text, Loader=_UniqueKeySafeLoader), name
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{name or 'YAML text'}: {where}{problem}") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"the key {key!r} is given twice in one object")
        data[key] = value
    return data


def read_json(source: str | Path) -> tuple[Any, str | None]:
    """The data of a JSON file or text, and the file's name (None for text)."""
    text, name = _file_or_text(source, (".json",))
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs), name
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: "
        raise ValueError(f"{name or 'JSON text'}: {where}{exc.msg}") from None
    except ValueError as exc:
        raise ValueError(f"{name or 'JSON text'}: {exc}") from None
