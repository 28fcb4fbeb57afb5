"""The filter that drops the placeholders of rows a source left out (``on_bad_row="skip"``)."""

from __future__ import annotations

from typing import Any

import grain

from easydata_grain.sources.skipped import is_skipped


class DropSkippedRows(grain.transforms.Filter):
    """Keeps rows, drops ``SkippedRow`` placeholders.

    A skipping source keeps a placeholder at each bad row's address so that addresses never
    shift; this filter, placed right after the source, removes them before any transform sees
    them. Like any filter it changes the row count, so hosts split after it. It reads and
    writes no field (``FieldTransform``), so a projection passes through it.
    """

    reads: frozenset[str] | None = frozenset()
    writes: frozenset[str] | None = frozenset()

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """What comes after needs: the rows pass unchanged."""
        return downstream

    def filter(self, element: Any) -> bool:
        """True for a row, False for a placeholder."""
        return not is_skipped(element)

    def __repr__(self) -> str:
        return "DropSkippedRows()"
