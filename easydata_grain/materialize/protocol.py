"""``MaterializableRows``: what materialization needs from a pipeline's rows (before batching).

Rows are addressed by position, so a range of positions is an independent work unit: any
process can compute it, in any order, and the output is the same whoever wrote it. An
implementation is picklable (it travels to worker processes and Ray tasks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa


@runtime_checkable
class MaterializableRows(Protocol):
    """A pipeline's rows in order, computed by ranges of positions."""

    def fingerprint(self) -> dict[str, Any]:
        """What decides the rows (sources, transforms, tokenizer content, chat template, order),
        JSON-serializable: the output is valid only for an equal fingerprint."""
        ...

    def num_positions(self) -> int:
        """Positions of the rows (``table`` covers ``[0, num_positions())``)."""
        ...

    def table(self, start: int, stop: int) -> pa.Table:
        """The rows of positions ``[start, stop)``, in order, as an Arrow table (a filter may
        leave fewer rows than positions)."""
        ...
