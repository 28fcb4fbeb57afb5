"""Arrow record batches -> dict rows; numeric list columns become numpy views of Arrow's buffers."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa


def _is_numeric(value_type: pa.DataType) -> bool:
    return pa.types.is_integer(value_type) or pa.types.is_floating(value_type)


def numpy_viewable(array: pa.Array) -> bool:
    """Whether a column is a list of numbers without null elements (a numpy view is possible)."""
    array_type = array.type
    if pa.types.is_list(array_type) or pa.types.is_large_list(array_type):
        return _is_numeric(array_type.value_type) and array.values.null_count == 0
    if pa.types.is_fixed_size_list(array_type):
        return (
            _is_numeric(array_type.value_type)
            and array.null_count == 0
            and array.values.null_count == 0
        )
    return False


_FLOAT_NAMES = {"halffloat": np.float16, "float": np.float32, "double": np.float64}


def _view(array: pa.Array, dtype: Any, length: int) -> np.ndarray:
    """A read-only numpy view of a primitive array's data buffer (``to_numpy`` would import
    pandas on first use, a quarter of a second before the first batch)."""
    view = np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + length]
    view.flags.writeable = False
    return view


def numeric_values(array: pa.Array) -> np.ndarray:
    """A read-only numpy view of an integer or float array without nulls."""
    name = str(array.type)
    return _view(array, _FLOAT_NAMES.get(name, name), len(array))


def list_parts(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A ``numpy_viewable`` column's ``(values, offsets)``: row ``i`` is
    ``values[offsets[i]:offsets[i + 1]]`` (read-only views, no copy)."""
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        return numeric_values(array.flatten()), np.arange(len(array) + 1, dtype=np.int64) * size
    offsets = np.int64 if pa.types.is_large_list(array.type) else np.int32
    return numeric_values(array.values), _view(array, offsets, len(array) + 1)


def numpy_lists(array: pa.Array) -> list[np.ndarray | None]:
    """A ``numpy_viewable`` column as read-only numpy views, one per row (None for null rows)."""
    values, offsets = list_parts(array)
    rows: list[np.ndarray | None] = [values[a:b] for a, b in itertools.pairwise(offsets.tolist())]
    if array.null_count:
        for index in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
            rows[index] = None
    return rows


def batch_to_rows(batch: pa.RecordBatch, numpy_lists_enabled: bool = True) -> list[dict[str, Any]]:
    """Convert a record batch into dict rows in schema order (strings ``str``, structs dicts).

    With ``numpy_lists_enabled``, numeric list columns (token ids) become numpy views instead of
    Python lists: no copy and no Python int per element, several times faster.
    """
    viewable = (
        [i for i in range(batch.num_columns) if numpy_viewable(batch.column(i))]
        if numpy_lists_enabled
        else []
    )
    if not viewable:
        return batch.to_pylist()
    # Nulls hold the numpy columns' places, so the dicts keep the schema's key order.
    placeholders = batch
    for i in viewable:
        placeholders = placeholders.set_column(
            i, batch.schema.field(i).name, pa.nulls(batch.num_rows)
        )
    rows = placeholders.to_pylist()
    for i in viewable:
        name = batch.schema.field(i).name
        for row, value in zip(rows, numpy_lists(batch.column(i)), strict=True):
            row[name] = value
    return rows
