"""Materialization: a pipeline's rows (before batching) -> Parquet shards + a JSON manifest.

Atomic (shards under temporary names, then moved; the manifest last), resumable (an
interrupted run keeps its verified shards), byte-identical whichever engine (local processes or
Ray tasks) and worker count wrote it, on local disk or ``s3://``, ``gs://``, ``az://``. The rows
of a pipeline: ``EpochRows`` (a source and its transforms), ``MixtureRows`` (a mixture),
``PackedRows`` (packed per unit); ``cached_rows`` is the cache (read, or made then read).
"""

from easydata_grain.materialize.cache import cached_rows
from easydata_grain.materialize.epoch_rows import EpochRows
from easydata_grain.materialize.manifest import Manifest, ShardRecord
from easydata_grain.materialize.materializer import Materialized, materialize
from easydata_grain.materialize.mixture_rows import MixtureRows
from easydata_grain.materialize.packed_rows import PackedRows
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.ray_engine import (
    LOOPBACK_ENVIRONMENT,
    RayOptions,
    loopback_environment,
    start_local_ray,
)
from easydata_grain.materialize.reading import (
    find_materialized,
    materialized_path,
    open_materialized,
    read_manifest,
)
from easydata_grain.materialize.settings import MaterializeSettings

__all__ = [
    "LOOPBACK_ENVIRONMENT",
    "EpochRows",
    "Manifest",
    "MaterializableRows",
    "MaterializeSettings",
    "Materialized",
    "MixtureRows",
    "PackedRows",
    "RayOptions",
    "ShardRecord",
    "cached_rows",
    "find_materialized",
    "loopback_environment",
    "materialize",
    "materialized_path",
    "open_materialized",
    "read_manifest",
    "start_local_ray",
]
