"""A small, thread-safe LRU cache of source blocks (row groups), each read once."""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

Row = dict[str, Any]


class BlockCache:
    """Rows by address, reading whole blocks of a source and keeping the last ``capacity``.

    Several threads asking for the same block wait for one read. ``prefetch`` starts reading
    blocks that will be needed soon on ``read_threads`` background threads, so that I/O
    overlaps decoding and the consumer; ``capacity`` should cover the blocks an epoch-order
    window touches plus those prefetched, so that each block is read once per epoch.
    """

    def __init__(self, source: Any, capacity: int, read_threads: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._source = source
        self._capacity = capacity
        self.read_threads = read_threads
        self._executor: ThreadPoolExecutor | None = None
        self._blocks: collections.OrderedDict[tuple[int, int], Future[list[Row]]] = (
            collections.OrderedDict()
        )
        self._starts: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._last: tuple[int, int, int, list[Row]] = (-1, 0, 0, [])
        self.reads = 0

    def block_of(self, shard: int, row: int) -> tuple[int, int]:
        """The ``(block, first row of the block)`` that holds ``row``."""
        starts = self._starts.get(shard)
        if starts is None:
            starts = self._starts.setdefault(shard, self._source.block_starts(shard))
        block = bisect.bisect_right(starts, row) - 1
        return block, starts[block]

    def row(self, shard: int, row: int) -> Row:
        """The row at ``(shard, row)``."""
        last = self._last
        if last[0] == shard and last[1] <= row < last[2]:
            return last[3][row - last[1]]
        block, start = self.block_of(shard, row)
        rows = self.block(shard, block)
        self._last = (shard, start, start + len(rows), rows)
        return rows[row - start]

    def block(self, shard: int, block: int) -> list[Row]:
        """All rows of one block (read now, or waited for if another thread is reading it)."""
        return self._future(shard, block, background=False).result()

    def prefetch(self, blocks: Iterable[tuple[int, int]]) -> None:
        """Start reading these ``(shard, block)`` pairs in the background (no-op without threads)."""
        if self.read_threads:
            for shard, block in blocks:
                self._future(shard, block, background=True)

    def _future(self, shard: int, block: int, *, background: bool) -> Future[list[Row]]:
        key = (shard, block)
        with self._lock:
            future = self._blocks.get(key)
            if future is not None:
                self._blocks.move_to_end(key)
                return future
            future = Future()
            self._blocks[key] = future
            while len(self._blocks) > self._capacity:
                self._blocks.popitem(last=False)
            if background:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self.read_threads, "easydata-read")
                self._executor.submit(self._read, key, future)
        if not background:
            self._read(key, future)
        return future

    def _read(self, key: tuple[int, int], future: Future[list[Row]]) -> None:
        try:
            rows = self._source.read_block(*key)
        except BaseException as exc:
            with self._lock:
                if self._blocks.get(key) is future:
                    del self._blocks[key]
            future.set_exception(exc)
            return
        self.reads += 1
        future.set_result(rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "capacity": self._capacity, "threads": self.read_threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["capacity"], state["threads"])
