"""The output directory of a materialization, on local disk or a store, written atomically.

Every file is written under a temporary name beside its final one (``.{name}.{random}.tmp``,
which no ``part-*.parquet`` glob matches) and then moved into place: a rename on local disk, a
copy then delete on an object store, whose objects appear whole. Each operation runs under the
library's ``RetryPolicy`` (transient faults retried, the temporary file started again), and a
failure is a ``SourceError`` naming the file: ``AccessDeniedError`` for an output that cannot
be written (a read-only directory, credentials without write access).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import posixpath
import uuid
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

from easydata_grain.io.errors import AccessDeniedError, SourceError
from easydata_grain.io.filesystem import filesystem_for, protocol_of
from easydata_grain.io.retry import RetryPolicy, is_access_denied, storage_error

T = TypeVar("T")
_READ_CHUNK = 8 << 20
TEMP_SUFFIX = ".tmp"
"""The suffix of a file being written (removed by the run that commits the output)."""


class _HashingWriter(io.RawIOBase):
    """A write-only file that passes its bytes on to ``raw`` and hashes them as they go."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._raw.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size


def modified_time(info: dict[str, Any]) -> float | None:
    """The modification time in an fsspec ``info()`` (local ``mtime``, S3 ``LastModified``,
    GCS ``updated``, Azure ``last_modified``), or None when it has none."""
    for key in ("mtime", "LastModified", "updated", "last_modified"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a path in the output) is a file left by an interrupted write."""
    base = posixpath.basename(name)
    return base.startswith(".") and base.endswith(TEMP_SUFFIX)


class OutputStore:
    """The files under ``url`` (names are relative to it, ``/``-separated); picklable, so a
    worker process or a Ray task opens its own filesystem."""

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None, retry: RetryPolicy
    ) -> None:
        self.url = url.rstrip("/")
        self.protocol = protocol_of(url)
        self.storage_options = dict(storage_options or {})
        self.retry = retry
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use in each process)."""
        if self._fs is None:
            self._fs = filesystem_for(self.url, self.storage_options, self.retry)
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}

    def path(self, name: str) -> str:
        """The full URL (or local path) of ``name``."""
        return f"{self.url}/{name}"

    def make_directory(self, name: str = "") -> None:
        """Create a directory on local disk (object stores have none to create)."""
        if self.protocol == "file":
            where = self.path(name) if name else self.url
            self._attempt("Creating", where, lambda: self.fs.makedirs(where, exist_ok=True))

    def list(self) -> dict[str, int]:
        """Every file under the output, recursively, with its size (empty when there is none)."""

        def listing() -> dict[str, int]:
            self.fs.invalidate_cache()
            try:
                found = self.fs.find(self.url, detail=True)
            except FileNotFoundError:
                return {}
            root = self.fs._strip_protocol(self.url).rstrip("/") + "/"
            return {
                path[len(root) :]: int(info.get("size") or 0)
                for path, info in found.items()
                if path.startswith(root) and info.get("type", "file") == "file"
            }

        return self._attempt("Listing", self.url, listing)

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name``, or None when it does not exist."""
        path = self.path(name)

        def read() -> bytes | None:
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None

        return self._attempt("Reading", path, read)

    def modified(self, name: str) -> float | None:
        """When ``name`` was last written (seconds since the epoch), or None when the store
        does not say or the file does not exist."""
        path = self.path(name)

        def info() -> dict[str, Any] | None:
            try:
                return self.fs.info(path)
            except FileNotFoundError:
                return None

        found = self._attempt("Reading the details of", path, info)
        return None if found is None else modified_time(found)

    def checksum(self, name: str) -> tuple[int, str] | None:
        """``(size, sha256)`` of ``name``'s bytes, read in chunks; None when it does not exist."""
        path = self.path(name)

        def read() -> tuple[int, str] | None:
            sha256, size = hashlib.sha256(), 0
            try:
                with self.fs.open(path, "rb") as handle:
                    while chunk := handle.read(_READ_CHUNK):
                        sha256.update(chunk)
                        size += len(chunk)
            except FileNotFoundError:
                return None
            return size, sha256.hexdigest()

        return self._attempt("Reading", path, read)

    def write(self, name: str, write: Callable[[IO[bytes]], Any]) -> tuple[int, str]:
        """Write ``name`` atomically: ``write(file)`` fills a temporary file, which is then
        moved into place. Returns the bytes' size and sha256."""
        final = self.path(name)
        folder, base = posixpath.split(name)
        temporary = self.path(posixpath.join(folder, f".{base}.{uuid.uuid4().hex}{TEMP_SUFFIX}"))

        def attempt() -> tuple[int, str]:
            try:
                with self.fs.open(temporary, "wb") as raw:
                    hashing = _HashingWriter(raw)
                    write(hashing)  # type: ignore[arg-type]
                self.fs.mv(temporary, final)
            except BaseException:
                self._discard(temporary)
                raise
            return hashing.size, hashing.sha256.hexdigest()

        return self._attempt("Writing", final, attempt)

    def write_bytes(self, name: str, data: bytes) -> tuple[int, str]:
        """Write ``data`` to ``name`` atomically (see ``write``)."""
        return self.write(name, lambda handle: handle.write(data))

    def remove(self, names: Iterable[str]) -> None:
        """Delete the files ``names`` (those already gone are fine)."""
        for name in names:
            path = self.path(name)
            self._attempt("Deleting", path, lambda path=path: self._remove(path))

    def remove_directory(self, name: str) -> None:
        """Delete the empty directory ``name`` on local disk (object stores have none)."""
        path = self.path(name)
        if self.protocol == "file" and self.fs.isdir(path):
            self._attempt("Deleting", path, lambda: self.fs.rmdir(path))

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _discard(self, path: str) -> None:
        """Remove a temporary file after a failed write, if the store lets us (the next run
        removes what is left)."""
        with contextlib.suppress(Exception):
            self._remove(path)

    def _attempt(self, what: str, path: str, fn: Callable[[], T]) -> T:
        attempts = self.retry.attempts()
        try:
            return attempts.call(fn)
        except SourceError:
            raise
        except Exception as exc:
            if is_access_denied(exc):
                raise AccessDeniedError(
                    f"{what} {path!r} was refused: {type(exc).__name__}: {exc}.",
                    path=path,
                    hint="Check that the output can be written: the directory's permissions on "
                    "local disk, or the write access of the credentials in storage_options.",
                ) from exc
            error = storage_error(exc, path, retries=attempts.retries, what=what)
            if error is None:
                raise
            raise error from exc
