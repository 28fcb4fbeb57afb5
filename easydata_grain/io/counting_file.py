"""A read-only file wrapper that counts the requests and bytes of a remote read."""

from __future__ import annotations

from typing import IO

from easydata_grain.io.stats import IOStats


class CountingFile:
    """Wraps an fsspec file opened without a cache: each read is one request to the store."""

    def __init__(self, raw: IO[bytes], stats: IOStats):
        self._raw = raw
        self._stats = stats
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes, counting the request and the bytes."""
        data = self._raw.read(size)
        self._stats.add(requests=1, bytes_read=len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``, counting the request and the bytes."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the read position."""
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        """The read position."""
        return self._raw.tell()

    @property
    def size(self) -> int:
        """The file's size in bytes, as the store reported it when the file was opened."""
        return self._raw.size

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def writable(self) -> bool:
        """Always false."""
        return False

    def close(self) -> None:
        """Close the underlying file."""
        self.closed = True
        self._raw.close()

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
