"""The shared machinery of file-backed sources: listing, metadata, retries, row streams."""

from __future__ import annotations

import abc
import base64
import dataclasses
import itertools
import os
import pickle
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, ClassVar

import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import (
    CorruptShardError,
    RowOutOfRangeError,
    SchemaMismatchError,
    ShardNotFoundError,
)
from easydata_grain.io.filesystem import (
    REMOTE_PROTOCOLS,
    filesystem_for,
    listed_entries,
    protocol_of,
)
from easydata_grain.io.listing import expand_paths
from easydata_grain.io.remote_file import (
    LocalFile,
    PinnedObject,
    RemoteFile,
    file_version,
    shard_changed,
)
from easydata_grain.io.resumable_rows import resumable_rows
from easydata_grain.io.retry import RetryPolicy, storage_error
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.metadata_sharing import (
    LocalMetadata,
    MetadataSharing,
    default_sharing,
)
from easydata_grain.sources.skipped import SkippedRow
from easydata_grain.types import Row, row_number


@dataclasses.dataclass(frozen=True)
class ShardMeta:
    """What is known about one shard without reading its rows."""

    num_rows: int
    schema: pa.Schema | None
    identity: str
    """The file's size and etag (or mtime): it changes when the file is rewritten."""
    size: int
    """The file's size in bytes."""
    index: Any = None
    """Format-specific seek data (Parquet footer, JSON line offsets)."""
    version: str | None = None
    """The version of the file the metadata describes, which every read is pinned to (see
    ``file_version``): the S3 or Azure etag, the GCS generation, the local mtime."""


def _encode(meta: ShardMeta) -> str:
    """A ShardMeta as text, to send to other hosts."""
    return base64.b64encode(pickle.dumps(meta)).decode()


def _decode(text: str) -> ShardMeta:
    return pickle.loads(base64.b64decode(text))


def file_identity(info: dict[str, Any]) -> str:
    """A short string that changes when a file is rewritten: its size plus etag or mtime."""
    version = next(
        (
            info[key]
            for key in (
                "ETag",
                "etag",
                "md5Hash",
                "generation",
                "mtime",
                "last_modified",
                "LastModified",
            )
            if info.get(key) is not None
        ),
        "",
    )
    return f"{info.get('size')}:{str(version).strip(chr(34))}"


def _nullable_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, _nullable_type(field.type))


