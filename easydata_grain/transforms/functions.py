"""Plain functions as transforms: ``MapFunction(fn)`` and ``FilterFunction(fn)``.

They read and may write any field (``reads``/``writes`` None), so a projection stops at them.
Their fingerprint is the function's code and the values it captures or reads
(``fingerprint.callable_identity``): editing the function misses a cache and refuses a saved
state. Worker processes pickle the transforms, so give them module-level functions there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from easydata_grain.transforms.base import FieldFilter, FieldMap, check_callable, check_row
from easydata_grain.types import Row


class MapFunction(FieldMap):
    """``fn(row) -> row`` as a Grain ``Map`` that can be chained with ``>>``."""

    def __init__(self, fn: Callable[[Row], Row]):
        check_callable(fn, "fn")
        self.fn = fn
        self.reads = None
        self.writes = None
        self._seal()

    def config(self) -> dict[str, Any]:
        """The function."""
        return {"fn": self.fn}

    def map(self, element: Row) -> Row:
        """``fn(element)``."""
        check_row(element, self)
        return self.fn(element)


class FilterFunction(FieldFilter):
    """``fn(row) -> bool`` as a Grain ``Filter`` that can be chained with ``>>``."""

    def __init__(self, fn: Callable[[Row], bool]):
        check_callable(fn, "fn")
        self.fn = fn
        self.reads = None
        self._seal()

    def config(self) -> dict[str, Any]:
        """The function."""
        return {"fn": self.fn}

    def filter(self, element: Row) -> bool:
        """``bool(fn(element))``."""
        check_row(element, self)
        return bool(self.fn(element))
