"""Arrow record batches -> dict rows; numeric list columns become numpy views of Arrow's buffers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def _is_numeric(value_type: pa.DataType) -> bool:
    return pa.types.is_integer(value_type) or pa.types.is_floating(value_type)


def _numeric_lists(array: pa.Array) -> list[np.ndarray | None]:
    """A list<number> column as read-only numpy views (no copy, no Python ints)."""
    bounds = array.offsets.to_numpy().tolist()
    values = array.values.to_numpy(zero_copy_only=True)
    rows: list[np.ndarray | None] = [
        values[start:stop] for start, stop in itertools.pairwise(bounds)
    ]
    if array.null_count:
        for index in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
            rows[index] = None
    return rows


def column_values(array: pa.Array, numpy_lists: bool = True) -> Sequence[Any]:
    """The Python values of one column: numpy arrays for numeric lists, else Arrow's ``to_pylist``."""
    array_type = array.type
    if (
        numpy_lists
        and (pa.types.is_list(array_type) or pa.types.is_large_list(array_type))
        and _is_numeric(array_type.value_type)
        and array.values.null_count == 0
    ):
        return _numeric_lists(array)
    if (
        numpy_lists
        and pa.types.is_fixed_size_list(array_type)
        and _is_numeric(array_type.value_type)
        and array.null_count == 0
        and array.values.null_count == 0
    ):
        width = array_type.list_size
        flat = array.flatten().to_numpy(zero_copy_only=True)
        return list(flat.reshape(len(array), width))
    return array.to_pylist()


def batch_to_rows(batch: pa.RecordBatch, numpy_lists: bool = True) -> list[dict[str, Any]]:
    """Convert a record batch into a list of dict rows (strings stay ``str``, structs dicts)."""
    names = batch.schema.names
    columns = [column_values(batch.column(i), numpy_lists) for i in range(batch.num_columns)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
