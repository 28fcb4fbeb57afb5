"""Each host's part of every global batch, in indexed and in streaming mode.

Global batch ``g`` covers positions ``[g*B, (g+1)*B)`` of the global order; host ``h`` of ``H``
takes the contiguous ``b = B/H`` positions ``g*B + h*b ..``. Every host therefore has the same
number of rows and runs the same number of steps. A last partial global batch is dropped, or
padded: then every row carries ``sample_mask`` (False on padding rows, copies of a real row),
or shared (``share_last``, for packing: a padded *document* would be packed as a real one):
its ``r`` rows are split among the hosts unpadded, host ``h`` taking rows
``[r*h//H, r*(h+1)//H)`` of it (``last_share``), so hosts then differ by at most one row.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
import pyarrow as pa

from easydata_grain.batch_format import ColumnarRows
from easydata_grain.distributed import Hosts

MASK = "sample_mask"
START = "start"
"""State key of ``HostSliceIterDataset``: the parent's state at the start of the global batch."""
SERVED = "served"
"""State key of ``HostSliceIterDataset``: the rows of the global batch this host served."""


def _masked(row: Any, valid: bool) -> Any:
    return {**row, MASK: valid}


def last_share(rest: int, hosts: Hosts) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a last partial global batch of ``rest`` rows that host
    ``hosts.index`` takes when it is shared (``share_last``)."""
    return rest * hosts.index // hosts.count, rest * (hosts.index + 1) // hosts.count


def host_position(index: int, hosts: Hosts, global_batch_size: int) -> int:
    """The global position of element ``index`` of host ``hosts.index``'s part."""
    local = hosts.split(global_batch_size)
    batch, offset = divmod(index, local)
    return batch * global_batch_size + hosts.index * local + offset


class PaddingMask(grain.transforms.MapWithIndex):
    """Adds ``sample_mask`` to element ``index`` of a host's part (False past the ``total``
    real positions): placed after the row ops, which may rebuild rows without it."""

    def __init__(self, hosts: Hosts, global_batch_size: int, total: int):
        self.hosts = hosts
        self.global_batch_size = global_batch_size
        self.total = total

    def map_with_index(self, index: int, element: Any) -> Any:
        """The row with its mask."""
        return _masked(
            element, host_position(index, self.hosts, self.global_batch_size) < self.total
        )

    def __repr__(self) -> str:
        return f"PaddingMask(host={self.hosts.index}/{self.hosts.count}, total={self.total})"


class HostSliceDataset(grain.MapDataset):
    """Indexed mode: element ``j`` of host ``h`` is ``parent[g*B + h*b + i]``, ``g, i = divmod(j, b)``.

    A padded last global batch (``pad_last``) repeats the last real row; ``mask=False`` leaves
    ``sample_mask`` to a ``PaddingMask`` placed after the row ops. A shared one (``share_last``)
    gives this host its ``last_share`` of the rows, after its full global batches.
    """

    def __init__(
        self,
        parent: grain.MapDataset,
        hosts: Hosts,
        global_batch_size: int,
        *,
        pad_last: bool,
        mask: bool = True,
        share_last: bool = False,
    ):
        super().__init__(parent)
        if pad_last and share_last:
            raise ValueError("A last partial global batch is padded or shared, not both.")
        self._hosts = hosts
        self._global = global_batch_size
        self._local = hosts.split(global_batch_size)
        self._total = len(parent)
        self._pad_last = pad_last
        self._mask = pad_last and mask
        full, rest = divmod(self._total, global_batch_size)
        infinite = self._total >= sys.maxsize // 2
        self._share_last = share_last and not infinite
        self._full_rows = full * self._local
        """This host's rows in the full global batches."""
        self._share_start = full * global_batch_size
        share = 0
        if self._share_last:
            start, stop = last_share(rest, hosts)
            self._share_start += start
            share = stop - start
        self._length = (
            sys.maxsize
            if infinite
            else self._full_rows + (self._local if rest and pad_last else share)
        )

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        position = self.position(index)
        if position < self._total:
            row = self._parent[position]
            return _masked(row, True) if self._mask else row
        last = self._parent[self._total - 1]
        return _masked(last, False) if self._mask else last

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        positions = [self.position(index) for index in indices]
        real = [p for p in positions if p < self._total]
        rows = iter(self._parent._getitems(real))
        out = []
        for position in positions:
            if position < self._total:
                row = next(rows)
                out.append(_masked(row, True) if self._mask else row)
            else:
                last = self._parent[self._total - 1]
                out.append(_masked(last, False) if self._mask else last)
        return out

    @property
    def table_schema(self) -> pa.Schema | None:
        """The parent's ``table_schema`` (with ``sample_mask`` when padding), or None."""
        schema = self._parent.table_schema if isinstance(self._parent, ColumnarRows) else None
        if schema is None or not self._mask:
            return schema
        return schema.append(pa.field(MASK, pa.bool_()))

    def _gather_columns(self, indices: Sequence[int]) -> dict[str, Any] | None:
        """The rows at ``indices`` column by column, as ``_getitems`` gives them as dicts."""
        positions = [self.position(index) for index in indices]
        columns = self._parent._gather_columns([min(p, self._total - 1) for p in positions])
        if columns is not None and self._mask:
            columns[MASK] = np.array([p < self._total for p in positions], dtype=bool)
        return columns

    def position(self, index: int) -> int:
        """The parent's index of element ``index`` (past the parent's end: padding)."""
        if self._share_last and index >= self._full_rows:  # its share of the last batch
            return self._share_start + index - self._full_rows
        return host_position(index, self._hosts, self._global)

    def row_position(self, index: int) -> int:
        """The parent's index of the row element ``index`` holds (padding holds the last)."""
        return min(self.position(index), self._total - 1)

    def __str__(self) -> str:
        return f"HostSliceDataset(host={self._hosts.index}/{self._hosts.count}, global_batch={self._global})"


