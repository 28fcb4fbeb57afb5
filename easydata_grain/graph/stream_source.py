"""Streaming mode's source: a sharded source or a plain iterable as a Grain ``IterDataset``."""

from __future__ import annotations

import copy
import itertools
import json
import numbers
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grain

from easydata_grain.io.errors import NotResumableError, RowOutOfRangeError
from easydata_grain.sources.protocol import ShardedSource, SkippingSource, StatefulIterable
from easydata_grain.sources.skipped import is_skipped
from easydata_grain.types import Address, Row, close_rows

_HF_BUFFER_SHUFFLE = "BufferShuffledExamplesIterable"
_MISSING = object()


def _cannot_save(reason: str) -> NotResumableError:
    return NotResumableError(
        reason,
        hint="To iterate without checkpoints, pass allow_unresumable=True to SourceIterDataset.",
    )


def _is_sharded(source: Any) -> bool:
    return isinstance(source, ShardedSource)


def _is_stateful(source: Any) -> bool:
    return isinstance(source, StatefulIterable)


def _drops_shuffle_buffer(dataset: Any) -> bool:
    """Whether a ``datasets.IterableDataset`` holds a ``.shuffle(buffer_size=...)`` step.

    Its ``state_dict()`` leaves the buffer out (datasets 5.2 refills it and restarts the
    shuffle's generator on ``load_state_dict``), so such a state resumes into another stream.
    """
    todo = [getattr(dataset, "_ex_iterable", None)]
    while todo:
        node = todo.pop()
        if node is None:
            continue
        if type(node).__name__ == _HF_BUFFER_SHUFFLE:
            return True
        todo.append(getattr(node, "ex_iterable", None))
        todo.extend(getattr(node, "ex_iterables", ()))
    return False


def not_resumable_reason(source: Any) -> str | None:
    """Why a source's position cannot be saved exactly, or None when it can."""
    if _is_sharded(source):
        if getattr(source, "on_bad_row", None) == "skip" and not isinstance(source, SkippingSource):
            return (
                f"{source!r} leaves bad rows out (on_bad_row='skip') without saying which, so "
                "counting the rows it yields does not give their row numbers."
            )
        return None
    if _is_stateful(source):
        if _drops_shuffle_buffer(source):
            return (
                "This datasets.IterableDataset was shuffled with .shuffle(buffer_size=...), and "
                "its state_dict() leaves the shuffle buffer out: resuming would silently yield "
                "another stream. Drop the .shuffle() and shuffle with our buffer instead "
                "(ShuffleBufferIterDataset, or AsyncDataLoader(shuffle_buffer_size=..., seed=...)), "
                "which saves its buffer with the state."
            )
        return None
    return (
        f"{type(source).__name__} has no state_dict()/load_state_dict(), so its position cannot "
        "be saved. For exact resume use a ShardedSource (ParquetShardedSource or "
        "JsonShardedSource: O(1) seek) or a datasets.IterableDataset (for instance "
        "IterableDataset.from_generator), whose state_dict() records the position."
    )


def _runs(addresses: Sequence[Address], max_gap: int) -> Iterator[tuple[int, list[int]]]:
    """Sorted unique addresses as ``(shard, rows)`` runs whose gaps are at most ``max_gap``."""
    run: list[int] = []
    run_shard = -1
    for shard, row in sorted(set(addresses)):
        if run and (shard != run_shard or row - run[-1] - 1 > max_gap):
            yield run_shard, run
            run = []
        run_shard = shard
        run.append(row)
    if run:
        yield run_shard, run


def addressed_rows(source: Any, shard: str, row: int) -> Iterator[Row]:
    """A shard's rows from ``row`` on, the ``k``-th item being row ``row + k``: a skipping
    source's ``SkippedRow`` placeholders are kept (and dropped downstream)."""
    if isinstance(source, SkippingSource) and source.skips_rows:
        return iter(source.rows_with_gaps(shard, row))
    return iter(source.open_shard_at_row(shard, row))


