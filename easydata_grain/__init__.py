"""easydata-grain: Grain data loading for JAX, with exact resume from Orbax checkpoints."""

from easydata_grain.checkpoint import LoaderRestore, LoaderSave
from easydata_grain.io.errors import (
    AccessDeniedError,
    CorruptShardError,
    ListingError,
    MalformedRowError,
    MissingColumnError,
    NoFilesMatchedError,
    NotResumableError,
    RetriesExhaustedError,
    RowOutOfRangeError,
    SchemaMismatchError,
    ShardChangedError,
    ShardNotFoundError,
    SourceError,
)
from easydata_grain.io.retry import NO_RETRY, RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.loader import AsyncDataLoader, LoaderStateError
from easydata_grain.order import EpochOrder
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import ShardedSource
from easydata_grain.transforms.collate import Collate, CollateError

__all__ = [
    "NO_RETRY",
    "AccessDeniedError",
    "AsyncDataLoader",
    "Collate",
    "CollateError",
    "ConcatSource",
    "CorruptShardError",
    "EpochOrder",
    "IOStats",
    "JsonShardedSource",
    "ListingError",
    "LoaderRestore",
    "LoaderSave",
    "LoaderStateError",
    "MalformedRowError",
    "MissingColumnError",
    "NoFilesMatchedError",
    "NotResumableError",
    "ParquetShardedSource",
    "RetriesExhaustedError",
    "RetryPolicy",
    "RowOutOfRangeError",
    "SchemaMismatchError",
    "ShardChangedError",
    "ShardNotFoundError",
    "ShardedSource",
    "SourceError",
]
