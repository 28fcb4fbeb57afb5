"""Batches of a MapDataset as random-access elements, fetched with one bulk ``_getitems``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain


class BatchedMapDataset(grain.MapDataset):
    """Element ``i`` is ``batch_fn(parent rows [i*b, (i+1)*b))``, read with ``parent._getitems``.

    Grain's own ``MapDataset.batch`` asks for rows one ``__getitem__`` at a time (its bulk
    path is behind an experiment flag); the indexed source answers a bulk request per block
    instead of per row. The last partial batch is kept unless ``drop_remainder``.
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
        rows = len(parent)
        self._rows = rows
        self._length = rows // batch_size if drop_remainder else -(-rows // batch_size)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        start = index * self._batch_size
        rows = self._parent._getitems(list(range(start, min(start + self._batch_size, self._rows))))
        return self._batch_fn(rows)

    def __str__(self) -> str:
        return f"BatchedMapDataset(batch_size={self._batch_size})"
