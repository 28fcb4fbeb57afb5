"""The ShardedSource protocol: what every source offers the loader."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ShardedSource(Protocol):
    """An ordered list of shards, each an iterable of dict rows that can start at any row.

    A sample's address is ``(shard index, row)``. Sources whose row counts are known without
    reading the data (Parquet footers, JSON line indexes) also implement ``num_rows``.
    """

    @property
    def shard_names(self) -> Sequence[str]:
        """The shards, in a fixed order."""
        ...

    def open_shard(self, shard: str) -> Iterator[dict[str, Any]]:
        """Iterate over all rows of a shard."""
        ...

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[dict[str, Any]]:
        """Iterate over the rows of a shard from ``row`` on."""
        ...
