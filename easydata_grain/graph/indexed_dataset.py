"""Indexed mode: a source with known row counts as a Grain MapDataset in the epoch order."""

from __future__ import annotations

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
_ADDRESS_CHUNK = 1024


class IndexedSourceDataset(grain.MapDataset):
    """Element ``i`` is the row at the epoch order's address of ``divmod(i, rows_per_epoch)``.

    Random access reads whole blocks (Parquet row groups) through a small cache sized to the
    order's window, so each block is read and decoded once per epoch. Nothing about the order
    is stored: an iterator's state is the next index, and resuming is O(1).
    ``num_epochs=None`` repeats forever (each epoch in its own order). Element 0 is the first
    row of epoch ``first_epoch``.
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
        smallest_block = min(
            (
                int(np.min(np.diff([*source.block_starts(s), n])))
                for s, n in enumerate(self.order.shard_sizes)
                if n
            ),
            default=1,
        )
        chunk_blocks = math.ceil(_ADDRESS_CHUNK / max(1, smallest_block)) + 1
        window_blocks = math.ceil(window_size / max(1, smallest_block)) + 1 if shuffle else 1
        # The window being read, plus the next chunk's blocks that are being prefetched.
        capacity = min(_MAX_CACHED_BLOCKS, window_blocks + 2 * chunk_blocks + 2)
        self._cache = BlockCache(source, capacity, read_threads)
        self._chunk: tuple[int, list[int], list[int]] | None = None
        self._chunk_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._starts: dict[int, np.ndarray] = {}
        self._prefetched_until = 0

    def __len__(self) -> int:
        if self._num_epochs is None:
            return sys.maxsize
        return self.rows_per_epoch * self._num_epochs

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        chunk_start = index - index % _ADDRESS_CHUNK
        chunk = self._chunk
        if chunk is None or chunk[0] != chunk_start:
            chunk = self._chunk = (chunk_start, *self._chunk_addresses(chunk_start))
            if chunk_start + _ADDRESS_CHUNK < len(self):
                self._prefetch_chunk(chunk_start + _ADDRESS_CHUNK)
        offset = index - chunk_start
        return self._cache.row(chunk[1][offset], chunk[2][offset])

    @property
    def table_schema(self) -> pa.Schema | None:
        """The schema of the rows ``_gather_columns`` gathers; None when the source reads rows only."""
        return self._source.block_schema if self._cache.tables else None

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        """Many rows at once (a batch): addresses and blocks looked up per block, not per row."""
        out: list[Any] = [None] * len(indices)
        for block, slots, offsets in self._by_block(indices):
            rows = block.rows
            for slot, offset in zip(slots.tolist(), offsets.tolist(), strict=True):
                out[slot] = rows[offset]
        return out

    def _gather_columns(self, indices: Sequence[int]) -> dict[str, Column] | None:
        """The rows at ``indices`` column by column (``graph.columns.gather``), or None when a
        block has no columns to gather (see ``table_schema``; nulls)."""
        pieces = []
        for block, slots, offsets in self._by_block(indices):
            columns = block.columns
            if columns is None:
                return None
            pieces.append((columns, slots, offsets))
        return gather(pieces, len(indices))

    def _by_block(self, indices: Sequence[int]) -> Iterator[tuple[Block, np.ndarray, np.ndarray]]:
        """``(block, slots, offsets)`` for each block the indices touch: the positions in
        ``indices`` and the rows in the block."""
        positions = np.asarray(indices, dtype=np.int64)
        if not len(positions):
            return
        next_chunk = int(positions.max()) // _ADDRESS_CHUNK * _ADDRESS_CHUNK + _ADDRESS_CHUNK
        if next_chunk > self._prefetched_until and next_chunk < len(self):
            self._prefetch_chunk(next_chunk)
            self._prefetched_until = next_chunk
        shards, rows = self._batch_addresses(positions)
        for shard in np.unique(shards).tolist():
            where = np.flatnonzero(shards == shard)
            starts = self._block_starts(shard)
            blocks = np.searchsorted(starts, rows[where], side="right") - 1
            for block in np.unique(blocks).tolist():
                mine = where[blocks == block]
                yield self._cache.block(shard, block), mine, rows[mine] - starts[block]

    def _block_starts(self, shard: int) -> np.ndarray:
        starts = self._starts.get(shard)
        if starts is None:
            starts = self._starts[shard] = np.asarray(
                self._source.block_starts(shard), dtype=np.int64
            )
        return starts

    def _prefetch_chunk(self, start: int) -> None:
        """Start reading the blocks of the chunk at ``start`` in the background."""
        if not self._cache.read_threads:
            return
        shards, rows = self._chunk_address_arrays(start)
        blocks = []
        for shard in np.unique(shards).tolist():
            starts = self._block_starts(shard)
            found = np.searchsorted(starts, rows[shards == shard], side="right") - 1
            blocks += [(shard, block) for block in np.unique(found).tolist()]
        self._cache.prefetch(blocks)

    def _chunk_addresses(self, start: int) -> tuple[list[int], list[int]]:
        """The addresses of indices ``start .. start + _ADDRESS_CHUNK``, as lists."""
        shards, rows = self._chunk_address_arrays(start)
        return shards.tolist(), rows.tolist()

    def _chunk_address_arrays(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """The addresses of indices ``start .. start + _ADDRESS_CHUNK`` (the last few chunks
        are kept: consecutive batches share them)."""
        found = self._chunk_arrays.get(start)
        if found is None:
            indices = np.arange(start, min(start + _ADDRESS_CHUNK, len(self)), dtype=np.int64)
            found = self._addresses(indices)
            if len(self._chunk_arrays) >= 4:
                self._chunk_arrays.pop(next(iter(self._chunk_arrays)))
            self._chunk_arrays[start] = found
        return found

    def _batch_addresses(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The addresses of a batch's indices, from the cached chunks when they span one or two."""
        first = int(positions.min()) // _ADDRESS_CHUNK * _ADDRESS_CHUNK
        last = int(positions.max()) // _ADDRESS_CHUNK * _ADDRESS_CHUNK
        if last - first > _ADDRESS_CHUNK:
            return self._addresses(positions)
        chunks = [self._chunk_address_arrays(start) for start in sorted({first, last})]
        shards, rows = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        local = positions - first
        return shards[local], rows[local]

    def _addresses(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``(shards, rows)`` of dataset indices (which may span epochs), vectorised."""
        epochs, positions = np.divmod(indices, self.rows_per_epoch)
        epochs += self._first_epoch
        shards = np.empty_like(indices)
        rows = np.empty_like(indices)
        for epoch in np.unique(epochs).tolist():
            where = epochs == epoch
            shards[where], rows[where] = self.order.addresses(epoch, positions[where])
        return shards, rows

    def __str__(self) -> str:
        return (
            f"IndexedSourceDataset(rows_per_epoch={self.rows_per_epoch}, "
            f"shuffle={self.order.shuffle}, window_size={self.order.window_size})"
        )
