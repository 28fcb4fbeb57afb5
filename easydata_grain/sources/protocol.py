"""The protocols between sources and the graph: what a source offers, checked with isinstance.

- ``ShardedSource``: the spec's three members; enough for streaming mode.
- ``IdentifiedSource``: what identifies its data (shard names, versions), for fingerprints.
- ``IndexedSource``: row counts, blocks and identities; the graph reads it in indexed mode
  (random access in the epoch order, O(1) resume).
- ``ColumnarSource``: blocks as Arrow tables, so batches are gathered column by column.
- ``ProjectableSource``: a source that can read only some of its columns; the compiler asks
  it for the columns the row ops need (projection push-down).
- ``SkippingSource``: a source that may leave bad rows out, keeping their addresses.
- ``StatefulIterable``: a stream whose position can be saved (``datasets.IterableDataset``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from easydata_grain.io.errors import MissingColumnError

if TYPE_CHECKING:
    import pyarrow as pa

    from easydata_grain.io.stats import IOStats


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
class IdentifiedSource(Protocol):
    """A source that says what identifies its data, for the loader's fingerprint."""

    def identities(self) -> list[str]:
        """Each shard's name, row count and version (what is known): a saved state made from
        other data does not restore."""
        ...


@runtime_checkable
class IndexedSource(ShardedSource, IdentifiedSource, Protocol):
    """A sharded source whose row counts are known without reading rows, read by blocks.

    Shards are addressed by their position; a block is the unit random access reads at once
    (a Parquet row group, 1024 JSON lines).
    """

    stats: IOStats
    """Counters of what was read (rows, bytes, requests, retries, skipped rows)."""

    def row_counts(self) -> list[int]:
        """Every shard's row count, from metadata."""
        ...

    def block_starts(self, shard: int) -> Sequence[int]:
        """The first row of each block of a shard."""
        ...

    def read_block(self, shard: int, block: int) -> list[Any]:
        """All rows of one block (a ``SkippedRow`` where a row was left out)."""
        ...


@runtime_checkable
class ColumnarSource(Protocol):
    """A source whose blocks are Arrow tables (``block_schema`` None: rows only)."""

    @property
    def block_schema(self) -> pa.Schema | None:
        """The schema of ``read_block_table``'s tables, or None when blocks are rows only."""
        ...

    def read_block_table(self, shard: int, block: int) -> pa.Table:
        """One block as an Arrow table."""
        ...

    def table_rows(self, table: pa.Table) -> list[dict[str, Any]]:
        """A block table's dict rows, as ``read_block`` gives them."""
        ...


@runtime_checkable
class ProjectableSource(Protocol):
    """A source that can read only some of its columns (Parquet reads only their chunks)."""

    @property
    def column_names(self) -> Sequence[str] | None:
        """The fields of its rows, in order; None when they are not known without reading."""
        ...

    def with_columns(self, columns: Collection[str]) -> Any:
        """The same source (shards, rows, identities, counters) with only ``columns`` in its
        rows, in its own column order; a column it does not have is an error."""
        ...


@runtime_checkable
class WrappingSource(Protocol):
    """A source whose rows are another source's rows through row operations (a
    ``TransformedShardedSource``): the compiler walks its steps to project the inner source."""

    @property
    def inner_source(self) -> Any:
        """The source whose rows the steps transform."""
        ...

    @property
    def row_steps(self) -> tuple[Any, ...]:
        """The row operations, in order."""
        ...

    def with_inner_source(self, source: Any) -> Any:
        """The same wrapper (steps, settings) around ``source`` (a projection of its own)."""
        ...


def columns_to_keep(names: Sequence[str], columns: Collection[str], where: str) -> list[str]:
    """The ``names`` that are in ``columns``, in their order (``with_columns``'s argument
    checked: a column not among ``names`` raises ``MissingColumnError`` naming ``where``)."""
    if isinstance(columns, str) or not columns:
        raise TypeError(f"columns must be a non-empty collection of names, got {columns!r}")
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise MissingColumnError(
            f"{where} has no column(s) {unknown}; its columns are {list(names)}.",
            path=where,
            hint="Name columns the source has (names are case-sensitive).",
        )
    return [name for name in names if name in columns]


def projected_identities(identities: list[str], columns: Sequence[str] | None) -> list[str]:
    """``identities`` of a source built to read only ``columns`` (None: all of them): the
    projection is part of what its rows are, so a cache made with other columns misses. (The
    compiler's own projection, ``with_columns``, keeps the identities.)"""
    if columns is None:
        return identities
    return [f"{identity}|columns={','.join(columns)}" for identity in identities]


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (for an error that names them)."""
    names = [
        name for name in dir(protocol) if not name.startswith("_") and name not in dir(Protocol)
    ]
    names += list(getattr(protocol, "__annotations__", {}))
    return sorted({name for name in names if not hasattr(obj, name)})


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


@runtime_checkable
class StatefulIterable(Protocol):
    """An iterable whose position can be saved: a ``datasets.IterableDataset``."""

    def __iter__(self) -> Iterator[Any]:
        """The rows."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The position, as a JSON-able dict."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position."""
        ...


@runtime_checkable
class DescribedSource(Protocol):
    """A source that says where its rows come from (a Hub repo's commit, format, cache...), in
    one line that ``loader.describe()`` prints under the source."""

    def describe(self) -> str:
        """Where the rows come from, in words."""
        ...
