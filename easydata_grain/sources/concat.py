"""Several sharded sources seen as one: their shards, one after the other."""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from easydata_grain.batch_format import batch_dtype
from easydata_grain.io.errors import SchemaMismatchError
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.protocol import (
    ColumnarSource,
    ProjectableSource,
    SkippingSource,
    columns_to_keep,
)
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, close_rows


def _value_kind(value: Any) -> str | None:
    """What a row's value becomes in a batch (see ``batch_dtype``); None when a value alone
    does not tell (null, Python lists, nested objects)."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return f"list<{value.dtype}>"
    return None


def field_kinds(source: Any) -> dict[str, str | None]:
    """The fields of a source's rows and what each becomes in a batch: from its Arrow schema
    when it has one, else from its first row."""
    schema = source.block_schema if isinstance(source, ColumnarSource) else None
    if isinstance(schema, pa.Schema):
        return {field.name: batch_dtype(field.type) for field in schema}
    rows = source.open_shard(source.shard_names[0])
    try:
        first = next(iter(rows), None)
    finally:
        close_rows(rows)
    return {name: _value_kind(value) for name, value in (first or {}).items()}


def check_same_fields(parts: Sequence[Any]) -> None:
    """Raise ``SchemaMismatchError`` when two sources give rows with other fields or types,
    which would make batches change keys or dtypes from one batch to the next."""
    reference = field_kinds(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        kinds = field_kinds(part)
        problems = []
        if missing := [n for n in reference if n not in kinds]:
            problems.append(f"missing fields {missing}")
        if extra := [n for n in kinds if n not in reference]:
            problems.append(f"extra fields {extra}")
        if changed := [
            f"{n} ({reference[n]} vs {kinds[n]})"
            for n in reference
            if n in kinds and None not in (reference[n], kinds[n]) and reference[n] != kinds[n]
        ]:
            problems.append(f"different types for {', '.join(changed)}")
        if problems:
            raise SchemaMismatchError(
                f"Source {i} ({part!r}) gives other rows than source 0 ({parts[0]!r}): "
                f"{'; '.join(problems)}.",
                path=str(part.shard_names[0]),
                hint="Sources read together must give the same fields with the same types; "
                "project (columns=) or transform them to one schema first.",
            )


class ConcatSource(TransformableSource):
    """The shards of several sources in order; shard ``i`` is addressed by its position.

    Every part must know its row counts (``row_counts``, ``block_starts``, ``read_block``), as
    the file sources do. Shard names are prefixed with the part's number when parts share a name.
    """

    def __init__(self, parts: Sequence[Any]):
        if not parts:
            raise ValueError("ConcatSource needs at least one source")
        self.parts = list(parts)
        if len(self.parts) > 1:
            check_same_fields(self.parts)
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
        schemas = [p.block_schema if isinstance(p, ColumnarSource) else None for p in self.parts]
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

    @property
    def column_names(self) -> list[str] | None:
        """The parts' columns, when every part can read only some (``ProjectableSource``);
        else None (nothing is projected)."""
        if not all(isinstance(p, ProjectableSource) for p in self.parts):
            return None
        names = [p.column_names for p in self.parts]
        return None if any(n is None for n in names) else list(names[0])

    def with_columns(self, columns: Collection[str]) -> ConcatSource:
        """Every part reading only ``columns``; this source itself when nothing is left out."""
        names = self.column_names
        if names is None:
            raise TypeError(
                "A part of this ConcatSource cannot read only some columns (it is not a "
                "ProjectableSource): project the parts that can before concatenating them."
            )
        kept = columns_to_keep(names, columns, str(self._names[0]))
        if kept == names:
            return self
        return ConcatSource([part.with_columns(kept) for part in self.parts])

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
