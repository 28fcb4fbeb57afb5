"""The types the layers share: a row, a row's address, a per-row transform, a closable row
stream; and what every layer does with them: describe a row, map one."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import grain

from easydata_grain.io.errors import MalformedRowError

Row = dict[str, Any]
"""One sample: field name -> value (numbers, ``str``, numpy arrays for numeric lists, dicts)."""

Address = tuple[int, int]
"""A row's address: ``(shard index in source.shard_names, row in the shard)``."""

Transform = (
    grain.transforms.Map
    | grain.transforms.RandomMap
    | grain.transforms.Filter
    | Callable[[Any], Any]
)
"""A per-row operation: a Grain ``Map``/``RandomMap``/``Filter``, or a callable (a map)."""


@runtime_checkable
class Closable(Protocol):
    """A row stream that holds a resource (an open file) until closed: a generator."""

    def close(self) -> None:
        """Release the resource now."""
        ...


def close_rows(rows: object) -> None:
    """Close a row stream now (releasing its file) rather than when it is collected; a stream
    without ``close`` holds nothing to release."""
    if isinstance(rows, Closable):
        rows.close()


def row_number(row: Any) -> int | None:
    """``row`` as an int (a Python or numpy integer, not a bool); None when it is not one."""
    if isinstance(row, bool):
        return None
    try:
        return operator.index(row)
    except TypeError:
        return None


def describe_row(row: Any) -> str:
    """A row in words for an error whose address is unknown here: its fields."""
    if isinstance(row, Mapping):
        return f"the row with fields {sorted(map(str, row))}"
    return f"the element {type(row).__name__} (not a dict row)"


def map_row(step: grain.transforms.Map | Callable[[Row], Row], row: Row) -> Row:
    """``step.map(row)`` (or ``step(row)``, a function); a map that returns None (one that
    changes the row in place and forgets ``return row``) is an error, never a dropped row."""
    out = step.map(row) if isinstance(step, grain.transforms.Map) else step(row)
    return mapped_row(step, row, out)


def mapped_row(step: Any, row: Row, out: Any) -> Row:
    """``out``, what ``step`` made of ``row``; ``MalformedRowError`` when it is None."""
    if out is None:
        raise MalformedRowError(
            f"{step!r:.80} returned None for {describe_row(row)}: a map returns the row (end "
            "it with 'return row'); to drop rows, use a filter (FilterFunction, .filter)."
        )
    return out
