"""Batches of a MapDataset as random-access elements, fetched with one bulk request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain

from easydata_grain.batch_format import ColumnarBatchFn, ColumnarRows


class BatchedMapDataset(grain.MapDataset):
    """Element ``i`` is ``batch_fn(parent rows [i*b, (i+1)*b))``, read with ``parent._getitems``.

    Grain's own ``MapDataset.batch`` asks for rows one ``__getitem__`` at a time (its bulk
    path is behind an experiment flag); the indexed source answers a bulk request per block
    instead of per row. The last partial batch is kept unless ``drop_remainder``.

    When the parent gathers columns (``table_schema``, ``_gather_columns``) and ``batch_fn``
    collates them (``Collate.supports``/``Collate.columns``), batches are built column by
    column without dict rows: the same batches, several times faster.
    """

    def __init__(
        self,
        parent: grain.MapDataset,
        batch_size: int,
        *,
        drop_remainder: bool,
        batch_fn: Callable[[Sequence[Any]], Any],
    ):
        super().__init__(parent)
        self._batch_size = batch_size
        self._batch_fn = batch_fn
        self.columnar = (
            isinstance(batch_fn, ColumnarBatchFn)
            and isinstance(parent, ColumnarRows)
            and batch_fn.supports(parent.table_schema)
        )
        """Whether batches are gathered column by column (else collated from dict rows)."""
        rows = len(parent)
        self._rows = rows
        self._length = rows // batch_size if drop_remainder else -(-rows // batch_size)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._batch_size
        indices = range(start, min(start + self._batch_size, self._rows))
        if self.columnar:
            columns = self._parent._gather_columns(indices)
            if columns is not None:
                return self._batch_fn.columns(columns)
        return self._batch_fn(self._parent._getitems(indices))

    def __str__(self) -> str:
        return f"BatchedMapDataset(batch_size={self._batch_size}, columnar={self.columnar})"