def _nullable_type(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with its nested fields nullable and without their metadata."""
    if pa.types.is_struct(data_type):
        return pa.struct([_nullable_field(field) for field in data_type])
    if pa.types.is_map(data_type):
        return pa.map_(
            _nullable_type(data_type.key_type),
            _nullable_field(data_type.item_field),
            data_type.keys_sorted,
        )
    if pa.types.is_large_list(data_type):
        return pa.large_list(_nullable_field(data_type.value_field))
    if pa.types.is_fixed_size_list(data_type):
        return pa.list_(_nullable_field(data_type.value_field), data_type.list_size)
    if pa.types.is_list(data_type):
        return pa.list_(_nullable_field(data_type.value_field))
    if pa.types.is_dictionary(data_type):
        return pa.dictionary(
            data_type.index_type, _nullable_type(data_type.value_type), data_type.ordered
        )
    return data_type


def reading_schema(schema: pa.Schema) -> pa.Schema:
    """The schema shards are compared and read with: every field, nested ones too, nullable and
    without metadata. Writers differ in both without the values differing: duckdb and Spark
    write NOT NULL columns where pyarrow and polars write nullable ones, Spark and Iceberg add
    field ids. Tables of every shard cast to it (nullability only widens)."""
    return pa.schema([_nullable_field(field) for field in schema])


def _type_differences(path: str, expected: pa.DataType, actual: pa.DataType) -> list[str]:
    """Where two column types differ (nullability aside), naming the nested field."""
    if _nullable_type(expected) == _nullable_type(actual):
        return []
    if pa.types.is_struct(expected) and pa.types.is_struct(actual):
        names = [f.name for f in expected]
        if names != [f.name for f in actual]:
            return [f"{path} (fields {names} vs {[f.name for f in actual]})"]
        return [
            difference
            for e, a in zip(expected, actual, strict=True)
            for difference in _type_differences(f"{path}.{e.name}", e.type, a.type)
        ]
    list_kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(is_kind(expected) and is_kind(actual) for is_kind in list_kinds) and getattr(
        expected, "list_size", None
    ) == getattr(actual, "list_size", None):
        return _type_differences(f"{path}[]", expected.value_type, actual.value_type)
    return [f"{path} ({expected} vs {actual})"]


def describe_schema_difference(expected: pa.Schema, actual: pa.Schema) -> str:
    """How ``actual`` differs from ``expected`` for reading, in words: missing or extra
    columns, other types (naming the nested field), another column order. Nullability and
    field metadata are no difference (see ``reading_schema``)."""
    expected_types = {f.name: f.type for f in expected}
    actual_types = {f.name: f.type for f in actual}
    parts = []
    if missing := [n for n in expected_types if n not in actual_types]:
        parts.append(f"missing columns {missing}")
    if extra := [n for n in actual_types if n not in expected_types]:
        parts.append(f"extra columns {extra}")
    if changed := [
        difference
        for n in expected_types
        if n in actual_types
        for difference in _type_differences(n, expected_types[n], actual_types[n])
    ]:
        parts.append(f"different types for {', '.join(changed)}")
    common = [n for n in expected.names if n in actual_types]
    if common != (order := [n for n in actual.names if n in expected_types]):
        parts.append(f"another column order ({common} vs {order})")
    return "; ".join(parts) or "nothing that matters for reading (only nullability or metadata)"


class FileShardedSource(abc.ABC):
    """A source whose shards are files on local disk, GCS, S3 or Azure.

    Subclasses read one format: ``_read_meta`` returns a shard's ``ShardMeta`` from as little of
    the file as the format allows, and ``_read_chunks`` yields lists of rows starting at a row.
    """

    suffixes: ClassVar[tuple[str, ...]] = ()
    metadata_threads: ClassVar[int] = 16
    block_rows: ClassVar[int] = 1024

    def __init__(
        self,
        paths: str | Sequence[str],
        storage_options: dict[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        share_listing: bool = True,
        metadata_sharing: MetadataSharing | None = None,
    ):
        path_list = [paths] if isinstance(paths, str) else list(paths)
        if not path_list or not all(isinstance(p, str) for p in path_list):
            raise TypeError(f"paths must be a path, a glob or a list of them, got {paths!r}")
        protocols = {protocol_of(p) for p in path_list}
        if len(protocols) > 1:
            raise ValueError(
                f"All paths of one source must be on one store, got {sorted(protocols)}"
            )
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(f"storage_options must be a dict, got {storage_options!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {retry!r}")
        self.protocol = protocols.pop()
        self.storage_options = dict(storage_options or {})
        self.retry = retry or RetryPolicy()
        self.stats = IOStats()
        self._fs = filesystem_for(path_list[0], self.storage_options, self.retry)
        if metadata_sharing is not None and not isinstance(metadata_sharing, MetadataSharing):
            raise TypeError(f"metadata_sharing must be a MetadataSharing, got {metadata_sharing!r}")
        self.metadata_sharing = metadata_sharing or (
            default_sharing() if share_listing else LocalMetadata()
        )
        """Where the listing and metadata are computed (this process, or host 0 of a slice)."""
        self._config_key = digest(
            [type(self).__name__, path_list, sorted(self.storage_options), self._settings()]
        )
        self._shards = self._shared(
            lambda: expand_paths(
                self._fs, path_list, suffixes=self.suffixes, policy=self.retry, stats=self.stats
            ),
            f"the file listing of {path_list}",
        )
        self._positions = {self._key(name): i for i, name in enumerate(self._shards)}
        self._listings: dict[str, dict[str, dict[str, Any]]] = {}
        """The listing's entries by folder and name (see ``_listed_info``)."""
        self._meta: dict[int, ShardMeta] = {}
        self._meta_lock = threading.Lock()
        self._versions_seen: dict[str, str | None] = {}

    # -- the ShardedSource protocol ------------------------------------------------------------

    @property
    def shard_names(self) -> list[str]:
        """The shard files, sorted, as full URLs (local paths as given)."""
        return list(self._shards)

    def open_shard(self, shard: str) -> Iterator[Row]:
        """Iterate over all rows of ``shard``; transient faults are retried at the same row."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[Row]:
        """Iterate over the rows of ``shard`` from ``row`` on, seeking without reading earlier data."""
        return self.rows_with_gaps(shard, row)

    # -- addressed rows -------------------------------------------------------------------------

    @property
    def skips_rows(self) -> bool:
        """Whether some rows may be left out (bad rows skipped); see ``rows_with_gaps``."""
        return False

    def rows_with_gaps(self, shard: str | int, row: int) -> Iterator[Row | SkippedRow]:
        """The rows of ``shard`` from ``row`` on, a ``SkippedRow`` standing for each row left out,
        so that the ``k``-th item is row ``row + k``: addresses never shift."""
        index = self.shard_index(shard)
        meta = self.shard_meta(index)
        number = row_number(row)
        if number is None:
            raise TypeError(f"row must be an int, got {row!r}")
        row = number
        if not 0 <= row <= meta.num_rows:
            raise RowOutOfRangeError(
                f"Row {row} is out of range for {self._shards[index]!r}, which has "
                f"{meta.num_rows} rows.",
                path=self._shards[index],
                row=row,
                hint="Valid start rows are 0..num_rows; a checkpoint from other data gives this.",
            )
        path = self._shards[index]
        return resumable_rows(
            lambda start: self._read_chunks(path, meta, start),
            row,
            policy=self.retry,
            stats=self.stats,
            path=path,
        )

    # -- metadata -------------------------------------------------------------------------------

    def shard_index(self, shard: str | int) -> int:
        """The position of a shard given by name (or by position, checked)."""
        if isinstance(shard, int) and not isinstance(shard, bool):
            if not 0 <= shard < len(self._shards):
                raise IndexError(f"Shard {shard} out of range: the source has {len(self._shards)}")
            return shard
        index = self._positions.get(self._key(shard))
        if index is None:
            raise ShardNotFoundError(
                f"{shard!r} is not a shard of this source.",
                path=str(shard),
                hint=f"Use one of source.shard_names ({len(self._shards)} shards).",
            )
        return index

    def num_rows(self, shard: str | int) -> int:
        """The row count of a shard, from its metadata only."""
        return self.shard_meta(self.shard_index(shard)).num_rows

    def row_counts(self) -> list[int]:
        """The row count of every shard (metadata read in parallel, then cached)."""
        return [meta.num_rows for meta in self.all_meta()]

    def __len__(self) -> int:
        return sum(self.row_counts())

    @property
    def schema(self) -> pa.Schema | None:
        """The (projected) schema shared by all shards, from the first shard's metadata, as
        ``reading_schema`` gives it (every field nullable: shards may differ in nullability)."""
        meta = self.shard_meta(0)
        cached = self.__dict__.get("_reading_schema")
        if cached is None or cached[0] is not meta:  # made once (read for every block)
            cached = (meta, None if meta.schema is None else reading_schema(meta.schema))
            self._reading_schema = cached
        return cached[1]

    def all_meta(self) -> list[ShardMeta]:
        """Every shard's metadata, reading what is not cached with a pool of threads.

        On several hosts (``jax.distributed``), host 0 reads the metadata and sends it to the
        others, so the footers are read once per slice, not once per host.
        """
        if len(self._meta) < len(self._shards):
            encoded = self._shared(
                lambda: [_encode(m) for m in self._read_all_meta()],
                f"the metadata of {len(self._shards)} shards from {self._shards[0]!r}",
            )
            with self._meta_lock:
                for i, blob in enumerate(encoded):
                    if i not in self._meta:  # read on host 0
                        self._meta[i] = self._pinned_here(i, _decode(blob))
        return [self._meta[i] for i in range(len(self._shards))]

    def _read_all_meta(self) -> list[ShardMeta]:
        missing = [i for i in range(len(self._shards)) if i not in self._meta]
        if missing:
            self.shard_meta(0)
            with ThreadPoolExecutor(min(self.metadata_threads, len(missing))) as pool:
                list(pool.map(self.shard_meta, missing))
        return [self._meta[i] for i in range(len(self._shards))]

    def _shared(self, compute: Any, what: str) -> Any:
        """``compute()``, here or on host 0 of the slice (see ``metadata_sharing``)."""
        return self.metadata_sharing.share(compute, what=what, key=self._config_key)

    def _settings(self) -> list[Any]:
        """Format options that change what is read (for the hosts' agreement check)."""
        return []

    def shard_meta(self, index: int) -> ShardMeta:
        """One shard's metadata (cached); its schema is checked against the first shard's."""
        meta = self._meta.get(index)
        if meta is not None:
            return meta
        path = self._shards[index]
        meta = self._call(path, lambda: self._read_meta(path))
        # Pinned to the version of the listing entry that ``_read_meta`` took its identity from.
        meta = dataclasses.replace(meta, version=self._versions_seen.pop(path, None))
        if index != 0 and meta.schema is not None:
            reference = self.shard_meta(0).schema
            if reference is not None and not (
                meta.schema.equals(reference)  # most often: no need to compare for reading
                or reading_schema(meta.schema).equals(reading_schema(reference))
            ):
                first = self._shards[0]
                raise SchemaMismatchError(
                    f"The schema of {path!r} differs from that of {first!r}: "
                    f"{describe_schema_difference(reference, meta.schema)}.",
                    path=path,
                    hint="All shards of one source must have the same columns, in the same "
                    "order, of the same types (nullability may differ); rewrite the odd shard or "
                    "pass columns= to project (and order) the common ones.",
                )
        with self._meta_lock:
            self._meta[index] = meta
        return meta

    def block_starts(self, shard: str | int) -> Sequence[int]:
        """The first row of each block of a shard: the unit that random access reads at once."""
        return range(0, self.num_rows(shard), self.block_rows)

    @property
    def block_schema(self) -> pa.Schema | None:
        """The schema of ``read_block_table``'s Arrow tables; None: blocks are rows only."""
        return None

    def block_range(self, shard: str | int, block: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of one block of a shard."""
        index = self.shard_index(shard)
        starts = self.block_starts(index)
        stop = starts[block + 1] if block + 1 < len(starts) else self.num_rows(index)
        return starts[block], stop

    def read_block(self, shard: str | int, block: int) -> list[Row | SkippedRow]:
        """All rows of one block of a shard (see ``block_starts``), read in one go; a skipped
        row is a ``SkippedRow`` in its place."""
        index = self.shard_index(shard)
        start, stop = self.block_range(index, block)
        return list(itertools.islice(self.rows_with_gaps(index, start), stop - start))

    def identities(self) -> list[str]:
        """Each shard's name, row count and identity: a fingerprint of the data."""
        return [
            f"{name}|{m.num_rows}|{m.identity}"
            for name, m in zip(self._shards, self.all_meta(), strict=True)
        ]

    # -- for subclasses -------------------------------------------------------------------------

    @abc.abstractmethod
    def _read_meta(self, path: str) -> ShardMeta:
        """Read a shard's metadata from the store."""

    @abc.abstractmethod
    def _read_chunks(self, path: str, meta: ShardMeta, row: int) -> Iterator[list[Row]]:
        """Yield lists of rows of ``path``, starting exactly at ``row``."""

    def _info(self, path: str) -> dict[str, Any]:
        """The file's listing entry (size, etag or mtime); a 0-byte file is corrupt. A request
        is counted unless the listing already holds the entry (fsspec answers from its cache)."""
        info = self._listed_info(path)
        if info is None:
            self.stats.add(requests=1)
            info = self._fs.info(path)
        self._versions_seen[path] = file_version(info, self.protocol)
        if info.get("size") == 0:
            raise CorruptShardError(
                f"{path!r} is empty (0 bytes).",
                path=path,
                hint="Remove it or rewrite it; an interrupted upload leaves such files.",
            )
        return info

    def _listed_info(self, path: str) -> dict[str, Any] | None:
        """The file's entry in the listing that found it (no request), or None."""
        stripped = self._fs._strip_protocol(path)
        folder = self._fs._parent(stripped)
        entries = self._listings.get(folder)
        if entries is None:  # indexed once per folder (threads may race: the same dict)
            entries = self._listings[folder] = listed_entries(self._fs, folder)
        return entries.get(stripped)

    def _open(self, path: str, size: int) -> IO[bytes]:
        """Open a shard: uncached, counted and retried read by read on a store; plain on disk.

        Once the shard's metadata is known, every read is pinned to the version it describes
        (``ShardMeta.version``): a conditional request on a store, an ``os.fstat`` check on disk.
        A file rewritten since raises ``ShardChangedError`` instead of giving its new bytes.
        """
        meta = self._known_meta(path)
        version = meta.version if meta is not None else None
        if self.protocol in REMOTE_PROTOCOLS:
            return RemoteFile(  # type: ignore[return-value]
                lambda: PinnedObject(self._fs, self.protocol, path, version, self.stats),  # type: ignore[arg-type]
                size,
                policy=self.retry,
                stats=self.stats,
            )
        if meta is None:
            return self._fs.open(path, "rb")
        if self.protocol == "file" and version is not None:
            local_path = self._fs._strip_protocol(path)
            return LocalFile(path, local_path, size=meta.size, mtime=version)  # type: ignore[return-value]
        # Other filesystems name no version to pin reads to: compare the identity at each open
        # (one more request), which misses a change between this check and the reads.
        self.stats.add(requests=1)
        current = file_identity(self._fs.info(path))
        if current != meta.identity:
            raise shard_changed(path, f"identity {meta.identity} then, {current} now")
        return self._fs.open(path, "rb")

    def _known_meta(self, path: str) -> ShardMeta | None:
        """The metadata of shard ``path`` if it has been read (reads are pinned to it)."""
        index = self._positions.get(self._key(path))
        return None if index is None else self._meta.get(index)

    def _pinned_here(self, index: int, meta: ShardMeta) -> ShardMeta:
        """Metadata read on host 0, pinned to this host's copy of a local file when its size
        agrees (a copy's mtime differs from host 0's; another size fails the first read)."""
        if self.protocol != "file":
            return meta
        stat = os.stat(self._fs._strip_protocol(self._shards[index]))
        if stat.st_size != meta.size:
            return meta
        return dataclasses.replace(meta, version=str(stat.st_mtime))

    def _call(self, path: str, fn: Any) -> Any:
        """Run a metadata read under the retry policy, turning store errors into clear ones
        (a read that gave up after its own retries is not retried again)."""
        attempts = self.retry.attempts(self.stats)
        try:
            return attempts.call(fn)
        except Exception as exc:
            error = storage_error(
                exc, path, retries=attempts.retries, what="Reading the metadata of"
            )
            if error is None:
                raise
            raise error from exc

    @staticmethod
    def _key(name: str) -> str:
        """A shard name normalised for lookup: no scheme for URLs, absolute for local paths."""
        if not isinstance(name, str):
            return repr(name)
        return name.split("://", 1)[1].lstrip("/") if "://" in name else os.path.abspath(name)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_meta_lock"], state["_fs"]
        state["_listings"] = {}  # the new process's filesystem has not listed
        state["_first_url"] = self._shards[0]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        first_url = state.pop("_first_url")
        self.__dict__.update(state)
        self._meta_lock = threading.Lock()
        self._fs = filesystem_for(first_url, self.storage_options, self.retry)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._shards)} shards, first={self._shards[0]!r})"
