"""Shard files whose reads are pinned to the version their metadata was read from.

A footer or line index describes one version of a file. ``RemoteFile`` reads an object-store
shard range by range, each request conditional on the etag or generation its metadata was read
with, so a rewritten object fails the read (HTTP 412) instead of serving new bytes; transient
faults are retried at the same offset. ``LocalFile`` checks a local shard's size and mtime after
every read. Either way a change raises ``ShardChangedError``.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence
from typing import IO, Any

from fsspec.asyn import sync

from easydata_grain.io.errors import ShardChangedError
from easydata_grain.io.retry import RetryPolicy, is_precondition_failed
from easydata_grain.io.stats import IOStats

# The listing entry's key that names the version a read can be pinned to, per protocol.
_VERSION_KEYS = {"s3": "ETag", "gs": "generation", "az": "etag", "file": "mtime"}


def file_version(info: dict[str, Any], protocol: str) -> str | None:
    """The version of a file that reads are pinned to, from its listing entry: the S3 or Azure
    etag, the GCS generation, or the local mtime (fsspec's float ``st_mtime``, which
    ``os.fstat`` gives back exactly while the file is unchanged); None for other filesystems."""
    key = _VERSION_KEYS.get(protocol)
    value = info.get(key) if key else None
    return None if value is None else str(value)


def shard_changed(path: str, detail: str) -> ShardChangedError:
    """The error for a shard that is no longer the file its metadata was read from."""
    return ShardChangedError(
        f"{path!r} changed after its metadata was read ({detail}): the data changed under the "
        "job, and reading on would give the new file's rows through the old metadata.",
        path=path,
        hint="Do not rewrite shards while a job reads them; write new data to new files. A new "
        "source or loader reads the new file (a loader state saved before the change is then "
        "refused).",
    )


def _bare(version: Any) -> str:
    """A version without the quotes some stores put around etags."""
    return str(version).strip('"')


class _PreconditionFailed(Exception):
    """A conditional read refused by the store (HTTP 412): the object has another version."""

    status = 412


async def _s3_range(fs: Any, path: str, start: int, stop: int, etag: str | None) -> Any:
    bucket, key, _ = fs.split_path(path)
    condition = {"IfMatch": etag} if etag else {}
    response = await fs._call_s3(
        "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}", **condition
    )
    try:
        return await response["Body"].read(), response.get("ETag")
    finally:
        response["Body"].close()


async def _gcs_range(fs: Any, path: str, start: int, stop: int, generation: str | None) -> Any:
    url = fs.url(path) + (f"&ifGenerationMatch={generation}" if generation else "")
    try:
        headers, data = await fs._call("GET", url, headers={"Range": f"bytes={start}-{stop - 1}"})
    except FileExistsError as exc:  # what gcsfs raises for HTTP 412
        raise _PreconditionFailed(str(exc)) from exc
    return data, headers.get("x-goog-generation")


async def _gcs_generation(fs: Any, path: str) -> str:
    """The object's current generation, from its metadata (one request)."""
    bucket, key, _ = fs.split_path(path)
    return (await fs._call("GET", "b/{}/o/{}", bucket, key, json_out=True))["generation"]


async def _azure_range(fs: Any, path: str, start: int, stop: int, etag: str | None) -> Any:
    from azure.core import MatchConditions

    container, blob, _ = fs.split_path(path)
    client = fs.service_client.get_blob_client(container, blob)
    condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    stream = await client.download_blob(
        offset=start, length=stop - start, max_concurrency=1, **condition
    )
    return await stream.readall(), stream.properties.etag


def _hf_range(fs: Any, path: str, start: int, stop: int, version: str | None) -> Any:
    """A range of a file on the Hub in one request, with no read-ahead: the file of
    ``io.filesystem``'s ``HfFileSystem``, opened without a cache, reads exactly what is asked
    through its counted range read. Its path holds the commit sha, which fixes its bytes: there
    is no other version to check (``version`` is None)."""
    with fs.open(path, "rb", cache_type="none") as file:
        file.seek(start)
        return file.read(stop - start), None


def _on_loop(read: Callable[..., Any]) -> Callable[..., Any]:
    """An async range read run to completion on its filesystem's event loop."""
    return lambda fs, *args: sync(fs.loop, read, fs, *args)


_RANGE_READS = {
    "s3": _on_loop(_s3_range),
    "gs": _on_loop(_gcs_range),
    "az": _on_loop(_azure_range),
    "hf": _hf_range,
}


