"""Indexed mode: a source with known row counts as a Grain MapDataset in the epoch order."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from easydata_grain.graph.block_cache import BlockCache
from easydata_grain.order import EpochOrder

_MAX_CACHED_BLOCKS = 256
_ADDRESS_CHUNK = 1024


class IndexedSourceDataset(grain.MapDataset):
    """Element ``i`` is the row at the epoch order's address of ``divmod(i, rows_per_epoch)``.

    Random access reads whole blocks (Parquet row groups) through a small cache sized to the
    order's window, so each block is read and decoded once per epoch. Nothing about the order
    is stored: an iterator's state is the next index, and resuming is O(1).
    ``num_epochs=None`` repeats forever (each epoch in its own order).
    """

    def __init__(
        self,
        source: Any,
        *,
        seed: int = 0,
        shuffle: bool = True,
        window_size: int = 4096,
        num_epochs: int | None = 1,
        read_threads: int = 0,
    ):
        super().__init__()
        self._source = source
        self.order = EpochOrder(
            tuple(source.row_counts()), seed=seed, window_size=window_size, shuffle=shuffle
        )
        self.rows_per_epoch = len(self.order)
        self._num_epochs = num_epochs
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

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        """Many rows at once (a batch): addresses and blocks looked up per block, not per row."""
        positions = np.asarray(indices, dtype=np.int64)
        if not len(positions):
            return []
        next_chunk = int(positions.max()) // _ADDRESS_CHUNK * _ADDRESS_CHUNK + _ADDRESS_CHUNK
        if next_chunk > self._prefetched_until and next_chunk < len(self):
            self._prefetch_chunk(next_chunk)
            self._prefetched_until = next_chunk
        shards, rows = self._addresses(positions)
        out: list[Any] = [None] * len(rows)
        for shard in np.unique(shards).tolist():
            where = np.flatnonzero(shards == shard)
            starts = self._block_starts(shard)
            blocks = np.searchsorted(starts, rows[where], side="right") - 1
            for block in np.unique(blocks).tolist():
                block_rows = self._cache.block(shard, block)
                mine = where[blocks == block]
                offsets = (rows[mine] - starts[block]).tolist()
                for slot, offset in zip(mine.tolist(), offsets, strict=True):
                    out[slot] = block_rows[offset]
        return out

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
        shards, rows = (np.asarray(a) for a in self._chunk_addresses(start))
        blocks = []
        for shard in np.unique(shards).tolist():
            starts = self._block_starts(shard)
            found = np.searchsorted(starts, rows[shards == shard], side="right") - 1
            blocks += [(shard, block) for block in np.unique(found).tolist()]
        self._cache.prefetch(blocks)

    def _chunk_addresses(self, start: int) -> tuple[list[int], list[int]]:
        """The addresses of indices ``start .. start + _ADDRESS_CHUNK`` (vectorised)."""
        indices = np.arange(start, min(start + _ADDRESS_CHUNK, len(self)), dtype=np.int64)
        shards, rows = self._addresses(indices)
        return shards.tolist(), rows.tolist()

    def _addresses(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``(shards, rows)`` of dataset indices (which may span epochs), vectorised."""
        epochs, positions = np.divmod(indices, self.rows_per_epoch)
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
