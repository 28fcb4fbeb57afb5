"""The dataset at a URL, as the commands read it: the file source its extension names."""

from __future__ import annotations

from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.file_source import FileShardedSource
from easydata_grain.sources.resolve import source_from_paths


def file_sources(url: str) -> list[FileShardedSource]:
    """The file sources of a path, glob, directory or store URL (one per format found)."""
    source = source_from_paths([url])
    parts = source.parts if isinstance(source, ConcatSource) else [source]
    for part in parts:
        if not isinstance(part, FileShardedSource):
            raise TypeError(f"{url}: expected Parquet or JSON files, got a {type(part).__name__}")
    return parts
