"""A small in-memory sharded source for the graph ops' unit tests, counting its block reads."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from easydata_grain.io.stats import IOStats
from easydata_grain.sources.skipped import SkippedRow

Row = dict[str, Any]


class FakeSource:
    """Shards of ``sizes`` rows ``{"id": i}`` (ids ``0..N-1`` across the shards, in order), read
    in blocks of ``block_rows`` rows; the ids in ``skipped`` are bad rows left out.

    ``reads`` counts the reads of each ``(shard, block)``. ``gate``, when set, makes every read
    wait for it; ``failures`` reads raise ``OSError`` before the reads succeed again.
    """

    block_schema = None  # blocks are rows, not Arrow tables

    def __init__(self, sizes: Sequence[int], block_rows: int = 4, skipped: Sequence[int] = ()):
        self.sizes = list(sizes)
        self.block_rows = block_rows
        self.skipped = frozenset(skipped)
        self.stats = IOStats()
        self.reads: collections.Counter[tuple[int, int]] = collections.Counter()
        self.reading = threading.Event()
        self.gate: threading.Event | None = None
        self.failures = 0
        self._first_ids = [0, *itertools.accumulate(self.sizes)]

    @property
    def shard_names(self) -> list[str]:
        """``shard-0``, ``shard-1``, ..."""
        return [f"shard-{i}" for i in range(len(self.sizes))]

    @property
    def skips_rows(self) -> bool:
        """Whether some rows are left out."""
        return bool(self.skipped)

    def row(self, shard: int, row: int) -> Row | SkippedRow:
        """The row at ``(shard, row)``, or its placeholder when it is a bad row."""
        row_id = self._first_ids[shard] + row
        if row_id in self.skipped:
            return SkippedRow(self.shard_names[shard], row, None)
        return {"id": row_id}

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Row | SkippedRow]:
        """The rows from ``row`` on, a ``SkippedRow`` standing for each bad row."""
        index = shard if isinstance(shard, int) else self.shard_names.index(shard)
        return (self.row(index, r) for r in range(row, self.sizes[index]))

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[Row]:
        """The good rows from ``row`` on."""
        return (r for r in self.rows_with_gaps(shard, row) if not isinstance(r, SkippedRow))

    def open_shard(self, shard: str) -> Iterator[Row]:
        """All good rows of a shard."""
        return self.open_shard_at_row(shard, 0)

    def row_counts(self) -> list[int]:
        """Every shard's row count (bad rows included)."""
        return list(self.sizes)

    def block_starts(self, shard: int) -> range:
        """Blocks of ``block_rows`` rows."""
        return range(0, self.sizes[shard], self.block_rows)

    def read_block(self, shard: int, block: int) -> list[Row | SkippedRow]:
        """One block's rows (counted; waits for ``gate``; may fail)."""
        self.reading.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.reads[shard, block] += 1
        if self.failures:
            self.failures -= 1
            raise OSError(f"read of block {block} of shard {shard} failed")
        start = block * self.block_rows
        stop = min(start + self.block_rows, self.sizes[shard])
        return [self.row(shard, r) for r in range(start, stop)]

    def __getstate__(self) -> dict[str, Any]:
        """Picklable, as for worker processes: the events are left out and made anew."""
        return {k: v for k, v in self.__dict__.items() if k not in ("reading", "gate")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, reading=threading.Event(), gate=None)

    def identities(self) -> list[str]:
        """Each shard's name and row count."""
        return [f"{name}|{size}" for name, size in zip(self.shard_names, self.sizes, strict=True)]
