"""Transforms in sequence: ``a >> b >> c``.

``chain`` flattens its operations into ``steps``. When every step is a Grain ``Map`` the result
is a ``MapChain``, itself a Grain ``Map`` (it goes anywhere a map goes, and its ``map_batch``
runs batched steps such as ``TokenizeTransform`` on whole lists). A chain holding a filter is
a ``Chain``: not a Grain operation (a filter changes the row count, a map cannot); the loader
(``AsyncDataLoader(transforms=...)``) and ``TransformedShardedSource`` take either, as its
``steps`` (``flatten_transforms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain

from easydata_grain.fingerprint import describe
from easydata_grain.op_protocols import BatchMap, FieldTransform
from easydata_grain.transforms.base import RowTransform
from easydata_grain.transforms.functions import MapFunction
from easydata_grain.transforms.tokenize import after_chat_template
from easydata_grain.types import Row, map_row, mapped_row

Step = grain.transforms.Map | grain.transforms.Filter
"""One step of a chain: a Grain ``Map`` or ``Filter``."""


def _steps(op: Any) -> list[Step]:
    if isinstance(op, Chain):
        return list(op.steps)
    if isinstance(op, grain.transforms.RandomMap):
        raise TypeError(
            f"{op!r} is a RandomMap: it needs the loader's per-row seeds, so it cannot be "
            "chained. Pass it in AsyncDataLoader(transforms=[...]) after the chain's steps."
        )
    if isinstance(op, grain.transforms.Map | grain.transforms.Filter):
        return [op]
    if isinstance(op, Sequence) and not isinstance(op, str):
        return [step for item in op for step in _steps(item)]
    if callable(op):
        return [MapFunction(op)]
    raise TypeError(
        f"Cannot chain {op!r}: give Grain Map/Filter operations, functions (maps) or chains."
    )


def chain(*ops: Any) -> Chain:
    """The operations in order, flattened: a ``MapChain`` when all are maps, else a ``Chain``."""
    steps = tuple(after_chat_template([step for op in ops for step in _steps(op)]))
    if not steps:
        raise ValueError("A chain needs at least one operation.")
    if all(isinstance(step, grain.transforms.Map) for step in steps):
        return MapChain(steps)
    return Chain(steps)


def flatten_transforms(transforms: Any) -> list[Any]:
    """A loader's transforms as one flat list: a chain (``a >> b``) becomes its steps, a list or
    tuple (of operations, chains or lists) its items in order, one operation a list of one. As
    in a chain, a ``TokenizeTransform`` reading a ``ChatTemplateTransform``'s text adds no
    special tokens unless told to (``tokenize.after_chat_template``)."""
    return after_chat_template(_flat(transforms))


def _flat(transforms: Any) -> list[Any]:
    if isinstance(transforms, Chain):
        return list(transforms.steps)
    if isinstance(transforms, list | tuple):
        return [step for item in transforms for step in _flat(item)]
    return [transforms]


class Chain(RowTransform):
    """Steps applied in order; a filter that says no drops the row (``apply`` returns None).

    ``reads`` is what the whole chain needs from its input rows, ``writes`` what any step sets
    or removes; ``fields_needed`` walks the steps backwards (a step that declares nothing needs
    every field).
    """

    def __init__(self, steps: Sequence[Step]):
        self.steps: tuple[Step, ...] = tuple(steps)
        for step in self.steps:
            if not isinstance(step, grain.transforms.Map | grain.transforms.Filter):
                raise TypeError(f"A chain's steps are Grain Map/Filter operations, got {step!r}")
        self.reads = self.fields_needed(frozenset())
        writes: frozenset[str] | None = frozenset()
        for step in self.steps:
            step_writes = step.writes if isinstance(step, FieldTransform) else None
            writes = None if writes is None or step_writes is None else writes | step_writes
        self.writes = writes
        self._seal()

    def config(self) -> dict[str, Any]:
        """Each step's fingerprint (or class and settings, for an operation that is not ours)."""
        return {"steps": [describe(step) for step in self.steps]}

    @property
    def is_map(self) -> bool:
        """Whether every step is a map (so the row count is kept)."""
        return all(isinstance(step, grain.transforms.Map) for step in self.steps)

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """The input fields the steps need so that ``downstream`` exists after the last one."""
        needed = downstream
        for step in reversed(self.steps):
            if not isinstance(step, FieldTransform):
                return None
            needed = step.fields_needed(needed)
        return needed

    def apply(self, row: Row) -> Row | None:
        """The row through every step, or None when a filter dropped it."""
        for step in self.steps:
            if isinstance(step, grain.transforms.Filter):
                if not step.filter(row):
                    return None
            else:
                row = map_row(step, row)
        return row

    def __call__(self, row: Row) -> Row | None:
        """``chain(row)``: the same as ``chain.apply(row)`` (None when a filter dropped it)."""
        return self.apply(row)

    def apply_batch(self, rows: Sequence[Row]) -> list[Row | None]:
        """Many rows through every step; batched maps (``map_batch``) get the surviving rows
        in one call. None where a filter dropped the row."""
        out: list[Row | None] = list(rows)
        for step in self.steps:
            alive = [i for i, row in enumerate(out) if row is not None]
            if isinstance(step, grain.transforms.Filter):
                for i in alive:
                    if not step.filter(out[i]):
                        out[i] = None
            elif isinstance(step, BatchMap):
                mapped = step.map_batch([out[i] for i in alive])
                for i, row in zip(alive, mapped, strict=True):
                    out[i] = mapped_row(step, out[i], row)
            else:
                for i in alive:
                    out[i] = map_row(step, out[i])
        return out

    def __repr__(self) -> str:
        return " >> ".join(repr(step) for step in self.steps)


class MapChain(Chain, grain.transforms.Map):
    """A chain of maps only: a Grain ``Map`` (and a ``BatchMap``: batched steps run on lists)."""

    def map(self, element: Row) -> Row:
        """The row through every step."""
        for step in self.steps:
            element = map_row(step, element)
        return element

    def map_batch(self, elements: list[Row]) -> list[Row]:
        """Many rows through every step, batched steps on the whole list."""
        return self.apply_batch(elements)  # type: ignore[return-value]
