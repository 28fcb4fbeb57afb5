"""``easydata-grain inspect URL``: a dataset's shards, rows and schema, and the plan
``AsyncDataLoader`` compiles for it (mode, order, batching, prefetch, resume rule)."""

from __future__ import annotations

from easydata_grain.commands.url_source import file_sources
from easydata_grain.loader import AsyncDataLoader
from easydata_grain.sources.concat import field_kinds
from easydata_grain.sources.file_source import FileShardedSource

SHARDS_SHOWN = 20


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _describe_source(source: FileShardedSource) -> list[str]:
    metas = source.all_meta()
    total = sum(m.num_rows for m in metas)
    lines = [
        f"{type(source).__name__}: {len(metas)} shard(s), {total:,} rows, "
        f"{_size(sum(m.size for m in metas))}"
    ]
    width = max(len(name) for name in source.shard_names[:SHARDS_SHOWN])
    for name, meta in list(zip(source.shard_names, metas, strict=True))[:SHARDS_SHOWN]:
        lines.append(f"  {name:{width}}  {meta.num_rows:>10,} rows  {_size(meta.size):>9}")
    if len(metas) > SHARDS_SHOWN:
        lines.append(f"  ... and {len(metas) - SHARDS_SHOWN} more shard(s)")
    if source.schema is not None:
        lines.append("schema (from the first shard's footer):")
        lines += [f"  {field.name}: {field.type}" for field in source.schema]
    else:
        lines.append("fields (of the first row; what each becomes in a batch):")
        kinds = field_kinds(source)
        lines += [
            f"  {name}: {kind or 'unknown (null or a nested value)'}"
            for name, kind in kinds.items()
        ]
    return lines


def inspect_url(
    url: str, *, batch_size: int = 8, shuffle_buffer_size: int | None = None, seed: int = 0
) -> str:
    """The shards, rows and schema of the Parquet or JSON files at ``url``, and the plan an
    ``AsyncDataLoader`` over them with these settings compiles (``loader.describe()``)."""
    sources = file_sources(url)
    lines = [url]
    for source in sources:
        lines += _describe_source(source)
    loader = AsyncDataLoader(
        sources[0] if len(sources) == 1 else sources,
        batch_size=batch_size,
        shuffle_buffer_size=shuffle_buffer_size,
        seed=seed,
    )
    try:
        lines.append(loader.describe())
    finally:
        loader.close()
    return "\n".join(lines)
