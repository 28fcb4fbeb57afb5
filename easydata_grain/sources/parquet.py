"""ParquetShardedSource: row counts from footers, column projection, O(1) row-group seek."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import IO, Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import CorruptShardError, MissingColumnError
from easydata_grain.io.remote_file import RemoteFile, check_local_file
from easydata_grain.io.resumable_rows import resumable_chunks
from easydata_grain.io.retry import RetryPolicy, is_storage_fault
from easydata_grain.sources.arrow_rows import batch_to_rows
from easydata_grain.sources.file_source import FileShardedSource, Row, ShardMeta, file_identity
from easydata_grain.sources.metadata_cache import MetadataCache
from easydata_grain.sources.metadata_sharing import MetadataSharing
from easydata_grain.sources.protocol import columns_to_keep, projected_identities
from easydata_grain.transforms.fluent import TransformableSource


@dataclasses.dataclass(frozen=True)
class ParquetIndex:
    """A Parquet footer and the first row of each row group."""

    metadata: pq.FileMetaData
    group_starts: tuple[int, ...]

    def group_of(self, row: int) -> int:
        """The row group that holds ``row``."""
        return bisect.bisect_right(self.group_starts, row) - 1


_MAGIC = b"PAR1"
_CHECKSUM_FAILURE = "CRC checksum verification failed"
_TAIL_BYTES = 16 * 1024
# Column chunks closer than this are fetched in one request (a round trip costs more).
_COALESCE_GAP = 64 * 1024


def selected_column_chunks(
    metadata: pq.FileMetaData, group: int, columns: Sequence[str] | None
) -> Iterator[pq.ColumnChunkMetaData]:
    """The column chunks of a row group that belong to ``columns`` (all for None)."""
    row_group = metadata.row_group(group)
    for i in range(row_group.num_columns):
        chunk = row_group.column(i)
        path = chunk.path_in_schema
        if columns is None or any(path == name or path.startswith(name + ".") for name in columns):
            yield chunk


def column_chunk_ranges(
    metadata: pq.FileMetaData, group: int, columns: Sequence[str] | None
) -> list[tuple[int, int]]:
    """The byte ranges ``[start, stop)`` of a row group's column chunks (of ``columns``, or
    all), sorted, with ranges less than ``_COALESCE_GAP`` apart merged."""
    ranges = []
    for chunk in selected_column_chunks(metadata, group, columns):
        start = chunk.data_page_offset
        if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
            start = chunk.dictionary_page_offset
        ranges.append((start, start + chunk.total_compressed_size))
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if merged and start - merged[-1][1] < _COALESCE_GAP:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def check_footer_fits(metadata: pq.FileMetaData, size: int) -> None:
    """Raise ValueError unless the footer's last row group lies within a file of ``size``
    bytes (a footer of another, smaller file does not)."""
    if metadata.num_row_groups:
        ranges = column_chunk_ranges(metadata, metadata.num_row_groups - 1, None)
        if ranges and ranges[-1][1] > size:
            raise ValueError(f"a column chunk beyond the file's size ({size} bytes)")


def read_footer(handle: IO[bytes], size: int, path: str) -> pq.FileMetaData:
    """A Parquet footer in one small tail read (two when the footer is larger than the tail).

    pyarrow's own footer read fetches 64 KiB; for many small shards on a store that is most of
    the bytes a projected read transfers.
    """
    tail_size = min(size, _TAIL_BYTES)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    footer_size = int.from_bytes(tail[-8:-4], "little") if len(tail) >= 8 else -1
    if tail[-4:] != _MAGIC or footer_size < 0 or footer_size + 12 > size:
        raise CorruptShardError(
            f"{path!r} is not a Parquet file or is truncated (no valid footer at its end).",
            path=path,
            hint="The file is corrupt or truncated (or not Parquet); rewrite or remove it.",
        )
    if footer_size + 8 <= tail_size:
        footer = tail[-8 - footer_size : -8]
    else:
        handle.seek(size - 8 - footer_size)
        footer = handle.read(footer_size)
    return pq.read_metadata(pa.BufferReader(_MAGIC + footer + tail[-8:]))


class ParquetShardedSource(TransformableSource, FileShardedSource):
    """Parquet files (a path, a glob or a list) on local disk, ``gs://``, ``s3://`` or ``az://``.

    Row counts and the schema come from the footers alone. ``columns`` projects: only those
    column chunks are read (and downloaded); the loader projects further to the columns its
    transforms read (``with_columns``). ``open_shard_at_row`` seeks with the row-group
    metadata and reads nothing before the target row group. Rows are dicts; numeric list
    columns (token ids) are read-only numpy views of Arrow's buffers unless
    ``numpy_lists=False``.

    With ``metadata_cache_dir`` (off by default) each footer read is kept on local disk,
    keyed by the file's URL and identity (size plus etag, generation or mtime): a later source
    over the same files reads no footer, and a rewritten file is read again (see
    ``metadata_cache``). ``JsonShardedSource``'s ``index_cache_dir`` may be the same directory.

    Pages written with checksums (``write_page_checksum=True``) are verified as they are read:
    a damaged page raises ``CorruptShardError`` naming the file and row group.

    Arrow never calls back into Python: local files are native Arrow files, and on a store a
    row group's column chunks are fetched by the reading thread (coalesced, retried) before
    Arrow decodes them. (Arrow's own pre-buffering would read a Python file from its I/O
    threads, which abort the interpreter if it exits while such a read is in flight.)
    """

    suffixes: ClassVar[tuple[str, ...]] = (".parquet", ".pq")

    def __init__(
        self,
        paths: str | Sequence[str],
        storage_options: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        share_listing: bool = True,
        metadata_sharing: MetadataSharing | None = None,
        batch_size: int = 4096,
        numpy_lists: bool = True,
        metadata_cache_dir: str | os.PathLike[str] | None = None,
    ):
        if columns is not None and (
            isinstance(columns, str) or not columns or not all(isinstance(c, str) for c in columns)
        ):
            raise TypeError(f"columns must be a non-empty list of column names, got {columns!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.columns = list(columns) if columns is not None else None
        self._built_columns = self.columns  # with_columns's copies keep it: see identities()
        self.batch_size = batch_size
        self.numpy_lists = bool(numpy_lists)
        self.metadata_cache = (
            None if metadata_cache_dir is None else MetadataCache(metadata_cache_dir)
        )
        """Where footers are kept between runs (``metadata_cache_dir``); None: not kept."""
        super().__init__(
            paths,
            storage_options,
            retry=retry,
            share_listing=share_listing,
            metadata_sharing=metadata_sharing,
        )

    def _settings(self) -> list[Any]:
        return [self.columns, self.numpy_lists]

    def identities(self) -> list[str]:
        """Each shard's name, row count and identity, with the ``columns`` it was built with."""
        return projected_identities(super().identities(), self._built_columns)

    # -- the ProjectableSource protocol ----------------------------------------------------------

    @property
    def column_names(self) -> list[str]:
        """The columns of its rows (``columns`` when given), from the footers (read once, and
        on several hosts by host 0 alone: see ``all_meta``)."""
        self.all_meta()
        return list(self.schema.names)

    def with_columns(self, columns: Collection[str]) -> ParquetShardedSource:
        """This source reading only ``columns`` (kept in its own column order): only their
        column chunks are fetched. The copy shares the listing, the footers (read here for
        every shard, once) and the ``stats`` counters; this source itself when nothing is left
        out."""
        kept = columns_to_keep(self.column_names, columns, self._shards[0])
        if kept == self.column_names:
            return self
        metas = self.all_meta()
        projected = copy.copy(self)
        projected.columns = kept
        projected._meta = {
            i: dataclasses.replace(m, schema=pa.schema([m.schema.field(c) for c in kept]))
            for i, m in enumerate(metas)
        }
        projected._meta_lock = threading.Lock()
        projected._versions_seen = {}
        projected._config_key = digest([self._config_key, kept])
        for cache in ("_chunk_sizes", "_reading_schema"):  # they hold the unprojected columns
            projected.__dict__.pop(cache, None)
        return projected

    def _read_meta(self, path: str) -> ShardMeta:
        info = self._info(path)
        identity = file_identity(info)
        metadata = self._footer(path, info["size"], identity)
        schema = metadata.schema.to_arrow_schema()
        if self.columns is not None:
            missing = [c for c in self.columns if c not in schema.names]
            if missing:
                raise MissingColumnError(
                    f"{path!r} has no column(s) {missing}; its columns are {schema.names}.",
                    path=path,
                    hint="Fix columns= (names are case-sensitive).",
                )
            schema = pa.schema([schema.field(c) for c in self.columns])
        schema = schema.remove_metadata()
        starts, total = [], 0
        for group in range(metadata.num_row_groups):
            starts.append(total)
            total += metadata.row_group(group).num_rows
        return ShardMeta(
            num_rows=metadata.num_rows,
            schema=schema,
            identity=identity,
            size=info["size"],
            index=ParquetIndex(metadata, tuple(starts)),
        )

    def _footer(self, path: str, size: int, identity: str) -> pq.FileMetaData:
        """The footer of ``path`` at ``identity``: from the metadata cache, else read (and
        then kept in the cache)."""
        url = f"{self.protocol}://{self._key(path)}"
        cache = self.metadata_cache
        check = functools.partial(check_footer_fits, size=size)
        metadata = None if cache is None else cache.load(url, identity, check)
        if metadata is not None:
            return metadata
        try:
            with self._open(path, size) as handle:
                metadata = read_footer(handle, size, path)
        except (pa.ArrowInvalid, OSError) as exc:
            if is_storage_fault(exc):
                raise
            raise CorruptShardError(
                f"{path!r} is not a readable Parquet file: {exc}.",
                path=path,
                hint="The file is corrupt or truncated (or not Parquet); rewrite or remove it.",
            ) from exc
        if cache is not None:
            cache.save(url, identity, metadata)
        return metadata

    def _open(self, path: str, size: int) -> IO[bytes]:
        """A native Arrow file on local disk (reads release the GIL); see the base otherwise."""
        if self.protocol == "file":
            local = self.__dict__.setdefault("_local_paths", {})
            if path not in local:
                local[path] = self._fs._strip_protocol(path)
            return pa.OSFile(local[path])  # type: ignore[return-value]
        return super()._open(path, size)

    def block_starts(self, shard: str | int) -> Sequence[int]:
        """Row groups are the blocks of random access: each is read and decoded once."""
        return self.shard_meta(self.shard_index(shard)).index.group_starts

    @property
    def block_schema(self) -> pa.Schema | None:
        """The schema of ``read_block_table``'s tables (None with ``numpy_lists=False``, whose
        rows hold Python lists that a table would not reproduce)."""
        return self.schema if self.numpy_lists else None

    def read_block_table(self, shard: str | int, block: int) -> pa.Table:
        """One row group (the projected columns) as an Arrow table, retried like rows are, with
        the source's ``schema`` (cast when the shard's nullability differs), so that tables of
        all shards agree."""
        index = self.shard_index(shard)
        meta = self.shard_meta(index)
        path = self._shards[index]
        start, stop = self.block_range(index, block)
        wanted = stop - start
        batches: list[pa.RecordBatch] = []
        rows = 0
        if wanted > 0:
            # The row group in one batch (one decode, no concatenation); after a retry, the
            # rest of it from the row reached.
            for batch in resumable_chunks(
                lambda row: self._read_batches(path, meta, row, batch_size=wanted),
                start,
                policy=self.retry,
                stats=self.stats,
                path=path,
            ):
                batches.append(batch.slice(0, wanted - rows))
                rows += batches[-1].num_rows
                if rows >= wanted:
                    break
        schema = self.schema
        if not batches:
            return schema.empty_table()
        table = pa.Table.from_batches(batches)
        if len(batches) > 1:
            table = table.combine_chunks()
        return table if table.schema.equals(schema) else table.cast(schema)

    def table_rows(self, table: pa.Table) -> list[Row]:
        """The dict rows of a table from ``read_block_table``, as ``open_shard`` yields them."""
        return [row for batch in table.to_batches() for row in batch_to_rows(batch, True)]

    def read_block(self, shard: str | int, block: int) -> list[Row]:
        """All rows of one row group."""
        if self.block_schema is None:
            return super().read_block(shard, block)
        return self.table_rows(self.read_block_table(shard, block))

    def _read_chunks(self, path: str, meta: ShardMeta, row: int) -> Iterator[list[Row]]:
        for batch in self._read_batches(path, meta, row):
            yield batch_to_rows(batch, self.numpy_lists)

    def _read_batches(
        self, path: str, meta: ShardMeta, row: int, batch_size: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``path`` starting exactly at ``row``, one row group at a time, of
        at most ``batch_size`` rows (the source's ``batch_size`` by default)."""
        if row >= meta.num_rows:
            return
        index: ParquetIndex = meta.index
        first_group = index.group_of(row)
        skip = row - index.group_starts[first_group]
        check_local = self.protocol == "file" and meta.version is not None
        with self._open(path, meta.size) as handle:

            def unchanged() -> None:
                # Arrow reads a local file natively: its size and mtime are checked here (reads
                # on a store are pinned to the version by the store).
                if check_local:
                    check_local_file(path, handle.fileno(), meta.size, meta.version)

            # Pages written with a CRC (write_page_checksum=True) are verified as they are read:
            # a damaged page is a CorruptShardError, not wrong values.
            reader = pq.ParquetFile(
                handle,
                metadata=index.metadata,
                pre_buffer=False,
                page_checksum_verification=True,
            )
            for group in range(first_group, index.metadata.num_row_groups):
                if isinstance(handle, RemoteFile):
                    # One row group at a time: fetching a range of groups would hold them all.
                    handle.prefetch(column_chunk_ranges(index.metadata, group, self.columns))
                else:  # Arrow reads a local file natively: count the column chunks it reads.
                    self.stats.add(bytes_read=self._chunk_bytes(path, index, group))
                for batch in self._group_batches(
                    reader, path, group, unchanged, batch_size or self.batch_size
                ):
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    if skip:
                        batch = batch.slice(skip)
                        skip = 0
                    yield batch

    def _chunk_bytes(self, path: str, index: ParquetIndex, group: int) -> int:
        """The compressed size of a row group's selected column chunks (computed once)."""
        sizes = self.__dict__.setdefault("_chunk_sizes", {})
        key = (path, group)
        size = sizes.get(key)
        if size is None:
            chunks = selected_column_chunks(index.metadata, group, self.columns)
            size = sizes[key] = sum(c.total_compressed_size for c in chunks)
        return size

    def _group_batches(
        self,
        reader: pq.ParquetFile,
        path: str,
        group: int,
        unchanged: Callable[[], None],
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        """The record batches of one row group, each given out once ``unchanged()`` has checked
        that the file is still the one its metadata describes; undecodable data is a
        CorruptShardError (or, when the file changed under the read, a ShardChangedError)."""
        batches = reader.iter_batches(
            batch_size=batch_size, row_groups=[group], columns=self.columns, use_threads=False
        )
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
                # A checksum failure's page number may look like an HTTP status to is_transient.
                if is_storage_fault(exc) and _CHECKSUM_FAILURE not in str(exc):
                    raise
                unchanged()
                raise CorruptShardError(
                    f"{path!r} is corrupt in row group {group}: {exc}.",
                    path=path,
                    hint="Rewrite or remove the file.",
                ) from exc
            if batch is None:
                return
            unchanged()
            yield batch
