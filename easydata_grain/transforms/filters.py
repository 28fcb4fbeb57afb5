"""Row filters on a field's value: a predicate, or non-empty text (Grain ``Filter``s)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.transforms.base import (
    FieldFilter,
    check_callable,
    check_name,
    describe_row,
    field_names,
    field_of,
)
from easydata_grain.types import Row


class FilterByField(FieldFilter):
    """Keep the rows whose ``field`` satisfies ``predicate(value)``.

    A row without the field raises ``MissingColumnError`` (``keep_missing`` decides instead
    when given).
    """

    def __init__(
        self,
        field: str,
        predicate: Callable[[Any], bool],
        *,
        keep_missing: bool | None = None,
    ):
        self.field = check_name(field, "field")
        check_callable(predicate, "predicate")
        if keep_missing is not None and not isinstance(keep_missing, bool):
            raise TypeError(f"keep_missing must be a bool or None, got {keep_missing!r}")
        self.predicate = predicate
        self.keep_missing = keep_missing
        self.reads = frozenset({self.field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The field, the predicate and what happens to rows without the field."""
        return {"field": self.field, "predicate": self.predicate, "keep_missing": self.keep_missing}

    def filter(self, element: Row) -> bool:
        """Whether the row's field satisfies the predicate."""
        if (
            self.keep_missing is not None
            and isinstance(element, Mapping)
            and self.field not in element
        ):
            return self.keep_missing
        return bool(self.predicate(field_of(element, self.field, self)))


def is_empty(value: Any, *, strip: bool = True) -> bool:
    """Whether a value holds nothing: None, a blank string, an empty list or array."""
    if value is None:
        return True
    if isinstance(value, str):
        return not (value.strip() if strip else value)
    if isinstance(value, np.ndarray):
        return value.size == 0
    if isinstance(value, Sequence | dict):
        return len(value) == 0
    raise TypeError(f"cannot tell whether a {type(value).__name__} is empty")


class FilterNonEmpty(FieldFilter):
    """Keep the rows whose fields all hold something: text that is not blank (``strip``), a
    non-empty list or array, not None. Other values (numbers) are an error."""

    def __init__(self, fields: str | Sequence[str] = "text", *, strip: bool = True):
        self.fields = field_names(fields, "fields")
        self.strip = strip
        self.reads = frozenset(self.fields)
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields and whether whitespace counts as empty."""
        return {"fields": self.fields, "strip": self.strip}

    def filter(self, element: Row) -> bool:
        """Whether every field is non-empty."""
        for field in self.fields:
            value = field_of(element, field, self)
            try:
                if is_empty(value, strip=self.strip):
                    return False
            except TypeError as error:
                raise MalformedRowError(
                    f"FilterNonEmpty: {field!r} of {describe_row(element)} {error}."
                ) from None
        return True
