"""A small, thread-safe LRU cache of source blocks (row groups), each read once."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from easydata_grain.graph.columns import Column, block_columns
from easydata_grain.sources.protocol import ColumnarSource
from easydata_grain.types import Row

_UNSET: Any = object()


class Block:
    """One block of a source: its Arrow table when the source reads tables (its rows, and its
    numpy columns for ``graph.columns.gather``, are then made from the table on first use), or
    its rows."""

    __slots__ = ("_columns", "_rows", "_to_rows", "table")

    def __init__(self, table: Any = None, rows: list[Row] | None = None, to_rows: Any = None):
        self.table = table
        self._rows = rows
        self._to_rows = to_rows
        self._columns = _UNSET

    @property
    def columns(self) -> dict[str, Column] | None:
        """The block's columns for gathering; None for a block of rows, or with nulls."""
        if self._columns is _UNSET:
            self._columns = None if self.table is None else block_columns(self.table)
        return self._columns

    @property
    def rows(self) -> list[Row]:
        """The block's dict rows."""
        if self._rows is None:
            self._rows = self._to_rows(self.table)
        return self._rows


class BlockCache:
    """Whole blocks of a source, read once each, keeping the last ``capacity``.

    Blocks are Arrow tables when the source has a ``block_schema`` (``read_block_table``), so
    that batches can be gathered column by column; rows otherwise.
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
        self.tables = isinstance(source, ColumnarSource) and source.block_schema is not None
        self._blocks: collections.OrderedDict[tuple[int, int], Future[Block]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.reads = 0

    def block(self, shard: int, block: int) -> Block:
        """One block (read now, or waited for if another thread is reading it)."""
        return self._future(shard, block, background=False).result()

    def prefetch(self, blocks: Iterable[tuple[int, int]]) -> None:
        """Start reading these ``(shard, block)`` pairs in the background (no-op without threads)."""
        if self.read_threads:
            for shard, block in blocks:
                self._future(shard, block, background=True)

    def _future(self, shard: int, block: int, *, background: bool) -> Future[Block]:
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

    def _read(self, key: tuple[int, int], future: Future[Block]) -> None:
        try:
            if self.tables:
                block = Block(self._source.read_block_table(*key), to_rows=self._source.table_rows)
            else:
                block = Block(rows=self._source.read_block(*key))
        except BaseException as exc:
            with self._lock:
                if self._blocks.get(key) is future:
                    del self._blocks[key]
            future.set_exception(exc)
            return
        self.reads += 1
        future.set_result(block)

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self._source, "capacity": self._capacity, "threads": self.read_threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["capacity"], state["threads"])
