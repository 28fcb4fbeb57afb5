"""A sharded source whose rows go through transforms as they are read.

``TransformedShardedSource(source, transform)`` keeps the source's shards and addresses: row
``r`` of a shard is the source's row ``r`` transformed, and ``open_shard_at_row(shard, r)``
starts at the source's row ``r`` (O(1) where the source seeks in O(1)).

- Maps only: over an ``IndexedSource`` it is one too (row counts, blocks, identities), each
  block transformed in one batched call (a tokenizer gets the whole block), so the loader
  reads it in indexed mode: shuffled, exact and elastic O(1) resume, ``len(loader)`` known.
- With a filter: row numbers stay the source's, a filtered row leaves a ``SkippedRow``
  placeholder at its address (``rows_with_gaps``, ``read_block``) exactly as a source with
  ``on_bad_row="skip"`` does: ``open_shard_at_row`` leaves it out, and the loader drops it like a
  filter (hosts split after it; the resume stays exact and O(1); ``len(loader)`` is unknown).

A transform that fails raises a ``SourceError`` naming the shard and the source row (a
``SourceError`` of the transform keeps its class; any other error becomes a
``MalformedRowError``), chained to the original error.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from easydata_grain.io.errors import error_at
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.iterable_dataset import as_sharded
from easydata_grain.sources.protocol import (
    IdentifiedSource,
    IndexedSource,
    ShardedSource,
    SkippingSource,
    missing_members,
)
from easydata_grain.sources.skipped import SkippedRow, is_skipped
from easydata_grain.transforms.chain import Chain, chain
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row

DEFAULT_CHUNK_ROWS = 1000
"""Rows transformed per call (a batched tokenizer gets lists this long)."""


def mixture_and_steps(source: Any) -> tuple[Any, tuple[Any, ...]]:
    """A ``TransformedShardedSource`` over a ``MixedShardedSource`` (as ``mixed.map(f)``
    builds) as the mixture and its steps: the loader mixes the components in its own order and
    runs the steps as its first transforms, exactly as ``AsyncDataLoader(mixed,
    transforms=[f])``. Any other source is returned as it is, with no steps."""
    from easydata_grain.sources.mixed import MixedShardedSource  # (mixed.py imports this one)

    if isinstance(source, TransformedShardedSource) and isinstance(
        source.source, MixedShardedSource
    ):
        return source.source, source.transform.steps
    return source, ()


class TransformedShardedSource(TransformableSource):
    """``source``'s shards with every row through ``transform`` (see the module's docstring).

    ``source`` is a ``ShardedSource``, or a ``datasets`` dataset: an ``IterableDataset``
    (``load_dataset(..., streaming=True)``) is read as an ``IterableDatasetSource`` (its shards,
    resumed exactly by seeking), a map-style ``Dataset`` as an ``InMemorySource``.
    ``transform`` is a Grain ``Map`` or ``Filter``, a function (a map), a chain (``a >> b``) or
    a list of them. Wrapping a ``TransformedShardedSource`` adds steps to its chain. Rows of a
    shard or a block are transformed ``chunk_rows`` at a time.
    """

    def __new__(
        cls, source: Any = None, transform: Any = None, **_: Any
    ) -> TransformedShardedSource:
        # (pickle calls __new__ with no arguments, on the class it saved)
        source = as_sharded(source)
        inner = source.source if isinstance(source, TransformedShardedSource) else source
        if cls is TransformedShardedSource and isinstance(inner, IndexedSource):
            cls = IndexedTransformedSource
        return super().__new__(cls)

    def __init__(self, source: Any, transform: Any, *, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
        source = as_sharded(source)
        if isinstance(source, TransformedShardedSource):
            source, transform = source.source, [source.transform, transform]
        if not isinstance(source, ShardedSource):
            raise TypeError(
                f"source must be a ShardedSource (shard_names, open_shard, open_shard_at_row) "
                f"or a datasets Dataset/IterableDataset; {type(source).__name__} lacks "
                f"{missing_members(source, ShardedSource)}."
            )
        self.source = source
        """The source whose rows are transformed."""
        self.transform: Chain = chain(transform)
        """The transforms, flattened into one chain (its ``steps``)."""
        self.chunk_rows = chunk_rows

    # -- the WrappingSource protocol (projection push-down) -------------------------------------

    @property
    def inner_source(self) -> Any:
        """The source whose rows are transformed."""
        return self.source

    @property
    def row_steps(self) -> tuple[Any, ...]:
        """The transforms, in order."""
        return self.transform.steps

    def with_inner_source(self, source: Any) -> TransformedShardedSource:
        """The same transforms and ``chunk_rows`` over ``source``."""
        return TransformedShardedSource(source, self.transform, chunk_rows=self.chunk_rows)

    # -- the ShardedSource protocol ------------------------------------------------------------

    @property
    def shard_names(self) -> Sequence[str]:
        """The source's shards."""
        return self.source.shard_names

    def open_shard(self, shard: str) -> Iterator[Row]:
        """A shard's transformed rows (filtered rows left out)."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[Row]:
        """The transformed rows from the source's row ``row`` on (filtered rows left out)."""
        return (r for r in self.rows_with_gaps(shard, row) if not is_skipped(r))

    # -- the SkippingSource protocol: filtered rows keep their addresses -----------------------

    @property
    def skips_rows(self) -> bool:
        """Whether rows may be left out: a filter, or a source that skips bad rows."""
        skipping = isinstance(self.source, SkippingSource) and self.source.skips_rows
        return skipping or not self.transform.is_map

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Any]:
        """The rows from ``row`` on, a ``SkippedRow`` where a row was filtered or skipped."""
        name = self._name(shard)
        if isinstance(self.source, SkippingSource) and self.source.skips_rows:
            rows = self.source.rows_with_gaps(shard, row)
        else:
            rows = self.source.open_shard_at_row(shard, row)
        return self._stream(name, row, iter(rows))

    def _stream(self, name: str, row: int, rows: Iterator[Any]) -> Iterator[Any]:
        try:
            while chunk := list(itertools.islice(rows, self.chunk_rows)):
                yield from self.transform_rows(name, row, chunk)
                row += len(chunk)
        finally:
            if isinstance(rows, Generator):  # release the source's file now
                rows.close()

    def transform_rows(self, shard: str, first_row: int, rows: Sequence[Any]) -> list[Any]:
        """Consecutive rows of ``shard`` from ``first_row`` on, transformed in one batched
        call; a ``SkippedRow`` where a row was skipped by the source or dropped by a filter."""
        live = [(k, r) for k, r in enumerate(rows) if not is_skipped(r)]
        try:
            done = self.transform.apply_batch([r for _, r in live])
        except Exception as error:
            for k, r in live:  # find the row that fails, for an error naming it
                try:
                    self.transform.apply(r)
                except Exception as row_error:
                    raise error_at(row_error, shard, first_row + k) from row_error
            raise error_at(error, shard, first_row, first_row + len(rows) - 1) from error
        out = list(rows)
        for (k, _), new in zip(live, done, strict=True):
            out[k] = new if new is not None else SkippedRow(shard, first_row + k, None)
        return out

    def _name(self, shard: str | int) -> str:
        if isinstance(shard, int) and not isinstance(shard, bool):
            return str(self.source.shard_names[shard])
        return str(shard)

    def identities(self) -> list[str]:
        """The source's identities (its shard names for a stream that has none), each with the
        transforms' fingerprint: a state saved with other transforms is refused."""
        inner = (
            self.source.identities()
            if isinstance(self.source, IdentifiedSource)
            else [str(name) for name in self.source.shard_names]
        )
        return [f"{i}|transform={self.transform.identity}" for i in inner]

    def __repr__(self) -> str:
        # safe on an object whose __init__ raised (a traceback's repr of it)
        parts = [repr(getattr(self, name, "<not set>")) for name in ("source", "transform")]
        return f"TransformedShardedSource({', '.join(parts)})"


class IndexedTransformedSource(TransformedShardedSource):
    """A ``TransformedShardedSource`` over an ``IndexedSource``: indexed too, each block
    transformed in one batched call. Built by ``TransformedShardedSource(...)`` itself."""

    source: IndexedSource

    @property
    def stats(self) -> IOStats:
        """The source's read counters."""
        return self.source.stats

    def row_counts(self) -> list[int]:
        """The source's row counts (filtered rows count: they keep their addresses)."""
        return self.source.row_counts()

    def block_starts(self, shard: int) -> Sequence[int]:
        """The source's blocks."""
        return self.source.block_starts(shard)

    def read_block(self, shard: int, block: int) -> list[Any]:
        """A block's rows transformed ``chunk_rows`` at a time (``SkippedRow`` where
        filtered)."""
        first = int(self.source.block_starts(shard)[block])
        rows = self.source.read_block(shard, block)
        name, size = self._name(shard), self.chunk_rows
        out: list[Any] = []
        for start in range(0, len(rows), size):
            out.extend(self.transform_rows(name, first + start, rows[start : start + size]))
        return out
