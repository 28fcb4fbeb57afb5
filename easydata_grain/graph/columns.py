"""Blocks as numpy columns, and batches gathered from them column by column (no dict rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from easydata_grain.batch_format import Column, Ragged, column_kind
from easydata_grain.sources.arrow_rows import list_parts, numeric_values, numpy_viewable


def _numbers(array: pa.Array) -> np.ndarray:
    """Numbers as dict rows hold them and collating rows types them: Python ints, floats and
    bools, hence int64, float64 and bool."""
    if pa.types.is_boolean(array.type):
        return numeric_values(pc.cast(array, pa.uint8())).astype(bool)
    if pa.types.is_floating(array.type):
        return numeric_values(array).astype(np.float64)
    return numeric_values(array).astype(np.int64)


def block_columns(table: pa.Table) -> dict[str, Column] | None:
    """A block's columns ready for ``gather``, or None when one has nulls (in rows or in list
    elements) or a type ``column_kind`` does not gather."""
    columns: dict[str, Column] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        array = chunked.combine_chunks()
        kind = column_kind(array.type)
        if kind is None or array.null_count:
            return None
        if kind == "text":
            columns[name] = array.to_pylist()
        elif kind == "number":
            columns[name] = _numbers(array)
        elif not numpy_viewable(array):  # null list elements
            return None
        else:
            values, offsets = list_parts(array)
            columns[name] = Ragged(values, offsets.astype(np.int64))
    return columns


def gather(
    pieces: Sequence[tuple[dict[str, Column], np.ndarray, np.ndarray]], size: int
) -> dict[str, Column]:
    """A batch of ``size`` rows from blocks' columns: each piece ``(columns, slots, offsets)``
    puts the block's rows ``offsets`` at the batch positions ``slots``."""
    batch: dict[str, Column] = {}
    for name, first in pieces[0][0].items():
        if isinstance(first, Ragged):
            batch[name] = _gather_ragged([(c[name], s, o) for c, s, o in pieces], size)
        elif isinstance(first, list):
            texts: list[Any] = [None] * size
            for columns, slots, offsets in pieces:
                column = columns[name]
                for slot, offset in zip(slots.tolist(), offsets.tolist(), strict=True):
                    texts[slot] = column[offset]
            batch[name] = texts
        else:
            numbers = np.empty(size, dtype=first.dtype)
            for columns, slots, offsets in pieces:
                numbers[slots] = columns[name][offsets]
            batch[name] = numbers
    return batch


def _gather_ragged(pieces: Sequence[tuple[Ragged, np.ndarray, np.ndarray]], size: int) -> Ragged:
    lengths = np.empty(size, dtype=np.int64)
    for column, slots, offsets in pieces:
        lengths[slots] = column.offsets[offsets + 1] - column.offsets[offsets]
    out_offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    values = np.empty(int(out_offsets[-1]), dtype=pieces[0][0].values.dtype)
    for column, slots, offsets in pieces:
        counts = lengths[slots]
        # Element j of the k-th row taken: source start + j and destination start + j.
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        source = np.repeat(column.offsets[offsets], counts) + within
        destination = np.repeat(out_offsets[slots], counts) + within
        values[destination] = column.values[source]
    return Ragged(values, out_offsets)
