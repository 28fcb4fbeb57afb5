"""What batches are made of, shared by the graph (which gathers them) and the transforms (which
collate them): column types, how an Arrow column is gathered, and the columnar protocols.

A batch gathered column by column is a dict of ``Column``: numbers as a numpy array, text as a
list of ``str``, numeric lists as ``Ragged`` (flat values and offsets). A batch function that
declares ``ColumnarBatchFn`` turns such a dict into the final batch; a dataset that declares
``ColumnarRows`` gathers it. The compiler uses the columnar path when both sides declare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

# A block's rows are kept padded in a matrix (see ``Ragged.row_matrix``) when that takes at
# most this many times the memory of the values themselves (and at most _MATRIX_BYTES).
_MATRIX_GROWTH = 4
_MATRIX_BYTES = 64 << 20


class Ragged:
    """Numeric lists in one flat array: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    A gathered batch may hold its rows as a ``matrix`` instead: one row per list, zero-padded
    to the longest, with the ``lengths``; ``values`` and ``offsets`` are then made on first use.
    """

    __slots__ = ("_lengths", "_matrix", "_offsets", "_row_matrix", "_values")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self._values: np.ndarray | None = values
        self._offsets: np.ndarray | None = offsets
        self._lengths: np.ndarray | None = None
        self._matrix: np.ndarray | None = None
        self._row_matrix: Any = _UNSET

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, lengths: np.ndarray) -> Ragged:
        """Rows ``matrix[i, :lengths[i]]`` (the rest of each row zeros; as wide as the longest)."""
        ragged = cls.__new__(cls)
        ragged._values = ragged._offsets = None
        ragged._matrix, ragged._lengths = matrix, lengths
        ragged._row_matrix = matrix
        return ragged

    @property
    def values(self) -> np.ndarray:
        """The rows' elements, one row after the other."""
        if self._values is None:
            matrix, lengths = self._matrix, self.lengths
            self._values = matrix[np.arange(matrix.shape[1]) < lengths[:, None]]  # type: ignore[index,union-attr]
        return self._values

    @property
    def offsets(self) -> np.ndarray:
        """Where each row starts in ``values`` (and, last, where the last one ends)."""
        if self._offsets is None:
            offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
            np.cumsum(self.lengths, out=offsets[1:])
            self._offsets = offsets
        return self._offsets

    @property
    def lengths(self) -> np.ndarray:
        """The length of every row."""
        if self._lengths is None:
            self._lengths = np.diff(self.offsets)
        return self._lengths

    @property
    def matrix(self) -> np.ndarray | None:
        """The rows zero-padded to the longest, when they are held so (a gathered batch)."""
        return self._matrix

    def row_matrix(self) -> np.ndarray | None:
        """The rows zero-padded to the longest in a 2-D array (made once; a view of ``values``
        when all rows are equally long), or None when it would take more than
        ``_MATRIX_GROWTH`` times the values' memory: batches are then gathered row by row
        from ``values``."""
        if self._row_matrix is _UNSET:
            self._row_matrix = self._make_row_matrix()
        return self._row_matrix

    def _make_row_matrix(self) -> np.ndarray | None:
        values, offsets, lengths = self.values, self.offsets, self.lengths
        rows = len(lengths)
        start, stop = int(offsets[0]), int(offsets[-1])
        longest = int(lengths.max()) if rows else 0
        if rows and int(lengths.min()) == longest:
            return values[start:stop].reshape(rows, longest)
        size = rows * longest
        if size > _MATRIX_GROWTH * (stop - start) + rows or size * values.itemsize > _MATRIX_BYTES:
            return None
        matrix = np.zeros((rows, longest), dtype=values.dtype)
        matrix[np.arange(longest) < lengths[:, None]] = values[start:stop]
        return matrix


_UNSET: Any = object()


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
