"""What batches are made of, shared by the graph (which gathers them) and the transforms (which
collate them): column types, how an Arrow column is gathered, and the columnar protocols.

A batch gathered column by column is a dict of ``Column``: numbers as a numpy array, text as a
list of ``str``, numeric lists as ``Ragged`` (flat values and offsets). A batch function that
declares ``ColumnarBatchFn`` turns such a dict into the final batch; a dataset that declares
``ColumnarRows`` gathers it. The compiler uses the columnar path when both sides declare it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Numeric lists in one flat array: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """The length of every row."""
        return np.diff(self.offsets)


Column = np.ndarray | list[str] | Ragged


def _numeric_lists(column_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(column_type)
        or pa.types.is_large_list(column_type)
        or pa.types.is_fixed_size_list(column_type)
    ) and (
        pa.types.is_integer(column_type.value_type) or pa.types.is_floating(column_type.value_type)
    )


def column_kind(column_type: pa.DataType) -> str | None:
    """How a column is gathered: "text", "number", "lists", or None (only as dict rows)."""
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return "text"
    if (
        pa.types.is_boolean(column_type)
        or pa.types.is_floating(column_type)
        or pa.types.is_signed_integer(column_type)
        or (pa.types.is_unsigned_integer(column_type) and column_type.bit_width <= 32)
    ):
        return "number"
    return "lists" if _numeric_lists(column_type) else None


def batch_dtype(column_type: pa.DataType) -> str:
    """What a column of this type becomes in a batch: "bool", "int", "float", "str",
    "list<numpy dtype>", or the Arrow type's name."""
    if pa.types.is_boolean(column_type):
        return "bool"
    if pa.types.is_integer(column_type):
        return "int"
    if pa.types.is_floating(column_type):
        return "float"
    if pa.types.is_string(column_type) or pa.types.is_large_string(column_type):
        return "str"
    if _numeric_lists(column_type):
        return f"list<{np.dtype(column_type.value_type.to_pandas_dtype())}>"
    return str(column_type)


@runtime_checkable
class ColumnarBatchFn(Protocol):
    """A batch function that also builds batches from gathered columns."""

    def __call__(self, rows: Sequence[Any]) -> Any:
        """A batch from dict rows."""
        ...

    def supports(self, schema: pa.Schema | None) -> bool:
        """Whether batches of rows of ``schema`` can be built from gathered columns."""
        ...

    def columns(self, columns: dict[str, Column]) -> Any:
        """The batch from gathered columns (the same batch ``__call__`` makes from rows)."""
        ...


@runtime_checkable
class ColumnarRows(Protocol):
    """A dataset that gathers a batch's rows column by column."""

    @property
    def table_schema(self) -> pa.Schema | None:
        """The schema of the gathered rows; None when it gathers nothing."""
        ...

    def _gather_columns(self, indices: Sequence[int]) -> dict[str, Column] | None:
        """The rows at ``indices`` as columns; None where a block has none (nulls)."""
        ...
