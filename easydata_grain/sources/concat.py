"""Several sharded sources seen as one: their shards, one after the other."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from easydata_grain.io.stats import IOStats
from easydata_grain.sources.protocol import SkippingSource

Row = dict[str, Any]


class ConcatSource:
    """The shards of several sources in order; shard ``i`` is addressed by its position.

    Every part must know its row counts (``row_counts``, ``block_starts``, ``read_block``), as
    the file sources do. Shard names are prefixed with the part's number when parts share a name.
    """

    def __init__(self, parts: Sequence[Any]):
        if not parts:
            raise ValueError("ConcatSource needs at least one source")
        self.parts = list(parts)
        self._offsets = [0]
        for part in self.parts:
            self._offsets.append(self._offsets[-1] + len(part.shard_names))
        names = [name for part in self.parts for name in part.shard_names]
        unique = len(set(names)) == len(names)
        self._names = (
            names
            if unique
            else [f"{p}:{n}" for p, part in enumerate(self.parts) for n in part.shard_names]
        )

    @property
    def shard_names(self) -> list[str]:
        """All shards of all parts, in order."""
        return list(self._names)

    def _locate(self, shard: str | int) -> tuple[Any, int]:
        index = self._names.index(shard) if isinstance(shard, str) else shard
        if not 0 <= index < len(self._names):
            raise IndexError(f"Shard {shard} out of range: there are {len(self._names)} shards")
        part = bisect.bisect_right(self._offsets, index) - 1
        return self.parts[part], index - self._offsets[part]

    def open_shard(self, shard: str | int) -> Iterator[Row]:
        """Iterate over all rows of a shard."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str | int, row: int) -> Iterator[Row]:
        """Iterate over the rows of a shard from ``row`` on."""
        part, local = self._locate(shard)
        return part.open_shard_at_row(part.shard_names[local], row)

    @property
    def skips_rows(self) -> bool:
        """Whether a part may leave bad rows out (see ``SkippingSource``)."""
        return any(isinstance(p, SkippingSource) and p.skips_rows for p in self.parts)

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Any]:
        """The rows of a shard from ``row`` on, a ``SkippedRow`` for each row left out."""
        part, local = self._locate(shard)
        if isinstance(part, SkippingSource):
            return part.rows_with_gaps(local, row)
        return part.open_shard_at_row(part.shard_names[local], row)

    def num_rows(self, shard: str | int) -> int:
        """The row count of a shard."""
        part, local = self._locate(shard)
        return part.num_rows(local)

    def row_counts(self) -> list[int]:
        """The row count of every shard."""
        return [count for part in self.parts for count in part.row_counts()]

    def block_starts(self, shard: str | int) -> Sequence[int]:
        """The first row of each random-access block of a shard."""
        part, local = self._locate(shard)
        return part.block_starts(local)

    def read_block(self, shard: str | int, block: int) -> list[Row]:
        """The rows of one block of a shard."""
        part, local = self._locate(shard)
        return part.read_block(local, block)

    @property
    def block_schema(self) -> Any:
        """The parts' common ``block_schema``, or None when a part has none or they differ."""
        schemas = [getattr(part, "block_schema", None) for part in self.parts]
        if schemas[0] is None or not all(s is not None and s.equals(schemas[0]) for s in schemas):
            return None
        return schemas[0]

    def read_block_table(self, shard: str | int, block: int) -> Any:
        """One block of a shard as an Arrow table (when ``block_schema`` is not None)."""
        part, local = self._locate(shard)
        return part.read_block_table(local, block)

    def table_rows(self, table: Any) -> list[Row]:
        """The dict rows of a table from ``read_block_table``."""
        return self.parts[0].table_rows(table)

    def identities(self) -> list[str]:
        """Every shard's name, row count and version, for fingerprints."""
        return [identity for part in self.parts for identity in part.identities()]

    @property
    def stats(self) -> IOStats:
        """The parts' I/O counters, added up."""
        total = IOStats()
        for part in self.parts:
            total.add(**part.stats.snapshot())
        return total