class PinnedObject:
    """An object on a store (``protocol`` ``s3``, ``gs``, ``az`` or ``hf``), read range by
    range, each request conditional on ``version`` (S3 ``If-Match``, GCS ``ifGenerationMatch``,
    Azure ``If-Match``; a Hub file's commit is in its path): a changed object fails the read
    with ``ShardChangedError``. With
    ``version=None`` it reads whatever is there (for the metadata read itself). What
    ``RemoteFile`` opens; opening makes no request. Every request is counted in ``stats``
    when it is sent (failed ones too).

    The version the store says it served is compared too, for stores that ignore the condition
    (the GCS emulator, which does not say either: it is asked, one more request per read).
    """

    def __init__(self, fs: Any, protocol: str, url: str, version: str | None, stats: IOStats):
        self._fs = fs
        self._protocol = protocol
        self._url = url
        self._path = fs._strip_protocol(url)
        self._version = version
        self._stats = stats
        self._position = 0

    def seek(self, position: int) -> int:
        """Set the offset of the next read."""
        self._position = position
        return position

    def read(self, size: int) -> bytes:
        """``size`` bytes from the offset, in one request."""
        fs, version = self._fs, self._version
        stop = self._position + size
        self._stats.add(requests=1)
        try:
            read = _RANGE_READS[self._protocol]
            data, served = read(fs, self._path, self._position, stop, version)
        except Exception as exc:
            if version is not None and is_precondition_failed(exc):
                raise shard_changed(
                    self._url,
                    f"a read of version {version} was refused with HTTP 412: the store has another",
                ) from exc
            raise
        if served is None and version is not None and self._protocol == "gs":
            self._stats.add(requests=1)
            served = sync(fs.loop, _gcs_generation, fs, self._path)
        if version is not None and served is not None and _bare(served) != _bare(version):
            raise shard_changed(self._url, f"version {version} then, {served} now")
        self._position += len(data)
        return data

    def close(self) -> None:
        """Nothing to release: every read is its own request."""


def check_local_file(path: str, fileno: int, size: int, mtime: str) -> None:
    """Raise ``ShardChangedError`` unless the open local file still has ``size`` bytes and the
    mtime ``mtime`` (as ``file_version`` gives it)."""
    stat = os.fstat(fileno)
    if stat.st_size != size or str(stat.st_mtime) != mtime:
        raise shard_changed(
            path,
            f"{size} bytes modified at {mtime} then, {stat.st_size} bytes modified at "
            f"{stat.st_mtime} now",
        )


class LocalFile(io.RawIOBase):
    """A local shard opened for reading; after every read, ``os.fstat`` checks that the file
    still has the size and mtime its metadata was read with (``check_local_file``), so bytes
    of a file rewritten in place are never returned. A file replaced by a new one (a rename)
    keeps serving the old one's bytes, which match the metadata."""

    def __init__(self, path: str, local_path: str, *, size: int, mtime: str):
        super().__init__()
        self._file = open(local_path, "rb", buffering=0)  # noqa: SIM115 (closed by close)
        self._path = path
        self._size = size
        self._mtime = mtime
        self._check()

    def _check(self) -> None:
        check_local_file(self._path, self._file.fileno(), self._size, self._mtime)

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the read position."""
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        """The read position."""
        return self._file.tell()

    def fileno(self) -> int:
        """The open file's descriptor."""
        return self._file.fileno()

    def readinto(self, buffer: Any) -> int:
        """Read into a writable buffer, then check the file; returns the number of bytes read."""
        count = self._file.readinto(buffer)
        self._check()
        return count

    def close(self) -> None:
        """Close the file."""
        self._file.close()
        super().close()


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file on an object store, opened without a cache.

    Every ``read`` is one attempt loop of the policy (``RetryPolicy.attempts``): the opener's
    object makes and counts the requests, this file counts bytes and retries. A transient fault
    closes the connection, waits the policy's backoff, re-opens the object and reads again from
    the same offset, so callers (pyarrow, the JSON scanner) never see it. A transient fault
    that outlasts ``policy.max_retries`` retries is raised as ``_RetriesExhausted``, which the
    row stream or metadata read around it reports without retrying it again; a permanent one is
    raised as it is (a changed object, see ``PinnedObject``, at once).

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
        try:
            if self._raw is None:
                self._raw = self._open_raw()  # no request: the size is known, nothing is cached
            self._raw.seek(self._position)
            return self._raw.read(size)
        except Exception:
            self._discard()
            raise

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
        attempts = self._policy.attempts(self._stats)
        try:
            data = attempts.call(lambda: self._read_once(size))
        except Exception as exc:
            exhausted = attempts.exhausted(exc)
            if exhausted is None:
                raise
            raise exhausted from exc
        self._position += len(data)
        self._stats.add(bytes_read=len(data))
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
