"""The types the layers share: a row, a row's address, a per-row transform, a closable row
stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import grain

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
