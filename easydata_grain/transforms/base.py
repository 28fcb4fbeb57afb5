"""What every row transform declares: the fields it reads and writes, and a stable identity.

A transform is a Grain operation (``grain.transforms.Map`` or ``Filter``) that also follows the
``FieldTransform`` protocol (``op_protocols.py``), so the compiler pushes the column projection
down into the reads: the fields a pipeline needs from the source are found by walking its
transforms backwards with ``fields_needed``. Each is ``Fingerprinted``: a content hash that
identifies it in a saved state's fingerprint (a tokenizer by its vocabulary, not its name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grain

from easydata_grain.fingerprint import callable_identity, digest
from easydata_grain.io.errors import MalformedRowError, MissingColumnError
from easydata_grain.op_protocols import Fingerprinted
from easydata_grain.types import Row, describe_row

if TYPE_CHECKING:
    from easydata_grain.transforms.chain import Chain


def fields_needed(
    reads: frozenset[str] | None,
    writes: frozenset[str] | None,
    downstream: frozenset[str] | None,
) -> frozenset[str] | None:
    """The input fields a transform needs: what it reads, and what it passes on unchanged."""
    if reads is None or writes is None or downstream is None:
        return None
    return reads | (downstream - writes)


def _plain(value: Any) -> Any:
    """A JSON-able stand-in for a configuration value."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    if isinstance(value, Fingerprinted):
        return value.fingerprint()
    if callable(value):
        return callable_identity(value)
    return repr(value)


def field_names(fields: str | Sequence[str], what: str) -> tuple[str, ...]:
    """Validated field names (one string or a sequence of them, no duplicates)."""
    names = (fields,) if isinstance(fields, str) else tuple(fields)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{what} must be non-empty field names, got {fields!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} name a field twice: {fields!r}")
    return names


def check_name(name: Any, what: str) -> str:
    """A validated non-empty field name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty field name, got {name!r}")
    return name


def either(ours: Any, theirs: Any, names: tuple[str, str], default: Any = None) -> Any:
    """An argument given under our name or under EasyDeL's (``names``: ours, then theirs);
    both is an error, neither gives ``default`` (an error when there is none)."""
    if ours is not None and theirs is not None:
        raise TypeError(f"Give {names[0]}= or {names[1]}= (two names of one argument), not both.")
    value = theirs if ours is None else ours
    if value is None and default is None:
        raise TypeError(f"{names[0]}= (or {names[1]}=) is required.")
    return default if value is None else value


def check_new_field(row: Row, field: str, who: str) -> None:
    """Raise ``MalformedRowError`` when ``row`` already has ``field``, which ``who`` (a
    transform in words) would overwrite. A null field counts as absent (a Parquet file of
    mixed layouts has nulls where a row has another layout)."""
    if row.get(field) is not None:
        raise MalformedRowError(
            f"{who} would overwrite {field!r}, which {describe_row(row)} already has.",
            hint="Pass overwrite=True to replace it, or drop or rename the field first.",
        )


def guarded(reads: frozenset[str], target: str, overwrite: bool) -> frozenset[str]:
    """``reads`` with ``target`` when the transform checks that a row lacks it (so a column
    projection keeps the column and the check sees it; a source without it loses nothing)."""
    return reads if overwrite else reads | {target}


def check_callable(fn: Any, what: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {fn!r}")


def check_row(row: Any, who: Any) -> None:
    """Raise ``MalformedRowError`` when ``row`` is not a dict row."""
    if not isinstance(row, Mapping):
        name = who if isinstance(who, str) else type(who).__name__
        raise MalformedRowError(f"{name} got {describe_row(row)}: transforms take dict rows.")


def field_of(row: Row, field: str, who: Any) -> Any:
    """``row[field]``, or a ``MissingColumnError`` naming the reader (a transform or its name)
    and the row's fields."""
    check_row(row, who)
    try:
        return row[field]
    except KeyError:
        name = who if isinstance(who, str) else type(who).__name__
        raise MissingColumnError(
            f"{name} reads the field {field!r}, which {describe_row(row)} does not have.",
            hint="Rename the field (RenameFields) or configure the transform's field name.",
        ) from None


class RowTransform:
    """The shared behaviour of our transforms: declared fields, a fingerprint, ``>>``.

    A subclass sets ``reads`` and ``writes`` in ``__init__`` and lists its configuration in
    ``config()``. ``identity`` is the fingerprint, computed once by ``_seal`` (a transform is
    not changed after it is built).
    """

    reads: frozenset[str] | None = None
    writes: frozenset[str] | None = None
    identity: str = ""

    def config(self) -> dict[str, Any]:
        """The configuration that decides what the transform does (JSON-able after ``_plain``)."""
        return {}

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """The input fields needed so that ``downstream`` fields exist after it (None: all)."""
        return fields_needed(self.reads, self.writes, downstream)

    def fingerprint(self) -> str:
        """A short hash of the class and its configuration (tokenizers by their content)."""
        kind = type(self)
        return digest([f"{kind.__module__}.{kind.__qualname__}", _plain(self.config())])

    def _seal(self) -> None:
        """Compute ``identity``: call at the end of ``__init__``."""
        self.identity = self.fingerprint()

    def __rshift__(self, other: Any) -> Chain:
        """``a >> b``: ``a`` then ``b`` (a ``MapChain`` when both are maps)."""
        from easydata_grain.transforms.chain import chain

        return chain(self, other)

    def __rrshift__(self, other: Any) -> Chain:
        """``f >> a`` for a Grain operation or function ``f`` that is not ours."""
        from easydata_grain.transforms.chain import chain

        return chain(other, self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_plain(v)!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({shown})"


class FieldMap(RowTransform, grain.transforms.Map):
    """A 1:1 row transform (a Grain ``Map``) with declared fields."""

    def map(self, element: Row) -> Row:
        """The transformed row (a new dict; the input is not changed)."""
        raise NotImplementedError

    def __call__(self, element: Row) -> Row:
        """``transform(row)``: the same as ``transform.map(row)``."""
        return self.map(element)


class FieldFilter(RowTransform, grain.transforms.Filter):
    """A row filter (a Grain ``Filter``) with declared fields; it writes nothing."""

    writes: frozenset[str] | None = frozenset()

    def filter(self, element: Row) -> bool:
        """Whether to keep the row."""
        raise NotImplementedError

    def __call__(self, element: Row) -> bool:
        """``predicate(row)``: the same as ``predicate.filter(row)``."""
        return self.filter(element)
