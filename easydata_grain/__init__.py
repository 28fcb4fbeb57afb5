"""easydata-grain: Grain data loading for JAX, with exact resume from Orbax checkpoints.

Names are imported on first use (``__getattr__``), so ``import easydata_grain`` and the
command's ``--help`` do not load JAX, Grain or pyarrow until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from easydata_grain.graph.chunked_map import ChunkedMapDataset, ChunkedMapIterDataset
    from easydata_grain.graph.mix import MixedMapDataset
    from easydata_grain.graph.pack import Pack, PackIterDataset
    from easydata_grain.io.errors import (
        AccessDeniedError,
        CacheRebuiltWarning,
        CollateError,
        CommitNotFoundError,
        CorruptShardError,
        HostMismatchError,
        ListingError,
        LoaderStateError,
        MalformedRowError,
        ManifestMismatchError,
        MissingColumnError,
        NoFilesMatchedError,
        NotResumableError,
        NotSupportedYetError,
        OfflineError,
        OutputExistsError,
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
    from easydata_grain.op_protocols import BatchMap, FieldTransform, Fingerprinted
    from easydata_grain.order import EpochOrder
    from easydata_grain.pipeline import Pipeline
    from easydata_grain.sources.concat import ConcatSource
    from easydata_grain.sources.datasets_stream import DatasetsStreamSource
    from easydata_grain.sources.head import HeadSource
    from easydata_grain.sources.huggingface import HuggingFaceShardedSource
    from easydata_grain.sources.in_memory import InMemorySource
    from easydata_grain.sources.iterable_dataset import IterableDatasetSource
    from easydata_grain.sources.json import JsonShardedSource
    from easydata_grain.sources.mixed import MixedShardedSource, MixtureSource
    from easydata_grain.sources.parquet import ParquetShardedSource
    from easydata_grain.sources.protocol import (
        ColumnarSource,
        DescribedSource,
        IdentifiedSource,
        IndexedSource,
        ProjectableSource,
        ShardedSource,
        SkippingSource,
    )
    from easydata_grain.sources.skipped import SkippedRow
    from easydata_grain.sources.transformed import TransformedShardedSource
    from easydata_grain.transforms.chain import Chain, MapChain, chain, flatten_transforms
    from easydata_grain.transforms.chat import ChatTemplateTransform
    from easydata_grain.transforms.chatml import ConvertInputOutputToChatML, ConvertToChatML
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

_MODULE_OF = {
    "LoaderRestore": "easydata_grain.checkpoint",
    "LoaderSave": "easydata_grain.checkpoint",
    "CacheStageConfig": "easydata_grain.config",
    "DatasetConfig": "easydata_grain.config",
    "LoadStageConfig": "easydata_grain.config",
    "MixStageConfig": "easydata_grain.config",
    "ObservabilityConfig": "easydata_grain.config",
    "PackStageConfig": "easydata_grain.config",
    "PipelineConfig": "easydata_grain.config",
    "RayConfig": "easydata_grain.config",
    "SaveStageConfig": "easydata_grain.config",
    "SourceStageConfig": "easydata_grain.config",
    "TokenizeStageConfig": "easydata_grain.config",
    "TokenizerConfig": "easydata_grain.config",
    "WeightSchedulePoint": "easydata_grain.config",
    "load_config": "easydata_grain.config",
    "DeviceLoader": "easydata_grain.device_loader",
    "Hosts": "easydata_grain.distributed",
    "make_global_batch": "easydata_grain.distributed",
    "ChunkedMapDataset": "easydata_grain.graph.chunked_map",
    "ChunkedMapIterDataset": "easydata_grain.graph.chunked_map",
    "MixedMapDataset": "easydata_grain.graph.mix",
    "Pack": "easydata_grain.graph.pack",
    "PackIterDataset": "easydata_grain.graph.pack",
    "AccessDeniedError": "easydata_grain.io.errors",
    "CacheRebuiltWarning": "easydata_grain.io.errors",
    "CollateError": "easydata_grain.io.errors",
    "CommitNotFoundError": "easydata_grain.io.errors",
    "CorruptShardError": "easydata_grain.io.errors",
    "HostMismatchError": "easydata_grain.io.errors",
    "ListingError": "easydata_grain.io.errors",
    "LoaderStateError": "easydata_grain.io.errors",
    "MalformedRowError": "easydata_grain.io.errors",
    "ManifestMismatchError": "easydata_grain.io.errors",
    "MissingColumnError": "easydata_grain.io.errors",
    "NoFilesMatchedError": "easydata_grain.io.errors",
    "NotResumableError": "easydata_grain.io.errors",
    "NotSupportedYetError": "easydata_grain.io.errors",
    "OfflineError": "easydata_grain.io.errors",
    "OutputExistsError": "easydata_grain.io.errors",
    "RetriesExhaustedError": "easydata_grain.io.errors",
    "RowOutOfRangeError": "easydata_grain.io.errors",
    "SchemaMismatchError": "easydata_grain.io.errors",
    "ShardChangedError": "easydata_grain.io.errors",
    "ShardNotFoundError": "easydata_grain.io.errors",
    "SourceError": "easydata_grain.io.errors",
    "UnsupportedFormatError": "easydata_grain.io.errors",
    "NO_RETRY": "easydata_grain.io.retry",
    "RetryPolicy": "easydata_grain.io.retry",
    "IOStats": "easydata_grain.io.stats",
    "AsyncDataLoader": "easydata_grain.loader",
    "BatchMap": "easydata_grain.op_protocols",
    "FieldTransform": "easydata_grain.op_protocols",
    "Fingerprinted": "easydata_grain.op_protocols",
    "EpochOrder": "easydata_grain.order",
    "Pipeline": "easydata_grain.pipeline",
    "ConcatSource": "easydata_grain.sources.concat",
    "DatasetsStreamSource": "easydata_grain.sources.datasets_stream",
    "HeadSource": "easydata_grain.sources.head",
    "HuggingFaceShardedSource": "easydata_grain.sources.huggingface",
    "InMemorySource": "easydata_grain.sources.in_memory",
    "IterableDatasetSource": "easydata_grain.sources.iterable_dataset",
    "JsonShardedSource": "easydata_grain.sources.json",
    "MixedShardedSource": "easydata_grain.sources.mixed",
    "MixtureSource": "easydata_grain.sources.mixed",
    "ParquetShardedSource": "easydata_grain.sources.parquet",
    "ColumnarSource": "easydata_grain.sources.protocol",
    "DescribedSource": "easydata_grain.sources.protocol",
    "IdentifiedSource": "easydata_grain.sources.protocol",
    "IndexedSource": "easydata_grain.sources.protocol",
    "ProjectableSource": "easydata_grain.sources.protocol",
    "ShardedSource": "easydata_grain.sources.protocol",
    "SkippingSource": "easydata_grain.sources.protocol",
    "SkippedRow": "easydata_grain.sources.skipped",
    "TransformedShardedSource": "easydata_grain.sources.transformed",
    "Chain": "easydata_grain.transforms.chain",
    "MapChain": "easydata_grain.transforms.chain",
    "chain": "easydata_grain.transforms.chain",
    "flatten_transforms": "easydata_grain.transforms.chain",
    "ChatTemplateTransform": "easydata_grain.transforms.chat",
    "ConvertInputOutputToChatML": "easydata_grain.transforms.chatml",
    "ConvertToChatML": "easydata_grain.transforms.chatml",
    "Collate": "easydata_grain.transforms.collate",
    "AddField": "easydata_grain.transforms.fields",
    "CombineFields": "easydata_grain.transforms.fields",
    "DropFields": "easydata_grain.transforms.fields",
    "ExtractField": "easydata_grain.transforms.fields",
    "MapField": "easydata_grain.transforms.fields",
    "RenameFields": "easydata_grain.transforms.fields",
    "SelectFields": "easydata_grain.transforms.fields",
    "FilterByField": "easydata_grain.transforms.filters",
    "FilterNonEmpty": "easydata_grain.transforms.filters",
    "TransformableSource": "easydata_grain.transforms.fluent",
    "FilterFunction": "easydata_grain.transforms.functions",
    "MapFunction": "easydata_grain.transforms.functions",
    "TokenizeTransform": "easydata_grain.transforms.tokenize",
    "tokenizer_fingerprint": "easydata_grain.transforms.tokenizer_identity",
}
"""Where each public name is defined."""


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, and keep the name."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'easydata_grain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "NO_RETRY",
    "AccessDeniedError",
    "AddField",
    "AsyncDataLoader",
    "BatchMap",
    "CacheRebuiltWarning",
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
    "IdentifiedSource",
    "InMemorySource",
    "IndexedSource",
    "IterableDatasetSource",
    "JsonShardedSource",
    "ListingError",
    "LoadStageConfig",
    "LoaderRestore",
    "LoaderSave",
    "LoaderStateError",
    "MalformedRowError",
    "ManifestMismatchError",
    "MapChain",
    "MapField",
    "MapFunction",
    "MissingColumnError",
    "MixStageConfig",
    "MixedMapDataset",
    "MixedShardedSource",
    "MixtureSource",
    "NoFilesMatchedError",
    "NotResumableError",
    "NotSupportedYetError",
    "ObservabilityConfig",
    "OfflineError",
    "OutputExistsError",
    "Pack",
    "PackIterDataset",
    "PackStageConfig",
    "ParquetShardedSource",
    "Pipeline",
    "PipelineConfig",
    "ProjectableSource",
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
