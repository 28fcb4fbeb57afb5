"""Mixing in indexed mode: several endless component datasets as one ``MapDataset``.

Element ``p`` is row ``q`` of component ``c`` where ``(c, q) = MixtureOrder.locate(p)``: a pure
function of the position, so the state is the position and resume is O(1), exact and elastic.
Each component is an ``IndexedSourceDataset`` over its own epochs (``num_epochs=None``), so a
component that runs out continues with its next epoch in its own order.

How long the mixture is depends on the stop strategy and ``num_epochs`` (``E``), counting only
the components that are ever chosen (a weight > 0 at some step): ``restart``: endless when
``E`` is None, else ``E`` times their rows together (so the pass is as long as reading each
``E`` times, in the weights' proportions); ``first_exhausted``: up to the first position that
would need a row past a component's ``E`` epochs; ``all_exhausted``: up to the position that
gives the last component its last row of ``E`` epochs (the others restarting meanwhile).
A finite ``restart`` pass reads ``pass_order``: each pass holds exactly its rounded share of
every component (with weights proportional to their rows, each row once per epoch).
``MixedMapDataset.from_datasets`` mixes plain Grain datasets the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import grain
import numpy as np
import pyarrow as pa

from easydata_grain.batch_format import Column, ColumnarRows, Ragged
from easydata_grain.graph.columns import gather
from easydata_grain.io.errors import MalformedRowError
from easydata_grain.mix_order import MixtureOrder
from easydata_grain.mix_schedule import ScheduleType, schedule_from

_CACHED_UNIT_COLUMNS = 2
# A span whose list columns, padded, would take more than this is not gathered at once: from
# then on the dataset gathers block by block (long token rows; the order is the same).
_SPAN_COLUMN_BYTES = 32 << 20
# What _unit_columns answers when a span is too large (the dataset now gathers blocks).
_TOO_LARGE: Any = object()

StopStrategy = Literal["restart", "first_exhausted", "all_exhausted"]
STOP_STRATEGIES = ("restart", "first_exhausted", "all_exhausted")


def mixture_length(
    order: MixtureOrder,
    rows_per_epoch: Sequence[int],
    stop_strategy: StopStrategy,
    num_epochs: int | None,
    names: Sequence[str],
) -> int | None:
    """Positions in one pass of the mixture (None: endless); raises for a mixture that could
    never stop or never start. Components that are never chosen (weight 0 throughout) take no
    part: they count for no stop strategy."""
    if stop_strategy not in STOP_STRATEGIES:
        raise ValueError(f"stop_strategy must be one of {STOP_STRATEGIES}, got {stop_strategy!r}")
    if num_epochs is not None and (isinstance(num_epochs, bool) or num_epochs < 1):
        raise ValueError(f"num_epochs must be None or an int >= 1, got {num_epochs!r}")
    chosen = [c for c in range(len(names)) if order.position_of(c, 0) is not None]
    for c in chosen:
        if rows_per_epoch[c] == 0 and stop_strategy != "first_exhausted":
            raise ValueError(
                f"The component {names[c]!r} has no rows but a weight > 0: under "
                f"stop_strategy={stop_strategy!r} it would be asked for rows it cannot give. "
                "Give it weight 0 or data."
            )
    if stop_strategy == "restart":
        return None if num_epochs is None else num_epochs * sum(rows_per_epoch[c] for c in chosen)
    if num_epochs is None:
        raise ValueError(
            f"stop_strategy={stop_strategy!r} with num_epochs=None would never stop: components "
            "repeat forever. Use stop_strategy='restart' for an endless mixture."
        )
    ends = [num_epochs * rows_per_epoch[c] for c in range(len(names))]
    if stop_strategy == "first_exhausted":
        # The first position that asks a component for a row past its epochs.
        found = [order.position_of(c, ends[c]) for c in chosen]
        length = min(p for p in found if p is not None)
    else:
        # One past the position that gives the last component its last row.
        lasts = {c: order.position_of(c, ends[c] - 1) for c in chosen}
        never = [names[c] for c, p in lasts.items() if p is None]
        if never:
            raise ValueError(
                f"Components {never} stop being chosen (weight 0 from some step on) before "
                "all their rows are read: under stop_strategy='all_exhausted' the mixture "
                "would never end. Keep their weight > 0, or use first_exhausted or restart."
            )
        length = max(p + 1 for p in lasts.values())
    if length == 0:
        raise ValueError(
            "The mixture has no rows: a component with a weight is empty "
            "(stop_strategy='first_exhausted' stops before its first row)."
        )
    return length


def pass_order(
    order: MixtureOrder, stop_strategy: StopStrategy, length: int | None
) -> MixtureOrder:
    """The order passes of ``length`` positions read: under ``restart`` with a finite pass,
    ``order`` with pass ends (``MixtureOrder.with_passes``), so each pass holds exactly its
    rounded share of each component; otherwise ``order`` (its passes end where it says)."""
    if stop_strategy == "restart" and length:
        return order.with_passes(length)
    return order


def _list_bytes(pieces: Sequence[tuple[dict[str, Column], Any, Any]], rows: int) -> int:
    """About the bytes ``gather`` makes for ``rows`` rows of the pieces' list columns: each
    row as wide as the widest block's padded row (or the block's mean row without a matrix)."""
    total = 0
    for name, column in pieces[0][0].items():
        if isinstance(column, Ragged):
            widest = 0.0
            for columns, _, _ in pieces:
                lists = columns[name]
                matrix = lists.row_matrix()
                widest = max(
                    widest,
                    matrix.shape[1] * matrix.itemsize
                    if matrix is not None
                    else lists.values.nbytes / len(lists.lengths),
                )
            total += int(widest * rows)
    return total


class MixedMapDataset(grain.MapDataset):
    """Components mixed by a ``MixtureOrder`` (see the module docstring).

    ``length`` is the mixture's positions per pass (None: endless); ``offset`` the position of
    element 0 (a later pass starts where the previous one ended). With ``source_field``, each row
    gets its component's name under that field (a copy; rows are not changed otherwise).
    """

    def __init__(
        self,
        components: Sequence[grain.MapDataset],
        order: MixtureOrder,
        *,
        length: int | None,
        names: Sequence[str],
        offset: int = 0,
        source_field: str | None = None,
    ):
        super().__init__(list(components))
        self._components = list(components)
        self.order = order
        self._length = length
        self._names = list(names)
        self._offset = offset
        self._source_field = source_field
        self._columns: dict[tuple[int, int], dict[str, Column]] = {}
        self._gather_spans = True

    @classmethod
    def from_datasets(
        cls,
        datasets: Mapping[str, grain.MapDataset] | Sequence[grain.MapDataset],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        *,
        block_size: int = 1000,
        seed: int = 0,
        stop_strategy: StopStrategy = "restart",
        num_epochs: int | None = 1,
        global_batch_size: int = 1,
        weight_schedule: Sequence[tuple[int, Mapping[str, float]]] | None = None,
        weight_schedule_type: ScheduleType = "step",
        source_field: str | None = None,
        rows_per_epoch: Sequence[int] | None = None,
    ) -> MixedMapDataset:
        """Grain datasets (a dict by name, or a list named ``dataset_{i}``) mixed by weight.

        Without ``rows_per_epoch`` each dataset is finite, one epoch long, and is repeated
        (``MapDataset.repeat``: a shuffled one reshuffles every epoch); with it, the datasets
        are endless already (element ``e * rows + i`` is row ``i`` of epoch ``e``).
        ``num_epochs`` and ``stop_strategy`` give the length (module docstring); each step of
        a ``weight_schedule`` is ``global_batch_size`` positions."""
        named = (
            dict(datasets)
            if isinstance(datasets, Mapping)
            else {f"dataset_{i}": d for i, d in enumerate(datasets)}
        )
        names = list(named)
        order = MixtureOrder(
            schedule_from(names, weights, weight_schedule, weight_schedule_type),
            block_size=block_size,
            global_batch_size=global_batch_size,
            seed=seed,
        )
        if rows_per_epoch is None:
            sizes = [len(d) for d in named.values()]
            datasets = [d.repeat() if n else d for d, n in zip(named.values(), sizes, strict=True)]
        else:
            if len(rows_per_epoch) != len(named):
                raise ValueError(f"{len(rows_per_epoch)} rows_per_epoch for {len(named)} datasets")
            sizes, datasets = list(rows_per_epoch), list(named.values())
        length = mixture_length(order, sizes, stop_strategy, num_epochs, names)
        return cls(
            datasets,
            pass_order(order, stop_strategy, length),
            length=length,
            names=names,
            source_field=source_field,
        )

    def __len__(self) -> int:
        return sys.maxsize if self._length is None else self._length

    def _label(self, row: Any, component: int) -> Any:
        if self._source_field is None:
            return row
        if self._source_field in row:
            raise self._field_taken(f"a row of {self._names[component]!r} has it")
        return {**row, self._source_field: self._names[component]}

    def _field_taken(self, where: str) -> MalformedRowError:
        """The error for a source field the rows already have (never overwritten)."""
        return MalformedRowError(
            f"The mixture's source field {self._source_field!r} is a field of the rows ({where}):"
            " labelling them would overwrite it.",
            hint="Name the source field otherwise (source_field=..., mix.add_source_field: "
            "...), or rename the rows' field first.",
        )

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        component, row = self.order.locate(self._offset + index)
        return self._label(self._components[component][row], component)

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        """Many rows at once: one bulk request per component."""
        positions = np.asarray(indices, dtype=np.int64) + self._offset
        components, rows = self.order.locate_many(positions)
        out: list[Any] = [None] * len(positions)
        for c in np.unique(components):
            where = np.flatnonzero(components == c)
            dataset = self._components[int(c)]
            got = dataset._getitems(rows[where].tolist())
            for i, row in zip(where.tolist(), got, strict=True):
                out[i] = self._label(row, int(c))
        return out

    @property
    def table_schema(self) -> pa.Schema | None:
        """The components' common row schema (with the source field), when every component
        gathers columns; None otherwise (batches are then collated from rows)."""
        schemas = [
            c.table_schema if isinstance(c, ColumnarRows) else None for c in self._components
        ]
        if schemas[0] is None or not all(s is not None and s.equals(schemas[0]) for s in schemas):
            return None
        if self._source_field is not None:
            if self._source_field in schemas[0].names:
                raise self._field_taken("a column of the sources")
            return schemas[0].append(pa.field(self._source_field, pa.string()))
        return schemas[0]

    def _gather_columns(self, indices: Sequence[int]) -> dict[str, Column] | None:
        """The rows at ``indices`` column by column, sliced from whole spans of mixing blocks
        (``MixtureOrder.span``) gathered once: a span's few large pieces gathered once and
        sliced per batch cost less than many small ones gathered per batch or per block.
        Rows too large for that (``_SPAN_COLUMN_BYTES``) are gathered block by block."""
        columns = self._gather_units(indices)
        if columns is _TOO_LARGE:  # now block by block
            columns = self._gather_units(indices)
        return columns

    def _gather_units(self, indices: Sequence[int]) -> dict[str, Column] | None:
        """``_gather_columns`` from the units (spans, or blocks) the dataset gathers now."""
        blocks = self.order.span_blocks if self._gather_spans else 1
        size = blocks * self.order.block_size
        if isinstance(indices, range) and indices.step == 1 and len(indices):
            first = indices.start + self._offset
            unit = first // size
            if (indices.stop - 1 + self._offset) // size == unit:  # a batch inside one unit
                columns = self._unit_columns(blocks, unit)
                if columns is None or columns is _TOO_LARGE:
                    return columns
                slots = np.arange(len(indices))
                return gather([(columns, slots, slots + (first - unit * size))], len(slots))
        positions = np.asarray(indices, dtype=np.int64) + self._offset
        units = positions // size
        pieces = []
        for unit in np.unique(units).tolist():
            columns = self._unit_columns(blocks, unit)
            if columns is None or columns is _TOO_LARGE:
                return columns
            where = np.flatnonzero(units == unit)
            pieces.append((columns, where, positions[where] - unit * size))
        return gather(pieces, len(positions))

    def _unit_columns(self, blocks: int, unit: int) -> dict[str, Column] | None:
        """Span ``unit`` (``blocks > 1``: ``blocks`` blocks) or block ``unit`` as columns: each
        component's rows (consecutive in its own order) gathered from its blocks into the
        positions they take; None when a block has no columns to gather; ``_TOO_LARGE`` when
        a span's would take more than ``_SPAN_COLUMN_BYTES``."""
        cached = self._columns.get((blocks, unit))
        if cached is not None:
            return cached
        found = self.order.span(unit) if blocks > 1 else self.order.block(unit)
        first_position = unit * blocks * self.order.block_size
        # Positions past the pass's end are not gathered (their rows may never be read).
        size = len(found.components)
        if self._length is not None:
            size = max(0, min(size, self._offset + self._length - first_position))
        taken = found.sizes
        if size < len(found.components):
            taken = self.order.counts_before(first_position + size) - found.before
        pieces = []
        start = 0
        for c, (first, count, total) in enumerate(
            zip(found.before.tolist(), taken.tolist(), found.sizes.tolist(), strict=True)
        ):
            places = found.places[start : start + count]
            start += total
            for source_block, slots, offsets in self._components[c]._pieces(
                range(first, first + count)
            ):
                if source_block.columns is None:
                    return None
                pieces.append((source_block.columns, places[slots], offsets))
        if blocks > 1 and _list_bytes(pieces, size) > _SPAN_COLUMN_BYTES:
            self._gather_spans = False
            return _TOO_LARGE
        columns = gather(pieces, size)
        if self._source_field is not None:
            components = found.components[:size].tolist()
            columns[self._source_field] = [self._names[c] for c in components]
        # Copy on write: readers in other threads never see a dict being changed.
        kept = list(self._columns.items())[1 - _CACHED_UNIT_COLUMNS :]
        self._columns = {**dict(kept), (blocks, unit): columns}
        return columns

    def realized(self, position: int) -> dict[str, tuple[int, float]]:
        """Each component's rows in this pass's positions ``[0, position)``, next to its
        target (the weights' rows there, before rounding)."""
        start, stop = self._offset, self._offset + position
        counts = self.order.counts_before(stop) - self.order.counts_before(start)
        targets = self.order.target.at(stop) - self.order.target.at(start)
        return {
            name: (int(n), float(t))
            for name, n, t in zip(self._names, counts.tolist(), targets.tolist(), strict=True)
        }

    def __str__(self) -> str:
        return f"MixedMapDataset({len(self._components)} components, offset={self._offset})"
