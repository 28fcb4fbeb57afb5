"""Errors of the loader's row ops that name the bad row's source shard and row.

In indexed mode the row ops of ``AsyncDataLoader(transforms=[...])`` run on a Grain
``MapDataset`` whose element ``i`` has a source address (``row_address``). When an op fails on
an element, ``NamedRowErrorsDataset`` (after the row ops) re-raises the error as
``io.errors.error_at`` builds it, exactly as ``TransformedShardedSource`` does: a
``SourceError`` keeps its class, any other error becomes a ``MalformedRowError``, the message
starts with the shard and row, ``path`` and ``row`` are set, and the original error is the
cause. A ``ChunkedMapDataset`` (a batched op) names the row itself: its batched call fails for
the whole chunk, so it finds the failing row with single-row calls (``locate``).

An error that already names a file (a read error, a ``TransformedShardedSource``'s) passes
unchanged, and so does one whose element has no address here (a mixture).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grain

from easydata_grain.io.errors import SourceError, error_at

Locate = Callable[[int], "tuple[str, int] | None"]
"""An element index -> its ``(shard name, row)``, or None when unknown."""


def raise_named(error: Exception, address: tuple[str, int] | None) -> NoReturn:
    """Raise ``error`` naming ``address`` (``error_at``, from ``error``); ``error`` itself
    when it names a file already or the address is unknown."""
    if address is None or (isinstance(error, SourceError) and error.path is not None):
        raise error
    raise error_at(error, *address) from error


class NamedRowErrorsDataset(grain.MapDataset):
    """The parent's elements; an error raised for element ``i`` names ``locate(i)``."""

    def __init__(self, parent: grain.MapDataset, locate: Locate):
        super().__init__(parent)
        self._locate = locate

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        try:
            return self._parent[index]
        except Exception as error:
            raise_named(error, self._locate(index))

    def _getitems(self, indices: Sequence[int]) -> list[Any]:
        try:
            return self._parent._getitems(indices)
        except Exception:
            for index in indices:  # which element fails (the first, in the batch's order)
                self[index]
            raise

    def __str__(self) -> str:
        return "NamedRowErrorsDataset"
