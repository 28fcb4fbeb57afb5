"""Field operations on dict rows: rename, select, drop, extract, combine, add, map one field.

Each is a Grain ``Map`` that returns a new dict (the input row is not changed) and declares the
fields it reads and writes. A field the transform needs and the row lacks raises
``MissingColumnError`` naming the row's fields (the shard and row are added by
``TransformedShardedSource``); ``strict=False`` lets the rename/select/drop ones skip it.
Writing a field the row already has is an error unless ``overwrite=True`` (writing back into
the field read, as ``MapField("text", str.strip)`` does, is not an overwrite). EasyDeL's
argument names (``source_path``, ``target_field``, ``source_fields``, ``combiner``,
``drop_sources``, ``AddField(name, callable)``) are accepted.
"""

from __future__ import annotations

import copy
import enum
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError, MissingColumnError
from easydata_grain.transforms.base import (
    FieldMap,
    check_callable,
    check_name,
    check_new_field,
    check_row,
    describe_row,
    either,
    field_names,
    field_of,
    guarded,
)
from easydata_grain.types import Row


class _Missing(enum.Enum):
    """No value given (an enum member, so it stays itself through pickling)."""

    MISSING = enum.auto()


_MISSING: Any = _Missing.MISSING
_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[-?\d+\])*")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


class RenameFields(FieldMap):
    """Rename fields (``{"old": "new"}``), keeping their order and every other field.

    Renaming onto a field the row already has (and that is not renamed away) is an error, not
    an overwrite. ``strict=False`` skips renames of fields the row lacks.
    """

    def __init__(self, mapping: Mapping[str, str], *, strict: bool = True):
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"mapping must be a non-empty dict of old -> new, got {mapping!r}")
        for old, new in mapping.items():
            check_name(old, "A renamed field")
            check_name(new, "A new field name")
        if len(set(mapping.values())) != len(mapping):
            raise ValueError(f"Two fields are renamed to the same name: {dict(mapping)!r}")
        self.mapping = dict(mapping)
        self.strict = strict
        # a target that is not renamed away is read: the row must not have it
        self.reads = frozenset(self.mapping) | (frozenset(self.mapping.values()) - set(mapping))
        self.writes = frozenset(self.mapping) | frozenset(self.mapping.values())
        self._seal()

    def config(self) -> dict[str, Any]:
        """The renames and strictness."""
        return {"mapping": self.mapping, "strict": self.strict}

    def map(self, element: Row) -> Row:
        """The row with its fields renamed."""
        check_row(element, self)
        if self.strict:
            for old in self.mapping:
                field_of(element, old, self)
        for old, new in self.mapping.items():
            if new in element and new not in self.mapping and old in element:
                raise MalformedRowError(
                    f"RenameFields would rename {old!r} to {new!r}, but {describe_row(element)} "
                    f"already has {new!r}.",
                    hint="Drop or rename that field first.",
                )
        return {self.mapping.get(k, k): v for k, v in element.items()}


class SelectFields(FieldMap):
    """Keep only the given fields, in the given order (``strict=False``: skip absent ones)."""

    def __init__(self, fields: str | Sequence[str], *, strict: bool = True):
        self.fields = field_names(fields, "fields")
        self.strict = strict
        self.reads = frozenset(self.fields)
        self.writes = None  # every other field is removed
        self._seal()

    def config(self) -> dict[str, Any]:
        """The kept fields and strictness."""
        return {"fields": self.fields, "strict": self.strict}

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """Only the selected fields, whatever comes after."""
        return self.reads

    def map(self, element: Row) -> Row:
        """The row with only the selected fields."""
        if self.strict:
            return {f: field_of(element, f, self) for f in self.fields}
        check_row(element, self)
        return {f: element[f] for f in self.fields if f in element}


class DropFields(FieldMap):
    """Remove the given fields (``strict=False``: fields the row lacks are ignored)."""

    def __init__(self, fields: str | Sequence[str], *, strict: bool = True):
        self.fields = field_names(fields, "fields")
        self.strict = strict
        self.reads = frozenset(self.fields) if strict else frozenset()  # strict: must exist
        self.writes = frozenset(self.fields)
        self._seal()

    def config(self) -> dict[str, Any]:
        """The dropped fields and strictness."""
        return {"fields": self.fields, "strict": self.strict}

    def map(self, element: Row) -> Row:
        """The row without the dropped fields."""
        check_row(element, self)
        if self.strict:
            for field in self.fields:
                field_of(element, field, self)
        return {k: v for k, v in element.items() if k not in self.writes}


def parse_path(path: str) -> tuple[str | int, ...]:
    """``"a.b[0].c"`` -> ``("a", "b", 0, "c")``: dots between keys, ``[i]`` list indices."""
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise ValueError(
            f"path must be a field name followed by .key or [index] parts (like 'a.b[0].c'), "
            f"got {path!r}"
        )
    return tuple(key if key else int(index) for key, index in _PATH_PART.findall(path))