def read_rows_at(source: Any, addresses: Sequence[Address], *, max_gap: int = 256) -> list[Row]:
    """The rows at ``addresses`` (in that order) of a sharded source, in few sequential reads.

    Addresses are sorted and merged into runs of one shard whose gaps are at most ``max_gap``
    rows; each run is one ``open_shard_at_row`` read, the rows in its gaps read and dropped.
    """
    names = list(source.shard_names)
    found: dict[Address, Row] = {}
    for shard, rows in _runs(addresses, max_gap):
        stream = addressed_rows(source, names[shard], rows[0])
        try:
            position = rows[0]
            for row in rows:
                value = next(itertools.islice(stream, row - position, None), _MISSING)
                if value is _MISSING:
                    raise RowOutOfRangeError(
                        f"{names[shard]!r} ended before row {row}, which a saved state refers to.",
                        path=names[shard],
                        row=row,
                        hint="The data changed since the state was saved; restore on the same data.",
                    )
                found[shard, row] = value
                position = row + 1
        finally:
            close_rows(stream)
    return [found[shard, row] for shard, row in addresses]


class ShardedSourceIterator(grain.DatasetIterator):
    """The rows of a sharded source's shards, in the shard order, row after row.

    State: ``{"shard": i, "row": r}``, the position ``i`` in the shard order and the next
    row ``r`` of that shard; ``set_state`` re-opens with ``open_shard_at_row`` (O(1)).
    ``last_address`` is the address of the row ``__next__`` returned last.
    """

    def __init__(self, source: Any, order: Sequence[int], *, reason: str | None, allow: bool):
        super().__init__()
        self.source = source
        self.not_resumable_reason = reason
        self.last_address: Address | None = None
        self._names = list(source.shard_names)
        self._order = list(order)
        self._allow = allow
        self._position = 0
        self._row = 0
        self._rows: Iterator[Row] | None = None

    @property
    def seekable(self) -> bool:
        """Whether ``last_address`` is exact, so rows can be re-read by address."""
        return self.not_resumable_reason is None

    def __next__(self) -> Row:
        while self._position < len(self._order):
            shard = self._order[self._position]
            if self._rows is None:
                self._rows = addressed_rows(self.source, self._names[shard], self._row)
            row = next(self._rows, _MISSING)
            if row is _MISSING:
                self._close_rows()
                self._position, self._row = self._position + 1, 0
                continue
            self._row += 1
            if is_skipped(row):  # a bad row left out: counted, so the state stays exact
                continue
            self.last_address = (shard, self._row - 1)
            return row
        raise StopIteration

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"shard": self._position, "row": self._row}
        if self.not_resumable_reason is not None:
            if not self._allow:
                raise _cannot_save(self.not_resumable_reason)
            state["not_resumable"] = self.not_resumable_reason
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if self.not_resumable_reason is not None:
            raise NotResumableError(self.not_resumable_reason)
        position, row = state["shard"], state["row"]
        if not 0 <= position <= len(self._order) or row < 0:
            raise NotResumableError(
                f"The state {state!r} is outside this source's {len(self._order)} shards.",
                hint="Restore a state saved by the same pipeline over the same data.",
            )
        self._close_rows()
        self._position, self._row = position, row
        self.last_address = None

    def close(self) -> None:
        """Close the open shard's reader, then the iterator."""
        self._close_rows()
        super().close()

    def _close_rows(self) -> None:
        close_rows(self._rows)
        self._rows = None

    def __str__(self) -> str:
        return f"ShardedSourceIterator({self.source!r})"


