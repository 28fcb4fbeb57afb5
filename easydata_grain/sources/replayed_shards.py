"""``ReplayedShards``: the shard protocol of a source whose shards are streams without a row
index (``datasets`` streams), so a seek to row ``r`` reads and drops the rows before it."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence

from easydata_grain.io.errors import ShardNotFoundError
from easydata_grain.types import Row, row_number


class ReplayedShards(abc.ABC):
    """Mixin: ``shard_names``, ``open_shard``, ``open_shard_at_row`` and ``shard_index`` over
    the names given to ``_name_shards``; a subclass reads shard ``index`` from ``row`` on in
    ``_rows``."""

    _names: list[str]
    _positions: dict[str, int]

    def _name_shards(self, names: Sequence[str]) -> None:
        """The shards' names, in order (call once, in ``__init__``)."""
        self._names = list(names)
        self._positions = {name: i for i, name in enumerate(self._names)}

    @property
    def shard_names(self) -> list[str]:
        """The shards' names, in order."""
        return list(self._names)

    def open_shard(self, shard: str | int) -> Iterator[Row]:
        """All rows of a shard."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str | int, row: int) -> Iterator[Row]:
        """The rows of a shard from ``row`` on (the rows before it are read and dropped)."""
        number = row_number(row)
        if number is None or number < 0:
            raise ValueError(f"row must be an int >= 0, got {row!r}")
        row = number
        return self._rows(self.shard_index(shard), row)

    def shard_index(self, shard: str | int) -> int:
        """The position of a shard given by name (or by position, checked)."""
        index = self._positions.get(shard) if isinstance(shard, str) else shard
        if index is None or isinstance(index, bool) or not 0 <= index < len(self._names):
            raise ShardNotFoundError(
                f"{shard!r} is not a shard of {self!r}.",
                path=str(shard),
                hint=f"Use one of source.shard_names ({len(self._names)} shards).",
            )
        return index

    @abc.abstractmethod
    def _rows(self, index: int, row: int) -> Iterator[Row]:
        """The rows of shard ``index`` from ``row`` on."""
