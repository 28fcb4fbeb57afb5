"""``PackedRows``: a pipeline's rows packed into fixed-length token rows, by ranges of positions.

Packing is a stream operation (``graph/pack.py``: a row's content depends on every document
before it), so packed rows have no position of their own. ``PackedRows`` keeps the positions
of the rows it packs: ``table(start, stop)`` packs the documents of positions ``[start, stop)``
with a packer that starts empty, and ends with the packer's last rows, padded. A unit of
``materialize()`` is one such range, and the units are fixed by the settings (``unit_rows``
or ``max_shard_size``), never by the engine or the worker count: the output is the same bytes
whoever writes it, and no token is lost. The price is at the unit boundaries: each unit's last
packed row is padded (about half a row of padding per unit), and a document is never split
across two units.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grain
import pyarrow as pa

from easydata_grain.graph.pack import Pack, PackIterDataset
from easydata_grain.materialize.arrow_table import rows_table
from easydata_grain.materialize.protocol import MaterializableRows

_CHUNK_POSITIONS = 4096
"""Input positions read at a time (bounds the documents held at once)."""
_CHUNK_ROWS = 4096
"""Packed rows turned into an Arrow table at a time."""


class _RangeIterator(grain.DatasetIterator):
    """The documents of positions ``[start, stop)`` of ``rows``, read a chunk at a time; its
    state is the next document's index (the packer asks for it before each document)."""

    def __init__(self, rows: MaterializableRows, start: int, stop: int, fields: list[str]):
        super().__init__()
        self._rows, self._fields = rows, fields
        self._next_position, self._stop = start, stop
        self._buffer: Iterator[dict[str, Any]] = iter(())
        self._read = 0

    def __next__(self) -> dict[str, Any]:
        while True:
            row = next(self._buffer, None)
            if row is not None:
                self._read += 1
                return row
            if self._next_position >= self._stop:
                raise StopIteration
            high = min(self._stop, self._next_position + _CHUNK_POSITIONS)
            table = self._rows.table(self._next_position, high)
            self._next_position = high
            if table.num_rows:
                present = [f for f in self._fields if f in table.column_names]
                self._buffer = iter(table.select(present).to_pylist())

    def get_state(self) -> dict[str, int]:
        return {"documents_read": self._read}

    def set_state(self, state: dict[str, int]) -> None:
        raise NotImplementedError("a materialized range is packed in one pass")


class _RangeDataset(grain.IterDataset):
    """``_RangeIterator`` as a Grain dataset (the packer's parent)."""

    def __init__(self, rows: MaterializableRows, start: int, stop: int, fields: list[str]):
        super().__init__()
        self._args = (rows, start, stop, fields)

    def __iter__(self) -> _RangeIterator:
        return _RangeIterator(*self._args)


class PackedRows:
    """``rows`` packed per ``pack``, each range of positions from an empty packer (see the
    module's docstring): the ``MaterializableRows`` of a packed pipeline."""

    def __init__(self, rows: MaterializableRows, pack: Pack):
        if not isinstance(rows, MaterializableRows):
            raise TypeError(f"rows must be MaterializableRows, got {type(rows).__name__}")
        if not isinstance(pack, Pack):
            raise TypeError(f"pack must be a Pack, got {pack!r}")
        self.rows = rows
        """The rows before packing."""
        self.pack = pack
        """How they are packed."""

    def fingerprint(self) -> dict[str, Any]:
        """The rows' fingerprint and the packing settings."""
        return {"rows": "packed", "inner": self.rows.fingerprint(), "pack": self.pack.fingerprint()}

    def num_positions(self) -> int:
        """The positions of the rows before packing."""
        return self.rows.num_positions()

    def table(self, start: int, stop: int) -> pa.Table:
        """The packed rows of the documents of positions ``[start, stop)``."""
        total = self.num_positions()
        if not 0 <= start <= stop <= total:
            raise IndexError(f"positions [{start}, {stop}) are out of range for {total} rows")
        fields = [self.pack.field, *([self.pack.mask_field] if self.pack.mask_field else [])]
        packed = iter(PackIterDataset(_RangeDataset(self.rows, start, stop, fields), self.pack))
        tables, chunk = [], []
        for row in packed:
            chunk.append(row)
            if len(chunk) == _CHUNK_ROWS:
                tables.append(
                    rows_table(chunk, f"the packed rows of positions {start}..{stop - 1}")
                )
                chunk = []
        if chunk:
            tables.append(rows_table(chunk, f"the packed rows of positions {start}..{stop - 1}"))
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables)

    def __repr__(self) -> str:
        return f"PackedRows({self.rows!r}, {self.pack!r})"
