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


class BatchIterDataset(grain.IterDataset):
    """The batches of a ``BatchedMapDataset`` in order: what ``.to_iter_dataset()`` without
    threads gives (the same elements, the same state ``{"next_index": i}``, an ``IndexError``
    for an index out of range), without Grain's per-element statistics and locking (about
    15 us a batch).

    Grain's worker processes slice the ``.to_iter_dataset()`` node between workers; this one
    cannot be sliced, so the compiler uses it only without worker processes.
    """

    def __init__(self, parent: BatchedMapDataset):
        if not isinstance(parent, BatchedMapDataset):
            raise TypeError(f"parent must be a BatchedMapDataset, got {type(parent).__name__}")
        super().__init__(parent)

    def __iter__(self) -> BatchIterator:
        return BatchIterator(self._parent)

    def __str__(self) -> str:
        return "BatchIterDataset()"


class BatchIterator(grain.DatasetIterator):
    """The iterator of ``BatchIterDataset``."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, batches: BatchedMapDataset):
        super().__init__()
        self._batches = batches
        self._length = len(batches)
        self._next = 0

    def __next__(self) -> Any:
        if self._closed:
            self._assert_not_closed()
        index = self._next
        if index >= self._length:
            raise StopIteration
        batch = self._batches[index]
        self._next = index + 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"next_index": self._next}

    def set_state(self, state: dict[str, Any]) -> None:
        index = state["next_index"]
        if not 0 <= index <= self._length:
            raise IndexError(
                f"Checkpoint `next_index` {index} is out of range for dataset of length "
                f"{self._length}."
            )
        self._next = index

    def _get_next_index(self) -> int:
        return self._next

    def _set_next_index(self, index: int) -> None:
        self._next = index

    def __str__(self) -> str:
        return "BatchIterator()"
