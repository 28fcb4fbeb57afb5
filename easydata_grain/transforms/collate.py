"""Rows -> a batch: a dict of numpy arrays (text stays text), ragged fields padded with a mask."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np
import pyarrow as pa

from easydata_grain.graph.columns import Column, Ragged, column_kind


class CollateError(ValueError):
    """Rows that cannot be stacked into one batch; the message names the field and the fix."""


def _ragged_error(field: str, lengths: list[int]) -> CollateError:
    return CollateError(
        f"Field {field!r} is ragged in this batch (lengths {min(lengths)}..{max(lengths)}): it "
        "cannot become one array. Pass pad=True (or pad={field: length}) to pad it with a mask, "
        "or pack/truncate it in a transform first."
    )


@dataclasses.dataclass(frozen=True)
class Collate:
    """Stacks dict rows into a batch: numbers and equal-shape arrays become numpy arrays.

    Strings become a list of ``str`` (never object arrays) and nested dicts are collated field
    by field. A ragged numeric field (token-id lists of different lengths) raises a clear
    error unless padding is asked for: ``pad=True`` pads every ragged field to the longest in
    the batch, ``pad={"input_ids": 512}`` pads the named fields to a fixed length (a longer row
    is an error). A padded field ``f`` comes with ``f_mask`` (True where there is data).
    """

    pad: bool | Mapping[str, int] = False
    pad_value: int | float = 0

    def __post_init__(self) -> None:
        if not isinstance(self.pad, bool | Mapping):
            raise TypeError(f"pad must be a bool or a mapping of field -> length, got {self.pad!r}")
        if isinstance(self.pad, Mapping) and not all(
            isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in self.pad.items()
        ):
            raise ValueError(f"pad must map field names to positive lengths, got {self.pad!r}")
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, Number):
            raise TypeError(f"pad_value must be a number, got {self.pad_value!r}")

    def __call__(self, rows: Sequence[Any]) -> Any:
        """Collate ``rows`` (a list of dicts) into one batch."""
        if not rows:
            raise CollateError("Cannot collate an empty batch.")
        if not isinstance(rows[0], Mapping):
            return self._field("value", rows)
        return self._mapping("", rows)

    @staticmethod
    def supports(schema: pa.Schema | None) -> bool:
        """Whether ``columns`` can collate batches gathered from tables of this schema: text,
        number and numeric-list columns (not structs, binary, dates or nested lists)."""
        return bool(schema) and all(column_kind(field.type) for field in schema)

    def columns(self, columns: dict[str, Column]) -> dict[str, Any]:
        """Collate a batch gathered column by column (``graph.columns.gather``): the batch
        that calling on the same rows as dicts returns, without making them."""
        batch: dict[str, Any] = {}
        for name, column in columns.items():
            if not isinstance(column, Ragged):
                batch[name] = column
                continue
            stacked = self._pad(name, column.values, column.lengths)
            if isinstance(stacked, tuple):
                batch[name], batch[f"{name}_mask"] = stacked
            else:
                batch[name] = stacked
        return batch

    def _mapping(self, prefix: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        keys = list(rows[0].keys())
        width = len(keys)
        # Same length and every key of the first row present (checked by the lookups below)
        # means the same fields; the slow check only runs to explain a mismatch.
        if not all(type(row) is dict and len(row) == width for row in rows):
            self._explain_fields(prefix, rows, keys)
        columns: dict[str, list[Any]] = {}
        try:
            for key in keys:
                columns[key] = [row[key] for row in rows]
        except KeyError:
            self._explain_fields(prefix, rows, keys)
        batch: dict[str, Any] = {}
        for key, values in columns.items():
            batch[key] = self._field(prefix + key, values)
            if isinstance(batch[key], tuple):
                batch[key], batch[f"{key}_mask"] = batch[key]
        return batch

    @staticmethod
    def _explain_fields(prefix: str, rows: Sequence[Any], keys: list[str]) -> None:
        """Raise a CollateError naming the first row whose fields differ from the first row's."""
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping) or set(row) != set(keys):
                got = sorted(row) if isinstance(row, Mapping) else type(row).__name__
                raise CollateError(
                    f"Row {index} of the batch has fields {got}, the first row {sorted(keys)}"
                    f"{' under ' + repr(prefix[:-1]) if prefix else ''}: every row of a batch "
                    "needs the same fields."
                )

    def _field(self, field: str, values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, str):
            if not all(isinstance(v, str) for v in values):
                raise CollateError(f"Field {field!r} mixes text with other values in one batch.")
            return values
        if isinstance(first, Mapping):
            return self._mapping(field + ".", values)
        all_arrays = all(type(v) is np.ndarray for v in values)
        if not all_arrays and any(v is None for v in values):
            index = next(i for i, v in enumerate(values) if v is None)
            raise CollateError(
                f"Field {field!r} is None in row {index} of the batch: fill it or filter such "
                "rows out before batching."
            )
        fixed = self.pad.get(field) if isinstance(self.pad, Mapping) else None
        if not isinstance(first, np.ndarray | list | tuple):
            scalars = np.asarray(values)
            if scalars.dtype == object:
                raise CollateError(
                    f"Field {field!r} holds values numpy cannot type ({type(first).__name__})."
                )
            return scalars
        arrays = values if all_arrays else [np.asarray(v) for v in values]
        if arrays[0].dtype == object or (not all_arrays and any(a.dtype == object for a in arrays)):
            raise CollateError(
                f"Field {field!r} holds values numpy cannot type ({type(first).__name__})."
            )
        shape = arrays[0].shape
        if fixed is None and all(a.shape == shape for a in arrays):
            return np.stack(arrays)
        if any(a.ndim != 1 for a in arrays):
            raise _ragged_error(field, [a.size for a in arrays])
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        return self._pad(field, np.concatenate(arrays), lengths)

    def _pad(
        self, field: str, values: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Rows of ``lengths`` (concatenated in ``values``) as one array: stacked when they
        are equal and no pad length is set, else padded with a mask, or a ragged error."""
        fixed = self.pad.get(field) if isinstance(self.pad, Mapping) else None
        longest = int(lengths.max())
        if fixed is None and longest == int(lengths.min()):
            return np.array(values.reshape(len(lengths), longest))
        if fixed is None and self.pad is not True:
            raise _ragged_error(field, lengths.tolist())
        width = fixed if fixed is not None else longest
        if longest > width:
            raise CollateError(
                f"Field {field!r} has a row of length {longest}, longer than its pad length "
                f"{width}: raise the length or truncate in a transform."
            )
        mask = np.arange(width) < lengths[:, None]
        try:
            padded = np.full((len(lengths), width), self.pad_value, dtype=values.dtype)
        except OverflowError:
            raise CollateError(
                f"pad_value {self.pad_value!r} does not fit field {field!r} ({values.dtype}): "
                "choose a pad_value its type can hold."
            ) from None
        padded[mask] = values
        return padded, mask