class ExtractField(FieldMap):
    """Copy a nested value into a top-level field: ``ExtractField("meta.scores[0]", "score")``.

    The path's parts are dict keys (after dots) and list indices (``[i]``, negative from the
    end). A missing key or index raises ``MissingColumnError`` naming where the path broke,
    unless a ``default`` is given (EasyDeL's ``ExtractField`` gives None: pass
    ``default=None``). ``source_path``/``target_field`` are EasyDeL's names of the two
    arguments. An output field the row has is an error unless ``overwrite=True`` or it is the
    path's first field.
    """

    def __init__(
        self,
        path: str | None = None,
        output_field: str | None = None,
        *,
        default: Any = _MISSING,
        overwrite: bool = False,
        source_path: str | None = None,
        target_field: str | None = None,
    ):
        self.path = either(path, source_path, ("path", "source_path"))
        self.parts = parse_path(self.path)
        self.output_field = check_name(
            either(output_field, target_field, ("output_field", "target_field")), "output_field"
        )
        self.default = default
        self.overwrite = overwrite or self.output_field == self.parts[0]
        self.reads = guarded(frozenset({str(self.parts[0])}), self.output_field, self.overwrite)
        self.writes = frozenset({self.output_field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The path, the output field, the default (if any) and whether it may overwrite."""
        shown = {"path": self.path, "output_field": self.output_field}
        if self.default is not _MISSING:
            shown["default"] = self.default
        return {**shown, "overwrite": self.overwrite}

    def map(self, element: Row) -> Row:
        """The row with the extracted value added."""
        check_row(element, self)
        if not self.overwrite:
            check_new_field(element, self.output_field, f"ExtractField({self.path!r})")
        value: Any = element
        for depth, part in enumerate(self.parts):
            try:
                if isinstance(part, int):
                    if isinstance(value, Mapping | str | bytes):
                        raise TypeError
                    value = value[part]
                elif isinstance(value, Mapping):
                    value = value[part]
                else:
                    raise TypeError
            except (KeyError, IndexError, TypeError):
                if self.default is not _MISSING:
                    value = self.default
                    break
                walked = self._walked(depth)
                found = f"a {type(value).__name__}"
                if isinstance(value, Mapping):
                    found += f" with keys {sorted(map(str, value))}"
                elif isinstance(value, Sequence) and not isinstance(value, str):
                    found += f" of length {len(value)}"
                raise MissingColumnError(
                    f"ExtractField({self.path!r}) found no {part!r} in "
                    f"{walked or 'the row'} ({found}) of {describe_row(element)}.",
                    hint="Give default=... for rows that may lack it.",
                ) from None
        out = dict(element)
        out[self.output_field] = value
        return out

    def _walked(self, depth: int) -> str:
        text = ""
        for part in self.parts[:depth]:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


class CombineFields(FieldMap):
    """Join fields into one: ``separator.join`` of the values, ``template.format``, or
    ``combiner(values)``.

    With ``template`` (``"{instruction}\\n\\n{input}"``) the fields are its placeholders;
    with ``combiner`` (a function of the list of values, in field order) its result is the
    value; otherwise the values are joined with ``separator``, None and empty strings left out
    when ``skip_empty``. A number is written with ``str``; any other value that is not
    a string is an error (pass a ``combiner`` for those). ``drop_sources`` removes the fields.
    ``source_fields``/``target_field`` are EasyDeL's names of the first two arguments. An
    output field the row has (not one of ``fields``) is an error unless ``overwrite=True``.
    """

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        output_field: str | None = None,
        *,
        separator: str = " ",
        template: str | None = None,
        combiner: Callable[[list[Any]], Any] | None = None,
        skip_empty: bool = True,
        drop_sources: bool = False,
        overwrite: bool = False,
        source_fields: Sequence[str] | None = None,
        target_field: str | None = None,
    ):
        self.fields = field_names(
            either(fields, source_fields, ("fields", "source_fields")), "fields"
        )
        self.output_field = check_name(
            either(output_field, target_field, ("output_field", "target_field")), "output_field"
        )
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a str, got {separator!r}")
        if template is not None and combiner is not None:
            raise ValueError("CombineFields takes template=... or combiner=..., not both.")
        if combiner is not None:
            check_callable(combiner, "combiner")
        if template is not None:
            if not isinstance(template, str):
                raise TypeError(f"template must be a str, got {template!r}")
            try:
                template.format_map({f: "" for f in self.fields})
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"template {template!r} uses a placeholder that is not one of the fields "
                    f"{list(self.fields)}: {error!r}"
                ) from None
        self.separator = separator
        self.template = template
        self.combiner = combiner
        self.skip_empty = skip_empty
        self.drop_sources = drop_sources
        self.overwrite = overwrite or self.output_field in self.fields
        self.reads = guarded(frozenset(self.fields), self.output_field, self.overwrite)
        self.writes = frozenset({self.output_field}) | (
            frozenset(self.fields) if drop_sources else frozenset()
        )
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields, output, separator, template or combiner, and the flags."""
        return {
            "fields": self.fields,
            "output_field": self.output_field,
            "separator": self.separator,
            "template": self.template,
            "combiner": self.combiner,
            "skip_empty": self.skip_empty,
            "drop_sources": self.drop_sources,
            "overwrite": self.overwrite,
        }

    def map(self, element: Row) -> Row:
        """The row with the combined value added."""
        values = {field: field_of(element, field, self) for field in self.fields}
        if not self.overwrite:
            check_new_field(element, self.output_field, "CombineFields")
        if self.combiner is not None:
            combined = self.combiner(list(values.values()))
        elif self.template is not None:
            combined = self.template.format_map(self._texts(values, element))
        else:
            texts = self._texts(values, element)
            combined = self.separator.join(t for t in texts.values() if t or not self.skip_empty)
        dropped = set(self.fields) if self.drop_sources else set()
        out = {k: v for k, v in element.items() if k not in dropped}
        out[self.output_field] = combined
        return out

    def _texts(self, values: dict[str, Any], row: Row) -> dict[str, str]:
        """The values as strings: numbers by ``str``, None as "" when ``skip_empty``; any other
        value is an error."""
        texts = {}
        for field, value in values.items():
            if value is None and self.skip_empty:
                value = ""
            if isinstance(value, numbers.Number) and not isinstance(value, bool):
                value = str(value)
            elif not isinstance(value, str):
                raise MalformedRowError(
                    f"CombineFields joins strings and numbers, but {field!r} of "
                    f"{describe_row(row)} is a {type(value).__name__}: {value!r:.80}.",
                    hint="Pass combiner=... (a function of the list of values) to join others.",
                )
            texts[field] = value
        return texts


class AddField(FieldMap):
    """Add a field: a constant ``value``, or ``fn(row)`` computed from each row.

    A callable ``value`` is ``fn`` (EasyDeL's ``AddField("length", lambda x: len(x["text"]))``
    computes per row); to store a function itself, return it from ``fn``. A field the row
    already has is an error unless ``overwrite=True``. Mutable constants are copied for each
    row. ``field`` is EasyDeL's name of ``name``.
    """

    def __init__(
        self,
        name: str | None = None,
        value: Any = _MISSING,
        *,
        fn: Callable[[Row], Any] | None = None,
        overwrite: bool = False,
        field: str | None = None,
    ):
        self.name = check_name(either(name, field, ("name", "field")), "name")
        if (value is _MISSING) == (fn is None):
            raise ValueError("AddField takes exactly one of value=... or fn=...")
        if callable(value):
            value, fn = _MISSING, value
        if fn is not None:
            check_callable(fn, "fn")
        self.value = value
        self.fn = fn
        self.overwrite = overwrite
        self._copy = isinstance(value, list | dict | set | np.ndarray)
        self.reads = None if fn is not None else guarded(frozenset(), self.name, overwrite)
        self.writes = frozenset({self.name})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The name and the value or function."""
        what = {"fn": self.fn} if self.fn is not None else {"value": self.value}
        return {"name": self.name, **what, "overwrite": self.overwrite}

    def map(self, element: Row) -> Row:
        """The row with the field added."""
        check_row(element, self)
        if not self.overwrite:
            check_new_field(element, self.name, f"AddField({self.name!r})")
        out = dict(element)
        if self.fn is not None:
            out[self.name] = self.fn(element)
        else:
            out[self.name] = copy.deepcopy(self.value) if self._copy else self.value
        return out


class MapField(FieldMap):
    """Replace a field by ``fn(value)``, or write it to ``output_field`` (keeping the input);
    an output field the row has is an error unless ``overwrite=True``."""

    def __init__(
        self,
        field: str,
        fn: Callable[[Any], Any],
        output_field: str | None = None,
        *,
        overwrite: bool = False,
    ):
        self.field = check_name(field, "field")
        check_callable(fn, "fn")
        self.fn = fn
        self.output_field = check_name(output_field or field, "output_field")
        self.overwrite = overwrite or self.output_field == self.field
        self.reads = guarded(frozenset({self.field}), self.output_field, self.overwrite)
        self.writes = frozenset({self.output_field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The field, the function, the output field and whether it may overwrite."""
        return {
            "field": self.field,
            "fn": self.fn,
            "output_field": self.output_field,
            "overwrite": self.overwrite,
        }

    def map(self, element: Row) -> Row:
        """The row with ``fn`` applied to the field."""
        value = field_of(element, self.field, self)
        if not self.overwrite:
            check_new_field(element, self.output_field, f"MapField({self.field!r})")
        out = dict(element)
        out[self.output_field] = self.fn(value)
        return out
