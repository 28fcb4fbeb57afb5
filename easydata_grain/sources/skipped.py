"""Rows left out by ``on_bad_row="skip"``: a placeholder that keeps every row's address."""

from __future__ import annotations

from typing import Any, NamedTuple


class SkippedRow(NamedTuple):
    """A row that ``on_bad_row="skip"`` left out, standing where the row would be.

    Sources yield it in place of the bad row from ``rows_with_gaps`` and ``read_block``, so that
    row ``r`` is always the ``r``-th item: addresses never shift. ``open_shard_at_row`` leaves
    it out, and the loader drops it before the transforms (see ``is_skipped``).
    """

    path: str
    row: int
    line: int | None
    """The 1-based line in a JSON Lines file; None for an element of a JSON array."""

    def where(self) -> str:
        """The row's place, in words."""
        line = f"line {self.line}, " if self.line is not None else ""
        return f"{self.path} ({line}row {self.row})"


def is_skipped(row: Any) -> bool:
    """Whether ``row`` is a ``SkippedRow`` placeholder rather than a row."""
    return type(row) is SkippedRow
