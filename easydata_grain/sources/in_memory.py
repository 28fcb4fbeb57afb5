"""Rows already in memory (a pyarrow Table, rows, columns, a ``datasets.Dataset``) as a source."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pyarrow as pa

from easydata_grain.io.errors import RowOutOfRangeError, SchemaMismatchError, ShardNotFoundError
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.arrow_rows import batch_to_rows
from easydata_grain.sources.protocol import columns_to_keep
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, row_number


def _table_digest(table: pa.Table) -> str:
    """A hash of a table's content (its Arrow IPC stream)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


class InMemorySource(TransformableSource):
    """A table held in memory as one shard, read in indexed mode (O(1) resume, columnar batches).

    Build it with ``from_rows`` (a list of dicts), ``from_columns`` (a dict of equal-length
    columns), ``from_dataset`` (a map-style ``datasets.Dataset``, its Arrow table used without
    a copy) or directly from a ``pyarrow.Table``. Rows come out as the file sources give
    them: numbers and strings as Python values, numeric lists as numpy arrays.
    """

    block_rows: ClassVar[int] = 1024

    def __init__(self, table: pa.Table, *, name: str = "memory", identity: str | None = None):
        if not isinstance(table, pa.Table):
            raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
        self.table = table
        self.name = name
        self.stats = IOStats()
        self._identity = identity if identity is not None else _table_digest(table)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> InMemorySource:
        """A list of dict rows, which must all have the same fields."""
        first = list(rows[0]) if rows else []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"Row {i} of the rows is a {type(row).__name__}, not a dict.")
            if list(row) != first and set(row) != set(first):
                raise SchemaMismatchError(
                    f"Row {i} of the rows has fields {sorted(row)}, row 0 has {sorted(first)}.",
                    row=i,
                    hint="Give every row the same fields (batches must keep their keys).",
                )
        return cls(pa.Table.from_pylist([dict(r) for r in rows]), name=f"rows[{len(rows)}]")

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence[Any]]) -> InMemorySource:
        """A dict of columns of equal length."""
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"The columns have different lengths: {lengths}.")
        return cls(pa.table(dict(columns)), name=f"columns{sorted(columns)}")

    @classmethod
    def from_dataset(cls, dataset: Any) -> InMemorySource:
        """A map-style ``datasets.Dataset``: its Arrow table (taken through its indices mapping
        when it was shuffled or selected), identified by the dataset's own fingerprint."""
        table = dataset.data.table
        indices = getattr(dataset, "_indices", None)
        if indices is not None:
            table = table.take(indices.column(0))
        name = f"datasets.Dataset({getattr(dataset, 'info', None) and dataset.info.dataset_name})"
        fingerprint = getattr(dataset, "_fingerprint", None)
        return cls(table, name=name, identity=fingerprint)

    # -- the ShardedSource protocol ------------------------------------------------------------

    @property
    def shard_names(self) -> list[str]:
        """One shard: the table."""
        return [self.name]

    def open_shard(self, shard: str | int) -> Iterator[Row]:
        """All rows."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str | int, row: int) -> Iterator[Row]:
        """The rows from ``row`` on."""
        self._check_shard(shard)
        index = row_number(row)
        if index is None or not 0 <= index <= len(self.table):
            raise RowOutOfRangeError(
                f"Row {row!r} is out of range for {self.name}, which has {len(self.table)} rows.",
                path=self.name,
                row=index,
            )
        for batch in self.table.slice(index).to_batches(max_chunksize=self.block_rows):
            yield from batch_to_rows(batch, True)

    # -- indexed access ---------------------------------------------------------------------------

    @property
    def schema(self) -> pa.Schema:
        """The table's schema."""
        return self.table.schema

    block_schema = schema

    def row_counts(self) -> list[int]:
        """The one shard's row count."""
        return [len(self.table)]

    def num_rows(self, shard: str | int) -> int:
        """The row count of the shard."""
        self._check_shard(shard)
        return len(self.table)

    def block_starts(self, shard: str | int) -> Sequence[int]:
        """Blocks of ``block_rows`` rows."""
        return range(0, self.num_rows(shard), self.block_rows)

    def read_block_table(self, shard: str | int, block: int) -> pa.Table:
        """One block as a table (a zero-copy slice)."""
        self._check_shard(shard)
        start = block * self.block_rows
        return self.table.slice(start, self.block_rows)

    def table_rows(self, table: pa.Table) -> list[Row]:
        """The dict rows of a block's table."""
        return [row for batch in table.to_batches() for row in batch_to_rows(batch, True)]

    def read_block(self, shard: str | int, block: int) -> list[Row]:
        """One block's rows."""
        return self.table_rows(self.read_block_table(shard, block))

    # -- the ProjectableSource protocol ----------------------------------------------------------

    @property
    def column_names(self) -> list[str]:
        """The table's columns."""
        return list(self.table.column_names)

    def with_columns(self, columns: Collection[str]) -> InMemorySource:
        """The same rows with only ``columns`` (in the table's order; no copy of the data), the
        same identity and counters; this source itself when nothing is left out."""
        kept = columns_to_keep(self.column_names, columns, self.name)
        if kept == self.column_names:
            return self
        projected = InMemorySource(self.table.select(kept), name=self.name, identity=self._identity)
        projected.stats = self.stats
        return projected

    def identities(self) -> list[str]:
        """The shard's name, row count and content hash, for fingerprints."""
        return [f"{self.name}|{len(self.table)}|{self._identity}"]

    def _check_shard(self, shard: str | int) -> None:
        if shard not in (0, self.name) or isinstance(shard, bool):
            raise ShardNotFoundError(
                f"{shard!r} is not a shard of {self.name}.",
                path=str(shard),
                hint=f"The only shard is {self.name!r} (or 0).",
            )

    def __repr__(self) -> str:
        return f"InMemorySource({self.name}, {len(self.table)} rows)"
