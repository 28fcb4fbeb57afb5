"""A remote file whose reads survive transient faults: it re-opens and reads at the same offset."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from easydata_grain.io.retry import RetryPolicy, is_transient
from easydata_grain.io.stats import IOStats


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file on an object store, opened without a cache.

    Every ``read`` is one request to the store and is counted (requests, bytes). A transient
    fault during a read closes the connection, waits the policy's backoff, re-opens the object
    and reads again from the same offset, so callers (pyarrow, the JSON scanner) never see it;
    a fault that outlasts ``policy.max_retries`` retries, or a permanent one, is raised.

    ``prefetch`` fetches byte ranges up front (a Parquet row group's column chunks) so that
    the reads inside them are served from memory: the caller decides when requests happen,
    and pyarrow never has to pre-buffer (its I/O threads would call back into Python).
    """

    def __init__(
        self,
        open_raw: Callable[[], IO[bytes]],
        size: int,
        *,
        policy: RetryPolicy,
        stats: IOStats,
    ):
        super().__init__()
        self._open_raw = open_raw
        self._raw: IO[bytes] | None = None
        self._size = size
        self._position = 0
        self._policy = policy
        self._stats = stats
        self._buffers: list[tuple[int, bytes]] = []

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return self._size

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the read position (no request is made until the next read)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        """The read position."""
        return self._position

    def _read_once(self, size: int) -> bytes:
        if self._raw is None:
            self._raw = self._open_raw()  # no request: the size is known and nothing is cached
        self._raw.seek(self._position)
        return self._raw.read(size)

    def prefetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Fetch the byte ranges ``[start, stop)`` now, one retried request each; reads that
        fall inside one are then served from memory, until the next ``prefetch``."""
        self._buffers = []
        buffers = []
        for start, stop in ranges:
            self.seek(start)
            buffers.append((start, self.read(stop - start)))
        self._buffers = buffers

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left for -1), retrying transient faults."""
        if size is None or size < 0:
            size = self._size - self._position
        size = min(size, max(0, self._size - self._position))
        if size == 0:
            return b""
        for start, data in self._buffers:
            offset = self._position - start
            if offset >= 0 and offset + size <= len(data):
                self._position += size
                return data[offset : offset + size]
        retry = 0
        while True:
            try:
                data = self._read_once(size)
                break
            except Exception as exc:
                self._discard()
                if retry >= self._policy.max_retries or not is_transient(exc):
                    raise
                retry += 1
                self._stats.add(retries=1)
                time.sleep(self._policy.delay(retry))
        self._position += len(data)
        self._stats.add(requests=1, bytes_read=len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        """Read into a writable buffer; returns the number of bytes read."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """Everything from the position to the end."""
        return self.read(-1)

    def _discard(self) -> None:
        if self._raw is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None

    def close(self) -> None:
        """Close the connection and drop prefetched bytes."""
        self._buffers = []
        self._discard()
        super().close()
