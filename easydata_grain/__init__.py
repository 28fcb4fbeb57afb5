"""easydata-grain: Grain data loading for JAX, with exact resume from Orbax checkpoints."""

from easydata_grain.checkpoint import LoaderRestore, LoaderSave
from easydata_grain.config import (
    CacheStageConfig,
    DatasetConfig,
    LoadStageConfig,
    MixStageConfig,
    ObservabilityConfig,
    PackStageConfig,
    PipelineConfig,
    RayConfig,
    SaveStageConfig,
    SourceStageConfig,
    TokenizerConfig,
    TokenizeStageConfig,
    WeightSchedulePoint,
    load_config,
)
from easydata_grain.device_loader import DeviceLoader
from easydata_grain.distributed import Hosts, make_global_batch
from easydata_grain.graph.pack import Pack, PackIterDataset
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
    NotSupportedYetError,
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
from easydata_grain.pipeline import Pipeline
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.datasets_stream import DatasetsStreamSource
from easydata_grain.sources.head import HeadSource
from easydata_grain.sources.huggingface import HuggingFaceShardedSource
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import (
    ColumnarSource,
    DescribedSource,
    IndexedSource,
    ShardedSource,
    SkippingSource,
)
from easydata_grain.sources.skipped import SkippedRow
from easydata_grain.sources.transformed import TransformedShardedSource
from easydata_grain.transforms.base import BatchMap, FieldTransform, Fingerprinted
from easydata_grain.transforms.chain import Chain, MapChain, chain, flatten_transforms
from easydata_grain.transforms.chat import ChatTemplateTransform
from easydata_grain.transforms.chatml import ConvertInputOutputToChatML, ConvertToChatML
from easydata_grain.transforms.chunked import ChunkedMapDataset, ChunkedMapIterDataset
from easydata_grain.transforms.collate import Collate
from easydata_grain.transforms.fields import (
    AddField,
    CombineFields,
    DropFields,
    ExtractField,
    MapField,
    RenameFields,
    SelectFields,
)
from easydata_grain.transforms.filters import FilterByField, FilterNonEmpty
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.transforms.functions import FilterFunction, MapFunction
from easydata_grain.transforms.tokenize import TokenizeTransform
from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint

__all__ = [
    "NO_RETRY",
    "AccessDeniedError",
    "AddField",
    "AsyncDataLoader",
    "BatchMap",
    "CacheStageConfig",
    "Chain",
    "ChatTemplateTransform",
    "ChunkedMapDataset",
    "ChunkedMapIterDataset",
    "Collate",
    "CollateError",
    "ColumnarSource",
    "CombineFields",
    "CommitNotFoundError",
    "ConcatSource",
    "ConvertInputOutputToChatML",
    "ConvertToChatML",
    "CorruptShardError",
    "DatasetConfig",
    "DatasetsStreamSource",
    "DescribedSource",
    "DeviceLoader",
    "DropFields",
    "EpochOrder",
    "ExtractField",
    "FieldTransform",
    "FilterByField",
    "FilterFunction",
    "FilterNonEmpty",
    "Fingerprinted",
    "HeadSource",
    "HostMismatchError",
    "Hosts",
    "HuggingFaceShardedSource",
    "IOStats",
    "InMemorySource",
    "IndexedSource",
    "JsonShardedSource",
    "ListingError",
    "LoadStageConfig",
    "LoaderRestore",
    "LoaderSave",
    "LoaderStateError",
    "MalformedRowError",
    "MapChain",
    "MapField",
    "MapFunction",
    "MissingColumnError",
    "MixStageConfig",
    "MixedShardedSource",
    "NoFilesMatchedError",
    "NotResumableError",
    "NotSupportedYetError",
    "ObservabilityConfig",
    "OfflineError",
    "Pack",
    "PackIterDataset",
    "PackStageConfig",
    "ParquetShardedSource",
    "Pipeline",
    "PipelineConfig",
    "RayConfig",
    "RenameFields",
    "RetriesExhaustedError",
    "RetryPolicy",
    "RowOutOfRangeError",
    "SaveStageConfig",
    "SchemaMismatchError",
    "SelectFields",
    "ShardChangedError",
    "ShardNotFoundError",
    "ShardedSource",
    "SkippedRow",
    "SkippingSource",
    "SourceError",
    "SourceStageConfig",
    "TokenizeStageConfig",
    "TokenizeTransform",
    "TokenizerConfig",
    "TransformableSource",
    "TransformedShardedSource",
    "UnsupportedFormatError",
    "WeightSchedulePoint",
    "chain",
    "flatten_transforms",
    "load_config",
    "make_global_batch",
    "tokenizer_fingerprint",
]