class IterableSourceIterator(grain.DatasetIterator):
    """The items of an iterable; its state is the iterable's ``state_dict()`` where it has one.

    A ``datasets.IterableDataset`` (or any iterable with ``state_dict``/``load_state_dict``)
    is deep-copied per iterator so that iterators do not share its position. State:
    ``{"state_dict": ...}`` (None before the first item). Other iterables are iterated as
    they are (an iterator, only once).
    """

    def __init__(self, iterable: Iterable[Row], *, reason: str | None, allow: bool):
        super().__init__()
        self.not_resumable_reason = reason
        self._original = iterable
        self._allow = allow
        self._iterable = copy.deepcopy(iterable) if _is_stateful(iterable) else iterable
        self._rows: Iterator[Row] | None = None
        self._start: dict[str, Any] | None = None
        self._count = 0

    def __next__(self) -> Row:
        if self._rows is None:
            self._rows = iter(self._iterable)
        row = next(self._rows)
        self._count += 1
        return row

    def get_state(self) -> dict[str, Any]:
        if self.not_resumable_reason is not None:
            if not self._allow:
                raise _cannot_save(self.not_resumable_reason)
            return {
                "state_dict": None,
                "rows": self._count,
                "not_resumable": self.not_resumable_reason,
            }
        state = self._iterable.state_dict() if self._count else self._start  # type: ignore[attr-defined]
        try:
            return {"state_dict": json.loads(json.dumps(state))}
        except (TypeError, ValueError) as exc:
            raise NotResumableError(
                f"The state_dict() of {type(self._original).__name__} is not JSON-serializable "
                f"({exc}), so it cannot be saved with a Grain checkpoint."
            ) from exc

    def set_state(self, state: dict[str, Any]) -> None:
        if self.not_resumable_reason is not None:
            raise NotResumableError(self.not_resumable_reason)
        close_rows(self._rows)
        self._iterable = copy.deepcopy(self._original)
        self._start = state["state_dict"]
        if self._start is not None:
            self._iterable.load_state_dict(copy.deepcopy(self._start))  # type: ignore[attr-defined]
        self._rows, self._count = None, 0

    def close(self) -> None:
        """Close the iterable's iterator, then this one."""
        close_rows(self._rows)
        super().close()

    def __str__(self) -> str:
        return f"IterableSourceIterator({type(self._original).__name__})"


class SourceIterDataset(grain.IterDataset):
    """A source read once, in order, as a Grain ``IterDataset`` (streaming mode).

    ``source`` is a ``ShardedSource`` (``shard_names`` and ``open_shard_at_row``): rows of the
    shards in ``shard_order`` (default all, in order), resumed in O(1) by seeking; or a
    ``datasets.IterableDataset`` or other iterable with ``state_dict()``/``load_state_dict()``,
    resumed through that state; or any other iterable, which cannot be resumed. Rows are
    yielded unchanged.

    Where the position cannot be saved exactly (see ``not_resumable_reason``), ``get_state``
    raises ``NotResumableError`` saying what to use instead. Grain's prefetch calls
    ``get_state`` as it starts, so such a source needs ``allow_unresumable=True`` to be
    iterated behind it: ``get_state`` then returns a state holding the reason (under
    ``"not_resumable"``), and ``set_state`` raises.
    """

    def __init__(
        self,
        source: Any,
        *,
        shard_order: Sequence[int] | None = None,
        allow_unresumable: bool = False,
    ):
        super().__init__()
        if _is_sharded(source):
            num_shards = len(source.shard_names)
            order = list(range(num_shards)) if shard_order is None else list(shard_order)
            if len(set(order)) != len(order) or not all(
                isinstance(s, numbers.Integral) and 0 <= s < num_shards for s in order
            ):
                raise ValueError(
                    f"shard_order must list distinct shard indices in 0..{num_shards - 1}, "
                    f"got {shard_order!r}"
                )
            self._order: list[int] | None = [int(s) for s in order]
        elif isinstance(source, Iterable):
            if shard_order is not None:
                raise ValueError("shard_order applies only to a ShardedSource")
            self._order = None
        else:
            raise TypeError(
                f"source must be a ShardedSource or an iterable of rows, got {type(source).__name__}"
            )
        self._source = source
        self._allow = bool(allow_unresumable)
        self.not_resumable_reason = not_resumable_reason(source)

    def __iter__(self) -> ShardedSourceIterator | IterableSourceIterator:
        reason = self.not_resumable_reason
        if self._order is not None:
            return ShardedSourceIterator(
                self._source, self._order, reason=reason, allow=self._allow
            )
        return IterableSourceIterator(self._source, reason=reason, allow=self._allow)

    def __str__(self) -> str:
        return f"SourceIterDataset({type(self._source).__name__})"
