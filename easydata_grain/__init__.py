"""easydata-grain: Grain data loading for JAX, with exact resume from Orbax checkpoints."""

from easydata_grain.checkpoint import LoaderRestore, LoaderSave
from easydata_grain.distributed import Hosts, make_global_batch
from easydata_grain.io.errors import (
    AccessDeniedError,
    CollateError,
    CommitNotFoundError,
    CorruptShardError,
    HostMismatchError,
    ListingError,
    LoaderStateError,
    MalformedRowError,
    MissingColumnError,
    NoFilesMatchedError,
    NotResumableError,
    OfflineError,
    RetriesExhaustedError,
    RowOutOfRangeError,
    SchemaMismatchError,
    ShardChangedError,
    ShardNotFoundError,
    SourceError,
    UnsupportedFormatError,
)
from easydata_grain.io.retry import NO_RETRY, RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.loader import AsyncDataLoader
from easydata_grain.order import EpochOrder
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.datasets_stream import DatasetsStreamSource
from easydata_grain.sources.huggingface import HuggingFaceShardedSource
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import (
    ColumnarSource,
    IndexedSource,
    ShardedSource,
    SkippingSource,
)
from easydata_grain.sources.skipped import SkippedRow
from easydata_grain.transforms.collate import Collate

__all__ = [
    "NO_RETRY",
    "AccessDeniedError",
    "AsyncDataLoader",
    "Collate",
    "CollateError",
    "ColumnarSource",
    "CommitNotFoundError",
    "ConcatSource",
    "CorruptShardError",
    "DatasetsStreamSource",
    "EpochOrder",
    "HostMismatchError",
    "Hosts",
    "HuggingFaceShardedSource",
    "IOStats",
    "InMemorySource",
    "IndexedSource",
    "JsonShardedSource",
    "ListingError",
    "LoaderRestore",
    "LoaderSave",
    "LoaderStateError",
    "MalformedRowError",
    "MissingColumnError",
    "NoFilesMatchedError",
    "NotResumableError",
    "OfflineError",
    "ParquetShardedSource",
    "RetriesExhaustedError",
    "RetryPolicy",
    "RowOutOfRangeError",
    "SchemaMismatchError",
    "ShardChangedError",
    "ShardNotFoundError",
    "ShardedSource",
    "SkippedRow",
    "SkippingSource",
    "SourceError",
    "UnsupportedFormatError",
    "make_global_batch",
]
