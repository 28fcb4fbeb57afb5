"""The metadata cache: Parquet footers kept on local disk, keyed by each file's version.

A Parquet shard's footer holds its row count, schema and row groups: what an indexed loader
needs of every shard before its first batch. ``ParquetShardedSource(metadata_cache_dir=...)``
keeps each footer it reads as one small JSON file under ``<directory>/parquet_footer/``, named
by the file's URL and identity (size plus etag, generation or mtime), so a later source over the
same files reads no footer at all, and a rewritten file (another identity) is read again. JSON
line indexes live next to them, under ``<directory>/line_index/`` (``line_index.IndexCache``).

Nothing is pickled: an entry is JSON holding the footer's Thrift bytes (base64, as a Parquet
``_metadata`` file holds them). Entries are written to a temporary file and renamed, so a reader
never sees a partial one, and every entry is checked when loaded: one that cannot be read, names
another file or version, or holds a footer that does not fit the file is logged and ignored (the
footer is read again and the entry rewritten), never trusted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

_FOLDER = "parquet_footer"
_FORMAT = "easydata_grain.parquet_footer/1"


def encode_footer(metadata: pq.FileMetaData) -> str:
    """A Parquet footer as text: its Thrift bytes, framed as a ``_metadata`` file, in base64."""
    sink = pa.BufferOutputStream()
    metadata.write_metadata_file(sink)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode()


def decode_footer(text: str) -> pq.FileMetaData:
    """The footer ``encode_footer`` wrote (``pa.ArrowInvalid`` or ValueError if it is not one)."""
    return pq.read_metadata(pa.BufferReader(base64.b64decode(text, validate=True)))


def write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> bool:
    """Write a cache file through ``write`` under a temporary name, then rename it to ``path``,
    so that readers never see a partial file. A file that cannot be written is logged and
    False returned: a cache that fails only costs the work again."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    except OSError as exc:
        logger.warning("Could not write the cache file %s: %s", path, exc)
        return False
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("Could not write the cache file %s: %s", path, exc)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False
    return True


class MetadataCache:
    """Parquet footers under ``<directory>/parquet_footer/``, one JSON file per file version.

    ``hits`` and ``misses`` count the footers found and not found (or not trusted) here.
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = os.fspath(directory)
        """The cache directory (shared with JSON line indexes, see the module's docstring)."""
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def path(self, url: str, identity: str) -> str:
        """The entry of one version of one file: delete it to read the footer again."""
        name = hashlib.sha256(f"{url}\n{identity}".encode()).hexdigest()
        return os.path.join(self.directory, _FOLDER, f"{name}.json")

    def load(
        self, url: str, identity: str, check: Callable[[pq.FileMetaData], None]
    ) -> pq.FileMetaData | None:
        """The cached footer of ``url`` at ``identity``, or None when there is none or none to
        trust (logged): ``check`` raises ValueError for a footer that does not fit the file."""
        path = self.path(url, identity)
        metadata = None
        try:
            with open(path, encoding="utf-8") as handle:
                entry = json.load(handle)
            if entry.get("format") != _FORMAT:
                raise ValueError("an entry of another format")
            if entry.get("url") != url or entry.get("identity") != identity:
                raise ValueError(f"the entry of {entry.get('url')!r} at {entry.get('identity')!r}")
            metadata = decode_footer(entry["footer"])
            check(metadata)
        except FileNotFoundError:
            metadata = None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as exc:
            logger.warning(
                "Ignoring the cached footer %s of %s: %s: %s", path, url, type(exc).__name__, exc
            )
            metadata = None
        with self._lock:
            if metadata is None:
                self.misses += 1
            else:
                self.hits += 1
        return metadata

    def save(self, url: str, identity: str, metadata: pq.FileMetaData) -> None:
        """Keep the footer of ``url`` at ``identity`` (atomically; a failure is logged)."""
        entry = {
            "format": _FORMAT,
            "url": url,
            "identity": identity,
            "footer": encode_footer(metadata),
        }
        write_atomically(self.path(url, identity), lambda f: f.write(json.dumps(entry).encode()))

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "hits": self.hits, "misses": self.misses}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MetadataCache({self.directory!r}, hits={self.hits}, misses={self.misses})"
