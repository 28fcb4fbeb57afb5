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


@runtime_checkable
class SkippingSource(Protocol):
    """A sharded source that may leave bad rows out (``on_bad_row="skip"``).

    ``rows_with_gaps`` yields a ``SkippedRow`` where a row was left out, so that row numbers
    (addresses) never shift; blocks (``read_block``) hold such placeholders too. The loader
    then drops them like a filter does, and splits hosts after that.
    """

    @property
    def skips_rows(self) -> bool:
        """Whether some rows may be left out."""
        ...

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Any]:
        """The rows from ``row`` on, a ``SkippedRow`` standing for each row left out."""
        ...