class HostSliceIterDataset(grain.IterDataset):
    """Streaming mode: every host reads the stream and keeps its part of each global batch."""

    def __init__(
        self,
        parent: grain.IterDataset,
        hosts: Hosts,
        global_batch_size: int,
        *,
        pad_last: bool,
        share_last: bool = False,
    ):
        super().__init__(parent)
        if pad_last and share_last:
            raise ValueError("A last partial global batch is padded or shared, not both.")
        self._hosts = hosts
        self._global = global_batch_size
        self._pad_last = pad_last
        self._share_last = share_last

    def __iter__(self) -> _HostSliceIterator:
        return _HostSliceIterator(
            self._parent.__iter__(), self._hosts, self._global, self._pad_last, self._share_last
        )

    def __str__(self) -> str:
        return f"HostSliceIterDataset(host={self._hosts.index}/{self._hosts.count}, global_batch={self._global})"


class _HostSliceIterator(grain.DatasetIterator):
    """Reads one global batch at a time and serves this host's slots of it.

    A global batch is only served once it is known to be complete (or the stream ended and it
    is padded or shared), so that every host serves the same number of rows (within one, when
    shared). The state is the parent's
    state at the start of the current global batch plus how many rows of it were served.
    """

    def __init__(
        self,
        parent: grain.DatasetIterator,
        hosts: Hosts,
        global_size: int,
        pad_last: bool,
        share_last: bool,
    ):
        super().__init__(parent)
        self._hosts = hosts
        self._local = hosts.split(global_size)
        self._first = hosts.index * self._local
        self._global = global_size
        self._pad_last = pad_last
        self._share_last = share_last
        self._start_state = parent.get_state()
        self._mine: list[Any] = []
        self._served = 0

    def _load_batch(self) -> None:
        """Read the next global batch from the parent and keep this host's slots."""
        self._start_state = self._parent.get_state()
        rows = []
        for _ in range(self._global):
            try:
                rows.append(next(self._parent))
            except StopIteration:
                break
        self._served = 0
        if len(rows) == self._global or (rows and self._local == self._global):
            # A full global batch, or (one host) all the rows there are, the last batch partial.
            mine = rows[self._first : self._first + self._local]
            self._mine = [_masked(r, True) for r in mine] if self._pad_last else mine
        elif rows and self._pad_last:
            mine = [_masked(r, True) for r in rows[self._first : self._first + self._local]]
            mine += [_masked(copy.copy(rows[-1]), False) for _ in range(self._local - len(mine))]
            self._mine = mine
        elif self._share_last:
            start, stop = last_share(len(rows), self._hosts)
            self._mine = rows[start:stop]
        else:
            self._mine = []

    def __next__(self) -> Any:
        if self._served == len(self._mine):
            self._load_batch()
            if not self._mine:
                raise StopIteration
        row = self._mine[self._served]
        self._served += 1
        return row

    def get_state(self) -> dict[str, Any]:
        if self._served == len(self._mine):  # between global batches: the parent's state is exact
            return {START: self._parent.get_state(), SERVED: 0}
        return {START: self._start_state, SERVED: self._served}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state[START])
        self._mine, self._served = [], 0
        if state[SERVED]:
            self._load_batch()
            self._served = state[SERVED]
