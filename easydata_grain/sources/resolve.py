"""What the loader accepts as a source: sources, paths, in-memory data; anything else is an error."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import UnsupportedFormatError
from easydata_grain.io.filesystem import filesystem_for
from easydata_grain.io.listing import expand_paths
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource, compression_of
from easydata_grain.sources.metadata_sharing import default_sharing
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import ShardedSource
from easydata_grain.sources.transformed import TransformedShardedSource
from easydata_grain.transforms.fields import SelectFields

_WHAT_TO_PASS = (
    "Pass a source (ParquetShardedSource, JsonShardedSource, a datasets Dataset or "
    "IterableDataset), a path or glob of .parquet/.jsonl/.json files (or a list of them), "
    "in-memory rows (a list of dicts, a dict of columns, a pyarrow Table), or a list of sources."
)
_EXTENSIONS = (
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "json"),
)
_HEAD_BYTES = 4096
_BOM = b"\xef\xbb\xbf"
_PARQUET_MAGIC = b"PAR1"
_JSON_SPACE = b" \t\r\n"


def format_of(path: str) -> str | None:
    """``"parquet"``, ``"jsonl"``, ``"json"`` by a path's extension, in any case (compression
    ignored); None when the extension names none."""
    lowered = path.lower()
    codec = compression_of(lowered)
    stem = lowered.rsplit(".", 1)[0] if codec else lowered
    for suffix, kind in _EXTENSIONS:
        if stem.endswith(suffix):
            return kind
    return None


def _head(fs: Any, path: str, retry: RetryPolicy, *, decompress: bool) -> bytes:
    """The first bytes of a file, decompressed (by its extension) when asked."""
    codec = compression_of(path.lower()) if decompress else None

    def read() -> bytes:
        with fs.open(path, "rb", compression=codec) as handle:
            return handle.read(_HEAD_BYTES)

    return retry.call(read)


def _json_start(head: bytes) -> bytes:
    """The first byte of JSON text past an optional BOM and whitespace."""
    return head.removeprefix(_BOM).lstrip(_JSON_SPACE)[:1]


def json_holds_lines(
    path: str, storage_options: dict[str, Any] | None = None, retry: RetryPolicy | None = None
) -> bool:
    """Whether a JSON file holds JSON Lines (True) or one array of objects (False), from its
    content, whatever its extension: the first byte past an optional BOM and whitespace, once
    decompressed, ``[`` for an array, anything else (``{``) for lines. ``.jsonl`` and
    ``.ndjson`` files are lines without a read. The one rule for ``AsyncDataLoader``, the
    pipeline and the commands."""
    if format_of(path) == "jsonl":
        return True
    retry = retry or RetryPolicy()
    fs = filesystem_for(path, storage_options, retry)
    return _json_start(_head(fs, path, retry, decompress=True)) != b"["


def sniff_format(path: str, fs: Any, retry: RetryPolicy) -> str:
    """``"parquet"`` (the magic ``PAR1`` first) or ``"json"`` (``{`` or ``[`` first, past a
    BOM and whitespace, decompressed by the extension) from a file's content; an error naming
    the file otherwise."""
    if _head(fs, path, retry, decompress=False).startswith(_PARQUET_MAGIC):
        return "parquet"
    if _json_start(_head(fs, path, retry, decompress=True)) in (b"{", b"["):
        return "json"
    raise UnsupportedFormatError(
        f"{path!r} is neither Parquet (no PAR1 magic) nor JSON (no '{{' or '[' first), and "
        "its extension names no format.",
        path=path,
        hint="Name the format: set the dataset's type (parquet, jsonl or json), or give the "
        "files a .parquet/.jsonl/.json extension.",
    )


def _family(kind: str) -> str:
    return "parquet" if kind == "parquet" else "json"


def _listed_format(
    patterns: list[str], storage_options: dict[str, Any] | None, retry: RetryPolicy
) -> tuple[str, list[str]]:
    """The one format of the files that ``patterns`` match, and the files to read: those
    whose extension names it (in any case; others, like ``_SUCCESS``, are left out), else,
    when no extension names one, every file, by the first file's content. Files of several
    formats are an error naming one of each. Listed and sniffed once per slice, on host 0
    (``default_sharing``)."""
    fs = filesystem_for(patterns[0], storage_options, retry)

    def listed() -> list[Any]:
        return list(_format_of_listing(patterns, fs, retry))

    key = digest(["listed_format", patterns, sorted(storage_options or {})])
    kind, files = default_sharing().share(listed, what=f"the format of {patterns}", key=key)
    return kind, files


def _format_of_listing(patterns: list[str], fs: Any, retry: RetryPolicy) -> tuple[str, list[str]]:
    """``_listed_format``'s result, computed here."""
    files = expand_paths(fs, patterns, policy=retry, stats=IOStats())
    by_family: dict[str, list[str]] = {}
    for name in files:
        if (kind := format_of(name)) is not None:
            by_family.setdefault(_family(kind), []).append(name)
    if not by_family:
        return sniff_format(files[0], fs, retry), files
    if len(by_family) > 1:
        examples = ", ".join(f"{names[0]!r} ({kind})" for kind, names in sorted(by_family.items()))
        raise UnsupportedFormatError(
            f"{', '.join(map(repr, patterns))} match files of several formats: {examples}.",
            path=patterns[0],
            hint="One dataset reads one format: give a glob per format (e.g. 'dir/*.parquet') "
            "and make each its own dataset or source.",
        )
    return next(iter(by_family.items()))


def file_source(
    paths: str | list[str],
    kind: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    columns: list[str] | None = None,
    metadata_cache_dir: str | None = None,
) -> Any:
    """The file source of ``paths`` (paths, globs, directories or URLs of one format) with
    every option, whatever their spelling. ``kind`` (``parquet``, ``jsonl``, ``json``) names
    the format; None: the paths' extensions, else the matched files' extensions, else the
    first file's content. JSON Lines or a JSON array comes from the content
    (``json_holds_lines``) unless ``kind`` is ``jsonl``. ``columns`` projects (in the Parquet
    reader; on JSON rows as they are read, before any rename)."""
    patterns = [paths] if isinstance(paths, str) else list(paths)
    retry = retry or RetryPolicy()
    if kind is None:
        kinds = {format_of(p) for p in patterns}
        known = {_family(k) for k in kinds if k is not None}
        if len(known) == 1 and None not in kinds:
            kind = known.pop()
        else:
            kind, patterns = _listed_format(patterns, storage_options, retry)
    if kind == "parquet":
        return ParquetShardedSource(
            patterns,
            storage_options,
            columns,
            retry=retry,
            metadata_cache_dir=metadata_cache_dir,
        )
    if kind not in ("json", "jsonl"):
        raise ValueError(f"kind must be 'parquet', 'jsonl', 'json' or None, got {kind!r}")
    source = JsonShardedSource(
        patterns,
        jsonl=True,
        storage_options=storage_options,
        retry=retry,
        index_cache_dir=metadata_cache_dir,
    )
    if kind == "json" and source.shard_names:
        first = source.shard_names[0]
        if not json_holds_lines(first, storage_options, retry):
            source = JsonShardedSource(
                patterns,
                jsonl=False,
                storage_options=storage_options,
                retry=retry,
                index_cache_dir=metadata_cache_dir,
            )
    if columns:
        return TransformedShardedSource(source, [SelectFields(columns)])
    return source


def source_from_paths(paths: list[str]) -> Any:
    """The file source for paths and globs (``file_source``), grouped by their extension
    (directories and globs it does not decide by the files they match); paths of several
    formats become one source per format, read one after the other (checked against each
    other)."""
    groups: dict[str | None, list[str]] = {}
    for path in paths:
        groups.setdefault(format_of(path), []).append(path)
    sources = [file_source(group, kind) for kind, group in groups.items()]
    return sources[0] if len(sources) == 1 else ConcatSource(sources)


def _is_path(value: Any) -> bool:
    return isinstance(value, str | PurePath | os.PathLike)


def resolve_source(value: Any) -> Any:
    """A source for what the user passed as ``source`` (one item, not a list of sources).

    A path (``str`` or ``Path``, a glob, or a list of them) builds the file source its
    extension names; rows in memory (a list of dicts, a dict of columns, a pyarrow Table, a
    pandas or polars DataFrame, a map-style ``datasets.Dataset``) become an ``InMemorySource``
    (indexed mode); sources and iterables of rows (a ``datasets.IterableDataset``) pass as they
    are. Anything else raises a ``TypeError`` that says what to pass.
    """
    if _is_path(value):
        return source_from_paths([os.fspath(value)])
    if isinstance(value, list | tuple) and value and all(_is_path(v) for v in value):
        return source_from_paths([os.fspath(v) for v in value])
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        return InMemorySource.from_rows(value)
    if isinstance(value, pa.Table):
        return InMemorySource(value)
    if isinstance(value, Mapping):
        if not value or not all(
            isinstance(v, list | tuple) or hasattr(v, "__len__") for v in value.values()
        ):
            raise TypeError(
                f"A dict source must map field names to columns of equal length, got {value!r:.200}. "
                + _WHAT_TO_PASS
            )
        return InMemorySource.from_columns(value)
    module = type(value).__module__.split(".")[0]
    if module == "datasets" and type(value).__name__ == "Dataset":
        return InMemorySource.from_dataset(value)
    if module == "pandas" and type(value).__name__ == "DataFrame":
        return InMemorySource(pa.Table.from_pandas(value, preserve_index=False))
    if module == "polars" and type(value).__name__ == "DataFrame":
        return InMemorySource(value.to_arrow())
    if isinstance(value, ShardedSource):
        return value
    if (
        isinstance(value, Iterable)
        and module != "numpy"
        and not isinstance(value, str | bytes | list | tuple | set | frozenset)
    ):
        return value
    raise TypeError(
        f"Cannot read rows from a {type(value).__name__} ({value!r:.100}). {_WHAT_TO_PASS}"
    )


def resolve_sources(value: Any) -> list[Any]:
    """The sources for ``AsyncDataLoader(source=...)``: one, or one per item of a list of
    sources (a list of paths or of rows is one source)."""
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(
                f"source is an empty {type(value).__name__}: pass a non-empty list of sources. "
                + _WHAT_TO_PASS
            )
        if all(_is_path(v) for v in value) or all(isinstance(v, Mapping) for v in value):
            return [resolve_source(value)]
        return [_resolve_part(v) for v in value]
    return [resolve_source(value)]


def _resolve_part(value: Any) -> Any:
    if isinstance(value, list | tuple):
        raise TypeError(
            f"A list of sources cannot hold another list ({value!r:.100}). {_WHAT_TO_PASS}"
        )
    return resolve_source(value)
