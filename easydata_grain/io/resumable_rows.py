"""A row stream that survives transient faults: it re-opens and continues at the next row."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TypeVar

from easydata_grain.io.retry import RetryPolicy, storage_error
from easydata_grain.io.stats import IOStats

Item = TypeVar("Item")
Chunk = TypeVar("Chunk", bound=Sized)


def resumable_rows(
    open_at: Callable[[int], Iterator[Sequence[Item]]],
    start: int,
    *,
    policy: RetryPolicy,
    stats: IOStats,
    path: str,
) -> Iterator[Item]:
    """Yield rows from ``open_at(start)``; after a transient fault, re-open at the next row.

    ``open_at(row)`` returns an iterator of row chunks starting exactly at ``row``; see
    ``resumable_chunks`` for how faults are handled.
    """
    for chunk in resumable_chunks(open_at, start, policy=policy, stats=stats, path=path):
        yield from chunk


def resumable_chunks(
    open_at: Callable[[int], Iterator[Chunk]],
    start: int,
    *,
    policy: RetryPolicy,
    stats: IOStats,
    path: str,
) -> Iterator[Chunk]:
    """Yield chunks of rows (lists, Arrow record batches) from ``open_at(start)``; after a
    transient fault, re-open at the row after the last chunk delivered.

    A chunk is only counted as delivered once the consumer asks for the next one, and the
    retry count starts again after progress, so a long stream survives any number of separate
    faults while a fault that persists through ``policy.max_retries`` retries raises an error
    naming file and row. Permanent faults (not found, access denied, corrupt data) are raised
    at once, and so is a read that already gave up after its own retries (``RemoteFile``): its
    fault is not retried a second time.
    """
    attempts = policy.attempts(stats)
    row = start
    while True:
        try:
            for chunk in open_at(row):
                stats.add(rows=len(chunk))
                attempts.progress()
                yield chunk
                row += len(chunk)
            return
        except Exception as exc:
            if attempts.retry(exc):
                continue
            error = storage_error(exc, path, row, retries=attempts.retries)
            if error is None:
                raise
            raise error from exc
