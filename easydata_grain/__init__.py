"""easydata-grain: Grain data loading for JAX, with exact resume from Orbax checkpoints."""

from easydata_grain.io.errors import (
    AccessDeniedError,
    CorruptShardError,
    ListingError,
    MalformedRowError,
    MissingColumnError,
    NoFilesMatchedError,
    RetriesExhaustedError,
    RowOutOfRangeError,
    SchemaMismatchError,
    ShardNotFoundError,
    SourceError,
)
from easydata_grain.io.retry import NO_RETRY, RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import ShardedSource

__all__ = [
    "NO_RETRY",
    "AccessDeniedError",
    "CorruptShardError",
    "IOStats",
    "JsonShardedSource",
    "ListingError",
    "MalformedRowError",
    "MissingColumnError",
    "NoFilesMatchedError",
    "ParquetShardedSource",
    "RetriesExhaustedError",
    "RetryPolicy",
    "RowOutOfRangeError",
    "SchemaMismatchError",
    "ShardNotFoundError",
    "ShardedSource",
    "SourceError",
]
