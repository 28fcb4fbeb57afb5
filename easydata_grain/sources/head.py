"""The first ``num_rows`` rows of a source, in shard order: ``DatasetConfig(num_rows=...)``.

``HeadSource(source, num_rows)`` keeps the shards that hold those rows and cuts the last one,
so it is an ``IndexedSource`` like the source (random access, O(1) resume, elastic). The limit
is exact: asking for more rows than the source has is an error, not a shorter dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from easydata_grain.io.errors import RowOutOfRangeError
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.protocol import ColumnarSource, IndexedSource, SkippingSource
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, close_rows


class HeadSource(TransformableSource):
    """The first ``num_rows`` rows of an ``IndexedSource`` (shards in order, rows in order)."""

    def __init__(self, source: Any, num_rows: int):
        if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
            raise ValueError(f"num_rows must be an int >= 1, got {num_rows!r}")
        if not isinstance(source, IndexedSource):
            raise TypeError(
                f"num_rows needs a source whose row counts are known (Parquet, JSON, Hub "
                f"files); {type(source).__name__} is read as a stream. Limit it with "
                "itertools.islice instead, or read the files with a Parquet/JSON source."
            )
        counts = source.row_counts()
        total = sum(counts)
        if num_rows > total:
            raise RowOutOfRangeError(
                f"num_rows={num_rows} but the source has only {total} rows ({source!r}).",
                path=str(source.shard_names[0]) if source.shard_names else None,
                hint="Lower num_rows, or leave it out to read every row.",
            )
        self.source = source
        self.limit = num_rows
        """How many rows are kept."""
        self._counts: list[int] = []
        left = num_rows
        for count in counts:
            if left == 0:
                break
            self._counts.append(min(count, left))
            left -= self._counts[-1]

    def __repr__(self) -> str:
        return f"HeadSource({self.source!r}, num_rows={self.limit})"

    @property
    def shard_names(self) -> list[str]:
        """The source's shards that hold the first ``num_rows`` rows."""
        return list(self.source.shard_names[: len(self._counts)])

    def _index(self, shard: str | int) -> int:
        index = self.shard_names.index(shard) if isinstance(shard, str) else shard
        if not 0 <= index < len(self._counts):
            raise IndexError(f"Shard {shard} out of range: there are {len(self._counts)} shards")
        return index

    def open_shard(self, shard: str | int) -> Iterator[Row]:
        """Iterate over the kept rows of a shard."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str | int, row: int) -> Iterator[Row]:
        """Iterate over the kept rows of a shard from the source's ``row`` on."""
        index = self._index(shard)
        return _head(
            self.source.open_shard_at_row(self.source.shard_names[index], row),
            max(0, self._counts[index] - row),
        )

    @property
    def skips_rows(self) -> bool:
        """Whether the source may leave bad rows out (see ``SkippingSource``)."""
        return isinstance(self.source, SkippingSource) and self.source.skips_rows

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Any]:
        """The kept rows of a shard from ``row`` on, a ``SkippedRow`` for each row left out."""
        index = self._index(shard)
        rows = (
            self.source.rows_with_gaps(index, row)
            if isinstance(self.source, SkippingSource)
            else self.source.open_shard_at_row(self.source.shard_names[index], row)
        )
        return _head(rows, max(0, self._counts[index] - row))

    def row_counts(self) -> list[int]:
        """The kept row count of every kept shard."""
        return list(self._counts)

    def num_rows(self, shard: str | int) -> int:
        """The kept row count of one shard."""
        return self._counts[self._index(shard)]

    def block_starts(self, shard: int) -> Sequence[int]:
        """The source's blocks of a shard that start before its cut."""
        index = self._index(shard)
        return [s for s in self.source.block_starts(index) if s < self._counts[index]]

    def _keep(self, shard: int, block: int) -> int | None:
        """How many rows of a block are kept (None: all)."""
        starts = self.source.block_starts(shard)
        end = starts[block + 1] if block + 1 < len(starts) else None
        cut = self._counts[shard]
        if end is not None and end <= cut:
            return None
        return cut - starts[block]

    def read_block(self, shard: int, block: int) -> list[Any]:
        """The kept rows of one block."""
        index = self._index(shard)
        rows = self.source.read_block(index, block)
        keep = self._keep(index, block)
        return rows if keep is None else rows[:keep]

    @property
    def block_schema(self) -> pa.Schema | None:
        """The source's ``block_schema`` (None when it reads rows)."""
        return self.source.block_schema if isinstance(self.source, ColumnarSource) else None

    def read_block_table(self, shard: int, block: int) -> pa.Table:
        """The kept rows of one block as an Arrow table."""
        index = self._index(shard)
        table = self.source.read_block_table(index, block)
        keep = self._keep(index, block)
        return table if keep is None else table.slice(0, keep)

    def table_rows(self, table: pa.Table) -> list[Row]:
        """The dict rows of a table from ``read_block_table``."""
        return self.source.table_rows(table)

    def identities(self) -> list[str]:
        """The kept shards' identities, with the cut of the last one."""
        kept = self.source.identities()[: len(self._counts)]
        return [*kept[:-1], f"{kept[-1]}[:{self._counts[-1]}]"]

    @property
    def stats(self) -> IOStats:
        """The source's I/O counters."""
        return self.source.stats


def _head(rows: Iterator[Any], count: int) -> Iterator[Any]:
    """The first ``count`` items of ``rows``; the iterator is closed after."""
    try:
        for i, row in enumerate(rows, start=1):
            if i > count:
                break
            yield row
            if i == count:
                break
    finally:
        close_rows(rows)
