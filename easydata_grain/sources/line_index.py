"""Seek indexes of JSON files: a vectorised line-offset scan, and their cache on local disk."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from easydata_grain.sources.metadata_cache import write_atomically

logger = logging.getLogger(__name__)
_Index = TypeVar("_Index")

_NEWLINE = 10
_BLANK = b" \t\r"
"""The bytes that may surround a JSON value on its line, besides the newline."""


@dataclasses.dataclass(frozen=True)
class LineIndex:
    """Where each row of a JSON Lines file starts, and which lines are blank.

    Row ``r`` is the ``r``-th line that holds more than whitespace; its bytes are
    ``bounds[r]:bounds[r + 1]`` (any blank lines after it included). Offsets count bytes of
    the decompressed stream.
    """

    bounds: np.ndarray
    """int64 start offset of every row, then the stream's length."""
    blank_rows: np.ndarray
    """For every blank line, the number of rows before it (sorted): it maps rows to lines."""

    @property
    def num_rows(self) -> int:
        """The number of rows."""
        return len(self.bounds) - 1

    def line_number(self, row: int) -> int:
        """The 1-based line number of ``row`` in the file."""
        return row + 1 + int(np.searchsorted(self.blank_rows, row, side="right"))

    def location(self, row: int) -> str:
        """Where a row is, in words."""
        return f"line {self.line_number(row)} (row {row})"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to cache."""
        return {"bounds": self.bounds, "blank_rows": self.blank_rows}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], size: int | None = None) -> LineIndex:
        """The index cached by ``to_arrays``, checked against the stream's length when known.

        Raises ValueError (KeyError for a missing array) for arrays that are not a line index
        of a stream of ``size`` bytes.
        """
        bounds, blank_rows = arrays["bounds"], arrays["blank_rows"]
        if not all(a.dtype == np.int64 and a.ndim == 1 for a in (bounds, blank_rows)):
            raise ValueError("not a line index")
        if size is not None and (not len(bounds) or bounds[-1] != size):
            raise ValueError(f"it does not end at the file's size ({size} bytes)")
        rows = len(bounds) - 1
        if (
            rows < 0
            or bounds[0] < 0
            or np.any(np.diff(bounds) <= 0)
            or np.any(np.diff(blank_rows) < 0)
            or (len(blank_rows) and not 0 <= blank_rows[0] <= blank_rows[-1] <= rows)
        ):
            raise ValueError("its offsets are out of order or out of range")
        return cls(bounds, blank_rows)


@dataclasses.dataclass
class _ScanState:
    """A line scan between two blocks: the unfinished line, the rows so far."""

    line_start: int = 0
    line_has_value: bool = False
    rows: int = 0


def _scan_block(data: bytes, base: int, state: _ScanState) -> tuple[np.ndarray, np.ndarray]:
    """The row starts and blank lines of the lines that end in ``data`` (at offset ``base``)."""
    array = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(array == _NEWLINE)
    if not len(newlines):
        state.line_has_value = state.line_has_value or bool(data.strip(_BLANK))
        return np.empty(0, np.int64), np.empty(0, np.int64)
    inner_starts = newlines[:-1] + 1
    lengths = newlines[1:] - inner_starts
    first_bytes = array[inner_starts]
    blank_first = (first_bytes == 32) | (first_bytes == 9) | (first_bytes == 13)
    has_value = (lengths > 0) & ~blank_first
    # A line that starts with a space may still hold a value: those few are checked one by one.
    for i in np.flatnonzero((lengths > 0) & blank_first).tolist():
        has_value[i] = bool(data[inner_starts[i] : newlines[i + 1]].strip(_BLANK))
    first_has_value = state.line_has_value or bool(data[: newlines[0]].strip(_BLANK))
    starts = np.concatenate([[state.line_start], base + inner_starts]).astype(np.int64)
    has_value = np.concatenate([[first_has_value], has_value])
    blank_rows = state.rows + np.cumsum(has_value)[~has_value]
    state.rows += int(has_value.sum())
    state.line_start = base + int(newlines[-1]) + 1
    state.line_has_value = bool(data[newlines[-1] + 1 :].strip(_BLANK))
    return starts[has_value], blank_rows


def scan_lines(blocks: Iterable[bytes]) -> LineIndex:
    """Build the line index of a JSON Lines stream in one pass over its blocks (any sizes)."""
    state = _ScanState()
    starts: list[np.ndarray] = []
    blanks: list[np.ndarray] = []
    size = 0
    for data in blocks:
        block_starts, block_blanks = _scan_block(data, size, state)
        starts.append(block_starts)
        blanks.append(block_blanks)
        size += len(data)
    if state.line_has_value:
        starts.append(np.array([state.line_start], np.int64))
    starts.append(np.array([size], np.int64))
    return LineIndex(
        bounds=np.concatenate(starts).astype(np.int64, copy=False),
        blank_rows=np.concatenate([np.empty(0, np.int64), *blanks]).astype(np.int64, copy=False),
    )


def default_cache_dir() -> str:
    """``$EASYDATA_GRAIN_CACHE``, else ``~/.cache/easydata_grain``."""
    return os.environ.get("EASYDATA_GRAIN_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "easydata_grain"
    )


class IndexCache:
    """Seek indexes saved under ``<directory>/line_index/``, one ``.npz`` per file version.

    A file's entry is named by the sha256 of its URL, its identity (size and etag or mtime)
    and the kind of index, so a rewritten file gets a new entry. Entries are written to a
    temporary file and renamed, so readers never see a partial one. An entry is checked when
    loaded (by the index's ``from_arrays``: a line index must end at the file's size), so a
    foreign or tampered one is not trusted. A cache that cannot be read or written, or an entry
    that fails the check, only costs a rescan: it is logged, never raised.
    """

    def __init__(self, directory: str):
        self.directory = os.path.join(directory, "line_index")

    def path(self, url: str, identity: str, kind: str) -> str:
        """The cache file of one version of one file."""
        digest = hashlib.sha256(f"{kind}\n{url}\n{identity}".encode()).hexdigest()
        return os.path.join(self.directory, f"{digest}.npz")

    def load(
        self, url: str, identity: str, kind: str, parse: Callable[[dict[str, np.ndarray]], _Index]
    ) -> _Index | None:
        """The cached index, built from the entry's arrays by ``parse``, or None.

        None when there is no entry, when it cannot be read, or when ``parse`` refuses it
        (ValueError or KeyError): a foreign or tampered entry is logged, not trusted.
        """
        path = self.path(url, identity, kind)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                return parse({name: entry[name] for name in entry.files})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning(
                "Ignoring the index cache %s of %s: %s: %s", path, url, type(exc).__name__, exc
            )
            return None

    def save(self, url: str, identity: str, kind: str, arrays: dict[str, np.ndarray]) -> None:
        """Write an entry atomically (temporary file, then rename; a failure is logged)."""
        write_atomically(self.path(url, identity, kind), lambda f: np.savez(f, **arrays))
