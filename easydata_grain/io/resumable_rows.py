"""A row stream that survives transient faults: it re-opens and continues at the next row."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TypeVar

from easydata_grain.io.errors import RetriesExhaustedError, SourceError
from easydata_grain.io.retry import RetryPolicy, attempts_text, is_transient, storage_error
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
    at once.
    """
    row = start
    retry = 0
    while True:
        try:
            for chunk in open_at(row):
                stats.add(rows=len(chunk))
                retry = 0
                yield chunk
                row += len(chunk)
            return
        except SourceError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                clear = storage_error(exc, path, row)
                if clear is None:
                    raise
                raise clear from exc
            if retry >= policy.max_retries:
                raise RetriesExhaustedError(
                    f"Reading {path!r} failed at row {row} "
                    f"{attempts_text(retry, transient=True)}: {type(exc).__name__}: {exc}.",
                    path=path,
                    row=row,
                    hint="The store kept failing; check the network or raise RetryPolicy.max_retries.",
                ) from exc
            retry += 1
            stats.add(retries=1)
            time.sleep(policy.delay(retry))
