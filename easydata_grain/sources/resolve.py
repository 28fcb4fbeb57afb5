"""What the loader accepts as a source: sources, paths, in-memory data; anything else is an error."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import pyarrow as pa

from easydata_grain.io.errors import NoFilesMatchedError
from easydata_grain.io.filesystem import protocol_of
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource, compression_of
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import ShardedSource

_WHAT_TO_PASS = (
    "Pass a source (ParquetShardedSource, JsonShardedSource, a datasets Dataset or "
    "IterableDataset), a path or glob of .parquet/.jsonl/.json files (or a list of them), "
    "in-memory rows (a list of dicts, a dict of columns, a pyarrow Table), or a list of sources."
)


def format_of(path: str) -> str | None:
    """``"parquet"``, ``"jsonl"``, ``"json"`` by a path's extension (compression ignored)."""
    codec = compression_of(path)
    stem = path.rsplit(".", 1)[0] if codec else path
    for suffix, kind in ((".parquet", "parquet"), (".pq", "parquet"), (".jsonl", "jsonl")):
        if stem.endswith(suffix):
            return kind
    if stem.endswith(".ndjson"):
        return "jsonl"
    return "json" if stem.endswith(".json") else None


def _formats_in_directory(path: str) -> set[str]:
    """The formats of the files under a local directory."""
    found = set()
    for _, _, files in os.walk(path):
        found.update(kind for name in files if (kind := format_of(name)) is not None)
    return found


def _is_json_array(path: str) -> bool:
    """Whether a local, uncompressed ``.json`` file holds one JSON array (starts with ``[``)."""
    if protocol_of(path) != "file" or compression_of(path) or not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip()[:1] == b"["


def _kind_of(path: str) -> str | None:
    """A path's format; a local directory's when all its files have one."""
    kind = format_of(path)
    if kind is None and protocol_of(path) == "file" and os.path.isdir(path):
        found = _formats_in_directory(path)
        if len(found) > 1:
            raise ValueError(
                f"The directory {path!r} holds files of several formats ({sorted(found)}): pass "
                "a glob for each (e.g. 'dir/*.parquet') or build the sources yourself."
            )
        return found.pop() if found else None
    return kind


def _file_source(paths: list[str], kind: str | None) -> Any:
    """The file source of one format for ``paths``."""
    if kind == "parquet":
        return ParquetShardedSource(paths)
    if kind in ("json", "jsonl"):
        jsonl = kind == "jsonl" or not all(_is_json_array(p) for p in paths)
        return JsonShardedSource(paths, jsonl=jsonl)
    try:
        return ParquetShardedSource(paths)
    except NoFilesMatchedError:
        return JsonShardedSource(paths)


def source_from_paths(paths: list[str]) -> Any:
    """The file source for paths and globs, chosen by their extension; paths of several formats
    become one source per format, read one after the other (checked against each other)."""
    groups: dict[str | None, list[str]] = {}
    for path in paths:
        groups.setdefault(_kind_of(path), []).append(path)
    sources = [_file_source(group, kind) for kind, group in groups.items()]
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
