"""Rows -> a batch: a dict of numpy arrays (text stays text), ragged fields padded with a mask."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np
import pyarrow as pa

from easydata_grain.batch_format import Column, Ragged, column_kind
from easydata_grain.io.errors import CollateError


def _ragged_error(field: str, lengths: list[int]) -> CollateError:
    return CollateError(
        f"Field {field!r} is ragged in this batch (lengths {min(lengths)}..{max(lengths)}): it "
        "cannot become one array. Pass pad=True (or pad={field: length}) to pad it with a mask, "
        "or pack/truncate it in a transform first."
    )


def _not_paddable(field: str, holds: str) -> CollateError:
    return CollateError(
        f"pad names field {field!r}, which holds {holds}: only list fields (1-d sequences of "
        "numbers) can be padded. Remove it from pad."
    )


def _leaf_names(row: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The names of a row's fields, nested ones as ``outer.inner``."""
    names = []
    for key, value in row.items():
        if isinstance(value, Mapping):
            names += _leaf_names(value, f"{prefix}{key}.")
        else:
            names.append(prefix + key)
    return names


@dataclasses.dataclass(frozen=True)
class Collate:
    """Stacks dict rows into a batch: numbers and equal-shape arrays become numpy arrays.

    Strings become a list of ``str`` (never object arrays) and nested dicts are collated field
    by field (``"outer.inner"`` names a nested field). A list field (each row a 1-d sequence of
    numbers, such as token ids) is stacked when its rows are equally long and raises a clear
    error when they are not, unless it is padded:

    - ``pad=True`` pads every list field to the longest row in the batch;
    - ``pad={"input_ids": 512}`` pads the named fields to that length (a longer row is an
      error; a name that is not a list field of the batch is an error too).

    A padded field ``f`` always comes with ``f_mask`` (True where there is data), in every
    batch, even one whose rows happen to be equally long (its mask is then all True): with
    padding on, every batch has the same keys and dtypes (and, with fixed lengths, shapes), as
    ``jax.jit`` needs. Text, numbers and arrays of other shapes are never padded.
    """

    pad: bool | Mapping[str, int] = False
    pad_value: int | float | Mapping[str, int | float] = 0
    """The value padding is filled with; a mapping gives it per field (``{"input_ids":
    pad_token_id}``), 0 for the fields it does not name."""

    def __post_init__(self) -> None:
        if not isinstance(self.pad, bool | Mapping):
            raise TypeError(f"pad must be a bool or a mapping of field -> length, got {self.pad!r}")
        if isinstance(self.pad, Mapping) and not all(
            isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in self.pad.items()
        ):
            raise ValueError(f"pad must map field names to positive lengths, got {self.pad!r}")
        values = (
            self.pad_value.values() if isinstance(self.pad_value, Mapping) else [self.pad_value]
        )
        if any(isinstance(v, bool) or not isinstance(v, Number) for v in values):
            raise TypeError(
                "pad_value must be a number or a mapping of field -> number, got "
                f"{self.pad_value!r}"
            )

    def __call__(self, rows: Sequence[Any]) -> Any:
        """Collate ``rows`` (a list of dicts) into one batch."""
        if not rows:
            raise CollateError("Cannot collate an empty batch.")
        plain = not isinstance(rows[0], Mapping)
        if isinstance(self.pad, Mapping):
            self._check_pad_names(["value"] if plain else _leaf_names(rows[0]))
        return self._field("value", rows) if plain else self._mapping("", rows)

    @staticmethod
    def supports(schema: pa.Schema | None) -> bool:
        """Whether ``columns`` can collate batches gathered from tables of this schema: text,
        number and numeric-list columns (not structs, binary, dates or nested lists)."""
        return bool(schema) and all(column_kind(field.type) for field in schema)

    def columns(self, columns: dict[str, Column]) -> dict[str, Any]:
        """Collate a batch gathered column by column (``graph.columns.gather``): the batch
        that calling on the same rows as dicts returns, without making them."""
        if isinstance(self.pad, Mapping):
            self._check_pad_names(list(columns))
        batch: dict[str, Any] = {}
        for name, column in columns.items():
            if not isinstance(column, Ragged):
                if self._pad_length(name) is not None:
                    raise _not_paddable(name, "text" if isinstance(column, list) else "numbers")
                batch[name] = column
                continue
            if column.matrix is not None:
                stacked = self._pad_matrix(name, column.matrix, column.lengths)
            else:
                stacked = self._pad(name, column.values, column.lengths)
            if isinstance(stacked, tuple):
                batch[name], batch[f"{name}_mask"] = stacked
            else:
                batch[name] = stacked
        return batch

    def _pad_length(self, field: str) -> int | None:
        """The fixed length ``pad`` gives ``field``, if any."""
        return self.pad.get(field) if isinstance(self.pad, Mapping) else None

    def _pads(self, field: str) -> bool:
        """Whether the list field ``field`` is padded (and masked)."""
        return self.pad is True or self._pad_length(field) is not None

    def _check_pad_names(self, fields: list[str]) -> None:
        """Raise a CollateError when the ``pad`` mapping names a field not in ``fields``."""
        unknown = sorted(set(self.pad) - set(fields))
        if unknown:
            raise CollateError(
                f"pad names {unknown}, not fields of this batch: its fields are "
                f"{sorted(fields)}. Pad only fields the rows have (nested ones as 'outer.inner')."
            )

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
        fixed = self._pad_length(field)
        if isinstance(first, str):
            if not all(isinstance(v, str) for v in values):
                raise CollateError(f"Field {field!r} mixes text with other values in one batch.")
            if fixed is not None:
                raise _not_paddable(field, "text")
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
        if not isinstance(first, np.ndarray | list | tuple):
            scalars = np.asarray(values)
            if scalars.dtype == object:
                raise CollateError(
                    f"Field {field!r} holds values numpy cannot type ({type(first).__name__})."
                )
            if fixed is not None:
                raise _not_paddable(field, "numbers")
            return scalars
        arrays = values if all_arrays else [np.asarray(v) for v in values]
        if arrays[0].dtype == object or (not all_arrays and any(a.dtype == object for a in arrays)):
            raise CollateError(
                f"Field {field!r} holds values numpy cannot type ({type(first).__name__})."
            )
        not_1d = next((a for a in arrays if a.ndim != 1), None)
        if not_1d is not None and fixed is not None:
            raise _not_paddable(field, f"{not_1d.ndim}-d arrays")
        shape = arrays[0].shape
        if not (not_1d is None and self._pads(field)) and all(a.shape == shape for a in arrays):
            return np.stack(arrays)
        if not_1d is not None:
            raise _ragged_error(field, [a.size for a in arrays])
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        # Empty Python lists become float64 arrays: the other rows alone give the dtype.
        return self._pad(field, np.concatenate([a for a in arrays if a.size] or arrays), lengths)

    def _pad(
        self, field: str, values: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Rows of ``lengths`` (concatenated in ``values``) as one array: padded with a mask
        when the field is padded, else stacked (equal lengths) or a ragged error."""
        longest = int(lengths.max())
        if not self._pads(field):
            if longest != int(lengths.min()):
                raise _ragged_error(field, lengths.tolist())
            return np.array(values.reshape(len(lengths), longest))
        width = self._pad_width(field, longest)
        mask = np.arange(width) < lengths[:, None]
        padded = np.full((len(lengths), width), self._fill(field, values.dtype))
        padded[mask] = values
        return padded, mask

    def _pad_matrix(
        self, field: str, matrix: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``_pad`` of rows held in a matrix as wide as the longest, zeros past each row's
        length (``Ragged.matrix``, a fresh array this batch owns): the same array and mask."""
        longest = matrix.shape[1]
        if not self._pads(field):
            if longest != int(lengths.min()):
                raise _ragged_error(field, lengths.tolist())
            return matrix
        width = self._pad_width(field, longest)
        fill = self._fill(field, matrix.dtype)
        if width > longest:
            padded = np.zeros((len(lengths), width), dtype=matrix.dtype)
            padded[:, :longest] = matrix
        else:
            padded = matrix
        mask = np.arange(width) < lengths[:, None]
        if fill.tobytes() != bytes(fill.itemsize):  # zeros are there already
            padded[~mask] = fill
        return padded, mask

    def _pad_width(self, field: str, longest: int) -> int:
        """The width a padded field's rows get: its pad length, else the longest row."""
        width = self._pad_length(field) or longest
        if longest > width:
            raise CollateError(
                f"Field {field!r} has a row of length {longest}, longer than its pad length "
                f"{width}: raise the length or truncate in a transform."
            )
        return width

    def _fill(self, field: str, dtype: np.dtype) -> np.ndarray:
        """``pad_value`` as a 0-d array of ``dtype`` (a CollateError when it does not fit)."""
        value = (
            self.pad_value.get(field, 0) if isinstance(self.pad_value, Mapping) else self.pad_value
        )
        try:
            return np.full((), value, dtype=dtype)
        except OverflowError:
            raise CollateError(
                f"pad_value {value!r} does not fit field {field!r} ({dtype}): "
                "choose a pad_value its type can hold."
            ) from None
