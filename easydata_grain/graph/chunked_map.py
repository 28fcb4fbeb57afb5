"""A batched map over a Grain dataset: rows transformed a chunk at a time, one call per chunk.

A per-row Grain ``Map`` cannot batch its tokenizer calls. ``ChunkedMapDataset`` (random
access) and ``ChunkedMapIterDataset`` (a stream) apply a ``BatchMap`` (``map_batch(rows)``,
such as ``TokenizeTransform`` or a ``MapChain`` holding one) to chunks of consecutive rows,
and hand the rows out one by one. The element count, the order and the resume state are
the parent's own:

- ``ChunkedMapDataset[i]`` transforms the chunk holding ``i`` once and keeps the last few
  chunks (thread-safe), so random access works and an iterator resumes in O(1) from its
  next index (at most one chunk is transformed again);
- ``ChunkedMapIterDataset`` saves the parent's state at the start of the current chunk and the
  offset in it; restoring re-reads that chunk.

The compiler places them for every ``BatchMap`` in ``AsyncDataLoader(transforms=[...])`` (see
``graph/compiler.py``); they know the transform only through the ``BatchMap`` protocol.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import grain

from easydata_grain.graph.row_errors import Locate, raise_named
from easydata_grain.op_protocols import BatchMap
from easydata_grain.types import mapped_row


def _check(transform: Any, chunk_size: int) -> None:
    if not isinstance(transform, BatchMap):
        raise TypeError(
            f"transform must have map(row) and map_batch(rows) (the BatchMap protocol), got "
            f"{transform!r}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _map_chunk(transform: BatchMap, rows: Sequence[Any]) -> list[Any]:
    """``map_batch`` over the rows that are there (a filtered-out element stays None)."""
    present = [i for i, row in enumerate(rows) if row is not None]
    out: list[Any] = [None] * len(rows)
    mapped = transform.map_batch([rows[i] for i in present])
    if len(mapped) != len(present):
        raise RuntimeError(
            f"{transform!r}.map_batch returned {len(mapped)} rows for {len(present)}: a batched "
            "map must return one row per input row."
        )
    for i, row in zip(present, mapped, strict=True):
        out[i] = mapped_row(transform, rows[i], row)
    return out


class ChunkedMapDataset(grain.MapDataset):
    """Element ``i`` is ``transform.map(parent[i])``, computed with one ``map_batch`` call for
    the ``chunk_size`` consecutive elements around ``i`` (the last ``cached_chunks`` kept).

    ``locate``, when given, maps an element index to its source ``(shard, row)``: a failing
    call is then retried row by row, and the first failing row's error names its address
    (``graph/row_errors.py``)."""

    def __init__(
        self,
        parent: grain.MapDataset,
        transform: BatchMap,
        chunk_size: int = 1000,
        *,
        cached_chunks: int = 2,
        locate: Locate | None = None,
    ):
        super().__init__(parent)
        _check(transform, chunk_size)
        if (
            isinstance(cached_chunks, bool)
            or not isinstance(cached_chunks, int)
            or cached_chunks < 1
        ):
            raise ValueError(f"cached_chunks must be an int >= 1, got {cached_chunks!r}")
        self.transform = transform
        self.chunk_size = chunk_size
        self.cached_chunks = cached_chunks
        self.locate = locate
        self._cache: OrderedDict[int, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._parent)

    def _chunk(self, chunk: int) -> list[Any]:
        with self._lock:
            rows = self._cache.get(chunk)
            if rows is not None:
                self._cache.move_to_end(chunk)
                return rows
            start = chunk * self.chunk_size
            stop = min(start + self.chunk_size, len(self._parent))
            rows = self._map(start, self._parent._getitems(list(range(start, stop))))
            self._cache[chunk] = rows
            while len(self._cache) > self.cached_chunks:
                self._cache.popitem(last=False)
            return rows

    def _map(self, start: int, rows: list[Any]) -> list[Any]:
        """The chunk of ``rows`` (elements ``start ..``) mapped; an error names the failing
        row where ``locate`` can tell it."""
        try:
            return _map_chunk(self.transform, rows)
        except Exception:
            if self.locate is None:
                raise
            for k, row in enumerate(rows):
                try:
                    _map_chunk(self.transform, [row])
                except Exception as row_error:
                    raise_named(row_error, self.locate(start + k))
            raise

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        if index < 0:
            index += len(self)
        chunk, offset = divmod(index, self.chunk_size)
        return self._chunk(chunk)[offset]

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        return [self[i] for i in indices]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = OrderedDict(), None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"ChunkedMapDataset(transform={self.transform!r}, chunk_size={self.chunk_size})"


class ChunkedMapIterDataset(grain.IterDataset):
    """The parent's elements through ``transform``, ``map_batch`` called on each chunk of
    ``chunk_size`` consecutive elements; the state is the chunk's start and an offset."""

    def __init__(self, parent: grain.IterDataset, transform: BatchMap, chunk_size: int = 1000):
        super().__init__(parent)
        _check(transform, chunk_size)
        self.transform = transform
        self.chunk_size = chunk_size

    def __iter__(self) -> _ChunkedMapIterator:
        return _ChunkedMapIterator(self._parent.__iter__(), self.transform, self.chunk_size)

    def __str__(self) -> str:
        return f"ChunkedMapIterDataset(transform={self.transform!r}, chunk_size={self.chunk_size})"


class _ChunkedMapIterator(grain.DatasetIterator):
    """Reads a chunk from the parent, transforms it in one call, yields its rows."""

    def __init__(self, parent: grain.DatasetIterator, transform: BatchMap, chunk_size: int):
        super().__init__(parent)
        self._transform = transform
        self._chunk_size = chunk_size
        self._rows: list[Any] = []
        self._position = 0
        self._chunk_state: Any = None

    def _fill(self) -> None:
        self._chunk_state = self._parent.get_state()
        rows = []
        for _ in range(self._chunk_size):
            try:
                rows.append(next(self._parent))
            except StopIteration:
                break
        self._rows = _map_chunk(self._transform, rows) if rows else []
        self._position = 0

    def __next__(self) -> Any:
        if self._position >= len(self._rows):
            self._fill()
            if not self._rows:
                raise StopIteration
        row = self._rows[self._position]
        self._position += 1
        return row

    def get_state(self) -> dict[str, Any]:
        if self._position >= len(self._rows):
            return {"parent": self._parent.get_state(), "offset": 0}
        return {"parent": self._chunk_state, "offset": self._position}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._rows, self._position = [], 0
        offset = state["offset"]
        if offset:
            self._fill()
            if offset > len(self._rows):
                raise ValueError(
                    f"The state's offset {offset} is past the chunk of {len(self._rows)} rows it "
                    "points to: the data changed since the state was saved."
                )
            self._position = offset

    def __str__(self) -> str:
        return f"ChunkedMapIterator(chunk_size={self._chunk_size})"
