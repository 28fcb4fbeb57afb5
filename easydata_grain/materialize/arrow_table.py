"""Dict rows -> one Arrow table with the output's schema.

Token ids arrive as numpy arrays (one per row): a column of them becomes a list column from
one concatenation and its offsets, with no Python int per token. Every unit's table is cast to
the one schema of the output, so that all shards agree; a unit whose rows cannot take it is an
error naming its positions.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from easydata_grain.io.errors import MalformedRowError, SchemaMismatchError
from easydata_grain.sources.file_source import describe_schema_difference
from easydata_grain.sources.skipped import is_skipped

_CHUNK_ROWS = 4096
"""Positions turned into an Arrow table at a time (bounds the dict rows held at once)."""

_INT32_OFFSETS = 1 << 31


def _numeric_lists(values: Sequence[Any]) -> pa.Array | None:
    """A column of 1-d numeric numpy arrays of one dtype as a list array, from one
    concatenation; None for any other column (converted value by value)."""
    first = values[0]
    if not (isinstance(first, np.ndarray) and first.ndim == 1 and first.dtype.kind in "iuf"):
        return None
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    try:
        np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
        flat = np.concatenate(values)
    except (TypeError, ValueError):  # a None, a number, an array of another shape
        return None
    if flat.dtype != first.dtype or flat.ndim != 1 or len(flat) != offsets[-1]:
        return None  # arrays of several dtypes, or lists of other lengths than their values
    if offsets[-1] < _INT32_OFFSETS:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))


def rows_table(rows: Sequence[Mapping[str, Any]], where: str) -> pa.Table:
    """``rows`` (dicts with the same fields) as a table, column by column; ``where`` names the
    rows (their positions) in the error for a row whose fields differ."""
    if not rows:
        return pa.table({})
    keys = rows[0].keys()
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or row.keys() != keys:
            got = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise MalformedRowError(
                f"Row {k} of {where} has the fields {got}, but row 0 has {sorted(keys)}: "
                "every row of a materialized output needs the same fields.",
                hint="Give every row the same fields (AddField or a map that fills them).",
            )
    columns = {}
    for name in keys:
        values = list(map(operator.itemgetter(name), rows))
        column = _numeric_lists(values)
        columns[name] = column if column is not None else _column(values, name, where)
    return pa.table(columns)


def positions_table(dataset: Any, start: int, stop: int, total: int, what: str) -> pa.Table:
    """The rows at positions ``[start, stop)`` of ``dataset`` (a Grain ``MapDataset`` of
    ``total`` positions whose filtered rows are ``SkippedRow``s, left out) as one table, made
    ``_CHUNK_ROWS`` positions at a time; ``what`` names the rows in errors ("the rows")."""
    if not 0 <= start <= stop <= total:
        raise IndexError(f"positions [{start}, {stop}) are out of range for {total} rows")
    tables = []
    for low in range(start, stop, _CHUNK_ROWS):
        high = min(stop, low + _CHUNK_ROWS)
        rows = [r for r in dataset._getitems(range(low, high)) if not is_skipped(r)]
        if rows:
            tables.append(rows_table(rows, f"{what} of positions {low}..{high - 1}"))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def _column(values: list[Any], name: str, where: str) -> pa.Array:
    """A field's values as one Arrow array; a ``MalformedRowError`` naming it when they cannot
    be one (values of several types, arrays of two dimensions)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise MalformedRowError(
            f"The field {name!r} of {where} cannot be stored as one Parquet column: {exc}.",
            hint="Give the field one type in every row (one-dimensional lists for arrays).",
        ) from exc


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """``table`` with the output's ``schema`` (columns in its order, types cast); a
    ``SchemaMismatchError`` naming ``where`` when it cannot take it."""
    if table.num_rows == 0 and table.num_columns == 0:
        return schema.empty_table()
    if table.schema.equals(schema):
        return table
    if sorted(table.column_names) != sorted(schema.names):
        raise SchemaMismatchError(
            f"{where} has the columns {table.column_names}, but the output's schema (from its "
            f"first rows) has {schema.names}.",
            hint="Every row needs the same fields.",
        )
    table = table.select(schema.names)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatchError(
            f"{where} cannot take the output's schema "
            f"({describe_schema_difference(schema, table.schema)}): {exc}.",
            hint="The schema is taken from the first rows; pass schema= to materialize() with "
            "types that fit every row (a column that is null in the first rows, say).",
        ) from exc
