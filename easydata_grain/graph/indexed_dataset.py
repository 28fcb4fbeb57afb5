"""Indexed mode: a source with known row counts as a Grain MapDataset in the epoch order."""

from __future__ import annotations

import bisect
import dataclasses
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
import pyarrow as pa

from easydata_grain.graph.block_cache import Block, BlockCache
from easydata_grain.graph.columns import Column, gather
from easydata_grain.order import EpochOrder

_MAX_CACHED_BLOCKS = 256
_CACHED_SEGMENTS = 4
_MIN_READ_AHEAD = 1024
# Shuffled segments hold whole windows, at least this many rows' worth.
_MIN_SEGMENT = 4096


@dataclasses.dataclass(frozen=True)
class _Segment:
    """The consecutive indices ``first ..`` that one shard's consecutive rows fill: windows of
    the shuffled order (one, or enough small ones for ``_MIN_SEGMENT`` rows), or a block of
    the unshuffled one. Index ``first + k`` is row ``offsets[k]`` of block
    ``blocks[block_ids[k]]`` (``block_ids`` is None for one block)."""

    first: int
    shard: int
    blocks: tuple[int, ...]
    block_ids: np.ndarray | None
    offsets: np.ndarray

    @property
    def stop(self) -> int:
        """One past the last index of the segment."""
        return self.first + len(self.offsets)

    def pieces(
        self, start: int, stop: int, slot: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(block, slots, offsets)`` for the indices ``start .. stop - 1`` of the segment,
        placed at the batch positions ``slot ..``; the slots of each piece increase."""
        offsets = self.offsets[start - self.first : stop - self.first]
        if self.block_ids is None:
            yield self.blocks[0], np.arange(slot, slot + len(offsets)), offsets
            return
        ids = self.block_ids[start - self.first : stop - self.first]
        by_block = np.argsort(ids, kind="stable")
        bounds = np.cumsum(np.bincount(ids, minlength=len(self.blocks))).tolist()
        for block, low, high in zip(self.blocks, [0, *bounds[:-1]], bounds, strict=True):
            if high > low:
                mine = by_block[low:high]
                yield block, mine + slot, offsets[mine]


class IndexedSourceDataset(grain.MapDataset):
    """Element ``i`` is the row at the epoch order's address of ``divmod(i, rows_per_epoch)``.

    Random access reads whole blocks (Parquet row groups) through a small cache sized to the
    order's window, so each block is read and decoded once per epoch. Nothing about the order
    is stored: an iterator's state is the next index, and resuming is O(1).
    ``num_epochs=None`` repeats forever (each epoch in its own order). Element 0 is the first
    row of epoch ``first_epoch``.

    Addresses are computed a segment (a whole window, or several small ones) at a time, with
    the block and row of each of its positions, so a batch is a few slices of them.
    """

    def __init__(
        self,
        source: Any,
        *,
        seed: int = 0,
        shuffle: bool = True,
        window_size: int = 4096,
        num_epochs: int | None = 1,
        first_epoch: int = 0,
        read_threads: int = 0,
    ):
        super().__init__()
        self._source = source
        self.order = EpochOrder(
            tuple(source.row_counts()), seed=seed, window_size=window_size, shuffle=shuffle
        )
        self.rows_per_epoch = len(self.order)
        self._num_epochs = num_epochs
        self._first_epoch = first_epoch
        sizes = [
            np.diff([*source.block_starts(s), n]) for s, n in enumerate(self.order.shard_sizes) if n
        ]
        smallest = min((int(np.min(s)) for s in sizes), default=1)
        largest = max((int(np.max(s)) for s in sizes), default=1)
        window = self.order.window_length
        # Shard rows [k * span, (k + 1) * span) make a shuffled segment (0: unshuffled).
        self._segment_rows = -(-_MIN_SEGMENT // window) * window if shuffle else 0
        # Blocks are requested this many indices (widened to whole segments) before they are
        # needed; the cache holds the segment being read, and two read-aheads.
        self._read_ahead_rows = max(_MIN_READ_AHEAD, largest)
        span = 2 * self._segment_rows + 2 * self._read_ahead_rows
        capacity = min(_MAX_CACHED_BLOCKS, math.ceil(span / max(1, smallest)) + 4)
        self._cache = BlockCache(source, capacity, read_threads)
        self._starts: dict[int, np.ndarray] = {}
        self._segments: dict[int, _Segment] = {}
        self._last: _Segment | None = None
        self._last_rows: tuple[tuple[int, int], list[Any]] = ((-1, -1), [])
        self._requested = (0, 0)

    def __len__(self) -> int:
        if self._num_epochs is None:
            return sys.maxsize
        return self.rows_per_epoch * self._num_epochs

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        segment = self._segment(index)
        self._read_ahead(index + 1)
        k = index - segment.first
        key = (
            segment.shard,
            segment.blocks[0 if segment.block_ids is None else segment.block_ids[k]],
        )
        if self._last_rows[0] != key:  # rows one by one mostly stay in one block
            self._last_rows = (key, self._cache.block(*key).rows)
        return self._last_rows[1][segment.offsets[k]]

    @property
    def source(self) -> Any:
        """The source read."""
        return self._source

    def address(self, index: int) -> tuple[int, int]:
        """The ``(shard, row)`` of the source that element ``index`` is."""
        epoch, position = divmod(index, self.rows_per_epoch)
        return self.order.address(epoch + self._first_epoch, position)

    @property
    def table_schema(self) -> pa.Schema | None:
        """The schema of the rows ``_gather_columns`` gathers; None when the source reads rows only."""
        return self._source.block_schema if self._cache.tables else None

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        """Many rows at once (a batch): looked up per block, not per row."""
        out: list[Any] = [None] * len(indices)
        for block, slots, offsets in self._pieces(indices):
            rows = block.rows
            for slot, offset in zip(slots.tolist(), offsets.tolist(), strict=True):
                out[slot] = rows[offset]
        return out

    def _gather_columns(self, indices: Sequence[int]) -> dict[str, Column] | None:
        """The rows at ``indices`` column by column (``graph.columns.gather``), or None when a
        block has no columns to gather (see ``table_schema``; nulls)."""
        pieces = []
        for block, slots, offsets in self._pieces(indices):
            columns = block.columns
            if columns is None:
                return None
            pieces.append((columns, slots, offsets))
        return gather(pieces, len(indices))

    def _pieces(self, indices: Sequence[int]) -> list[tuple[Block, np.ndarray, np.ndarray]]:
        """``(block, slots, offsets)`` for each block the indices touch (per run of consecutive
        indices in a segment): positions in ``indices`` and rows in the block."""
        pieces = []
        slot = 0
        for start, stop in _runs(indices):
            self._read_ahead(stop)
            while start < stop:
                segment = self._segment(start)
                end = min(stop, segment.stop)
                for block, slots, offsets in segment.pieces(start, end, slot):
                    pieces.append((self._cache.block(segment.shard, block), slots, offsets))
                slot += end - start
                start = end
        return pieces

    def _segment(self, index: int) -> _Segment:
        """The segment holding ``index`` (the last few are kept: batches share them)."""
        last = self._last
        if last is not None and last.first <= index < last.stop:
            return last
        epoch, position = divmod(index, self.rows_per_epoch)
        epoch += self._first_epoch
        shard, shard_first = self.order.shard_at(epoch, position)
        local = position - shard_first
        span = self._segment_rows
        if span:
            low = local // span * span
            high = min(self.order.shard_sizes[shard], low + span)
        else:
            block = bisect.bisect_right(self._block_starts(shard), local) - 1
            low, high = self._block_range(shard, block)
        first = index - (local - low)
        segment = self._segments.get(first)
        if segment is None:
            rows = self._rows(epoch, shard, shard_first, low, high)
            segment = self._new_segment(first, shard, rows, low)
        self._last = segment
        return segment

    def _rows(self, epoch: int, shard: int, shard_first: int, low: int, high: int) -> np.ndarray:
        """The shard's rows ``low .. high - 1`` in the order epoch ``epoch`` visits them."""
        if not self.order.shuffle:
            return np.arange(low, high, dtype=np.int64)
        window = self.order.window_length
        if high - low <= window:
            return self.order.window_rows(epoch, shard, low // window)
        positions = np.arange(shard_first + low, shard_first + high, dtype=np.int64)
        return self.order.addresses(epoch, positions)[1]

    def _new_segment(self, first: int, shard: int, rows: np.ndarray, low: int) -> _Segment:
        """The segment of ``rows`` (a permutation of the shard's rows ``low ..``, a new array
        that becomes the offsets in place), cached."""
        starts = self._block_starts(shard)
        low_block = bisect.bisect_right(starts, low) - 1
        high_block = bisect.bisect_right(starts, low + len(rows) - 1) - 1
        if low_block == high_block:
            ids = None
            rows -= starts[low_block]
        else:
            mine = starts[low_block : high_block + 1]
            ids = np.searchsorted(mine, rows, side="right") - 1
            rows -= mine[ids]
        segment = _Segment(first, shard, tuple(range(low_block, high_block + 1)), ids, rows)
        if len(self._segments) >= _CACHED_SEGMENTS:
            self._segments.pop(next(iter(self._segments)))
        self._segments[first] = segment
        return segment

    def _read_ahead(self, stop: int) -> None:
        """Have the cache's read threads read the blocks of the indices past ``stop`` (whole
        segments of them), ``_read_ahead_rows`` to twice that ahead."""
        low, high = self._requested
        ahead = self._read_ahead_rows
        if not self._cache.read_threads or (low <= stop and stop + ahead <= high):
            return
        index = high if low <= stop <= high else stop
        end = min(len(self), stop + 2 * ahead)
        self._requested = (stop, end)
        blocks = []
        span = self._segment_rows or 1
        while index < end:
            epoch, position = divmod(index, self.rows_per_epoch)
            shard, shard_first = self.order.shard_at(epoch + self._first_epoch, position)
            size = self.order.shard_sizes[shard]
            local = position - shard_first
            local_end = min(size, local + end - index)
            starts = self._block_starts(shard)
            first_block = bisect.bisect_right(starts, local // span * span) - 1
            last_row = min(size, -(-local_end // span) * span) - 1
            last_block = bisect.bisect_right(starts, last_row) - 1
            blocks += [(shard, block) for block in range(first_block, last_block + 1)]
            index += size - local
        self._cache.prefetch(blocks)

    def _block_starts(self, shard: int) -> np.ndarray:
        starts = self._starts.get(shard)
        if starts is None:
            starts = self._starts[shard] = np.asarray(
                self._source.block_starts(shard), dtype=np.int64
            )
        return starts

    def _block_range(self, shard: int, block: int) -> tuple[int, int]:
        starts = self._block_starts(shard)
        stop = starts[block + 1] if block + 1 < len(starts) else self.order.shard_sizes[shard]
        return int(starts[block]), int(stop)

    def __str__(self) -> str:
        return (
            f"IndexedSourceDataset(rows_per_epoch={self.rows_per_epoch}, "
            f"shuffle={self.order.shuffle}, window_size={self.order.window_size})"
        )


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """``indices`` as runs ``[start, stop)`` of consecutive integers, in order."""
    if isinstance(indices, range) and indices.step == 1:
        return [(indices.start, indices.stop)] if len(indices) else []
    array = np.asarray(indices, dtype=np.int64)
    if not len(array):
        return []
    breaks = (np.flatnonzero(np.diff(array) != 1) + 1).tolist()
    starts = array[[0, *breaks]].tolist()
    lasts = array[[*(b - 1 for b in breaks), len(array) - 1]].tolist()
    return [(start, last + 1) for start, last in zip(starts, lasts, strict=True)]
