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
        return numeric_values(array).astype(np.float64, copy=False)
    return numeric_values(array).astype(np.int64, copy=False)


def block_columns(table: pa.Table) -> dict[str, Column] | None:
    """A block's columns ready for ``gather``, or None when one has nulls (in rows or in list
    elements) or a type ``column_kind`` does not gather."""
    columns: dict[str, Column] = {}
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        # combine_chunks copies even a single chunk.
        array = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
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
    puts the block's rows ``offsets`` at the batch positions ``slots``. The pieces' slots
    split ``0 .. size - 1`` and increase within a piece, so one piece holds the whole batch
    in order."""
    batch: dict[str, Column] = {}
    for name, first in pieces[0][0].items():
        parts = [(columns[name], slots, offsets) for columns, slots, offsets in pieces]
        if isinstance(first, Ragged):
            batch[name] = _gather_ragged(parts, size)
        elif isinstance(first, list):
            batch[name] = _gather_texts(parts, size)
        elif len(parts) == 1:
            batch[name] = first.take(parts[0][2])  # take: half the time of first[offsets]
        else:
            numbers = np.empty(size, dtype=first.dtype)
            for column, slots, offsets in parts:
                numbers[slots] = column.take(offsets)
            batch[name] = numbers
    return batch


def _gather_texts(pieces: Sequence[tuple[list[str], np.ndarray, np.ndarray]], size: int) -> list:
    if len(pieces) == 1:
        column, _, offsets = pieces[0]
        return [column[offset] for offset in offsets.tolist()]
    texts: list[Any] = [None] * size
    for column, slots, offsets in pieces:
        for slot, offset in zip(slots.tolist(), offsets.tolist(), strict=True):
            texts[slot] = column[offset]
    return texts


def _gather_ragged(pieces: Sequence[tuple[Ragged, np.ndarray, np.ndarray]], size: int) -> Ragged:
    """The rows' lists: whole rows of the blocks' padded matrices (``Ragged.row_matrix``), or,
    when a block has none, copied one after the other, in batch order."""
    matrices = [column.row_matrix() for column, _, _ in pieces]
    if all(matrix is not None for matrix in matrices):
        return _gather_rows(pieces, matrices, size)  # type: ignore[arg-type]
    lengths = np.empty(size, dtype=np.int64)
    firsts = []
    for column, slots, offsets in pieces:
        first = column.offsets[offsets]
        lengths[slots] = column.offsets[offsets + 1] - first
        firsts.append(first)
    out_offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    if len(pieces) == 1:
        return Ragged(pieces[0][0].values[_spans(firsts[0], lengths)], out_offsets)
    values = np.empty(int(out_offsets[-1]), dtype=pieces[0][0].values.dtype)
    for (column, slots, _), first in zip(pieces, firsts, strict=True):
        counts = lengths[slots]
        values[_spans(out_offsets[slots], counts)] = column.values[_spans(first, counts)]
    return Ragged(values, out_offsets)


def _gather_rows(
    pieces: Sequence[tuple[Ragged, np.ndarray, np.ndarray]],
    matrices: Sequence[np.ndarray],
    size: int,
) -> Ragged:
    """The batch's rows as a matrix as wide as its longest row (zero-padded), taken row by row
    from the blocks' matrices (whose rows beyond their lengths are zeros too)."""
    if len(pieces) == 1:
        column, _, offsets = pieces[0]
        lengths = column.lengths.take(offsets)
        width = int(lengths.max()) if size else 0
        matrix = matrices[0]
        rows = (
            matrix.take(offsets, axis=0) if width == matrix.shape[1] else matrix[:, :width][offsets]
        )
        return Ragged.from_matrix(rows, lengths)
    lengths = np.empty(size, dtype=np.int64)
    for column, slots, offsets in pieces:
        lengths[slots] = column.lengths.take(offsets)
    width = int(lengths.max())
    out = np.empty((size, width), dtype=matrices[0].dtype)
    for (_, slots, offsets), matrix in zip(pieces, matrices, strict=True):
        common = min(width, matrix.shape[1])
        out[slots, :common] = matrix[:, :common][offsets]
        out[slots, common:] = 0
    return Ragged.from_matrix(out, lengths)


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``starts[k] .. starts[k] + lengths[k] - 1`` for every ``k``, in order."""
    ends = np.cumsum(lengths)
    indices = np.repeat(starts - (ends - lengths), lengths)
    indices += np.arange(len(indices))
    return indices
