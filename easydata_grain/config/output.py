"""What a pipeline writes: its cache, its saved output and the Ray engine that writes them.

``Pipeline.cache()`` and ``Pipeline.save()`` read these (``docs/caching.md``). A field whose
feature does not exist for Parquet materialization (an in-memory cache, a cache keyed by paths
only, formats other than Parquet, the Hub upload) is accepted here and refused by the Pipeline
with a ``NotSupportedYetError`` when set to anything but its default: never ignored.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from easydata_grain.config.validation import Config, bounded, join, require

_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class CacheStageConfig(Config):
    """How ``Pipeline.cache()`` stores each dataset's processed rows (after its transforms and
    tokenizer) as materialized Parquet, keyed by a fingerprint of the sources, transforms and
    tokenizer content, so a second run reads them instead of recomputing."""

    enabled: bool = True
    """Whether ``Pipeline.cache()`` caches; False: the stage passes rows through (a dataset's
    own ``cache_path`` included)."""
    cache_type: Literal["memory", "disk", "hierarchical"] = "hierarchical"
    """``disk``: Parquet under ``cache_dir``; ``hierarchical`` (the default) is the same (the
    memory in front is the loader's block cache and the OS page cache); ``memory`` is not
    supported (NotSupportedYetError): use ``streaming: false`` to hold rows in memory."""
    cache_dir: str = ".cache/easydata_grain_pipeline"
    """The cache's directory, local or ``s3://``, ``gs://``, ``az://`` (EasyData:
    ``.cache/easydel_pipeline``); a dataset's ``cache_path`` replaces it for that dataset."""
    memory_cache_size: int = bounded(100, minimum=0)
    """Items of an in-memory LRU: only the default is accepted (there is none; see
    ``cache_type``)."""
    disk_cache_expiry: int = bounded(86400, minimum=0)
    """Seconds after which a cache entry is made again (its manifest's modification time;
    a store that gives none never expires)."""
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    """The Parquet codec of the cached shards."""
    hash_fn: Literal["content", "path", "combined"] = "combined"
    """What the cache key hashes: ``combined`` (the default: each shard's path with its size,
    etag or mtime, and the transforms and tokenizer content) is the one supported; ``content``
    and ``path`` raise NotSupportedYetError."""
    storage_options: dict[str, Any] | None = None
    """fsspec options for ``cache_dir`` (credentials, endpoint); None: the source stage's
    ``dask_storage_options``."""


@dataclasses.dataclass(frozen=True)
class SaveStageConfig(Config):
    """How ``Pipeline.save()`` writes the pipeline's rows (after mixing and packing, before
    batching) with ``materialize()``: Parquet shards and a JSON manifest."""

    enabled: bool = False
    """Whether ``Pipeline.build()`` saves before building the loader (``Pipeline.save()``
    called directly always writes)."""
    output_dir: str = "./output"
    """Where the files go: a local path or ``s3://``, ``gs://``, ``az://``."""
    format: Literal["parquet", "arrow", "jsonl"] = "parquet"
    """The files' format: ``parquet``; ``arrow`` and ``jsonl`` raise NotSupportedYetError."""
    num_shards: int | None = bounded(None, minimum=1)
    """Files to write (``ceil(positions / num_shards)`` positions each, so fewer when that
    rounding leaves the last ones empty); None: as many as ``max_shard_size`` needs."""
    compression: str | None = None
    """The Parquet codec (``zstd``, ``snappy``, ``gzip``, ``brotli``, ``lz4``, ``none``);
    None: ``zstd``."""
    max_shard_size: str | int = "500MB"
    """The largest file, in bytes or as ``"500MB"``, ``"2GiB"``."""
    overwrite: bool = False
    """Replace files already in ``output_dir``; False: existing output is an error."""
    storage_options: dict[str, Any] | None = None
    """fsspec options for ``output_dir`` (credentials, endpoint); None: the source stage's
    ``dask_storage_options``."""
    push_to_hub: bool = False
    """Upload the files to the Hub as ``hub_repo_id``: not supported yet (True raises
    NotSupportedYetError; upload ``output_dir`` with ``huggingface_hub.upload_folder``)."""
    hub_repo_id: str | None = None
    """The Hub dataset repo to upload to."""
    hub_private: bool = False
    """Create the Hub repo as private."""
    hub_token: str | None = dataclasses.field(default=None, repr=False)
    """The Hub token for the upload (never shown in the config's repr); None: the login's."""

    def _check(self, path: str) -> None:
        size = self.max_shard_size
        where = join(path, "max_shard_size")
        if isinstance(size, int):
            require(size > 0, f"{where}: must be > 0 bytes, got {size}")
        else:
            require(
                bool(_SIZE.match(size)),
                f"{where}: expected bytes or a size like '500MB' or '2GiB', got {size!r}",
            )
        require(
            not self.push_to_hub or bool(self.hub_repo_id),
            f"{join(path, 'hub_repo_id')}: push_to_hub needs a repo id",
        )


@dataclasses.dataclass(frozen=True)
class RayConfig(Config):
    """Ray as the engine that materializes a pipeline's rows (``Pipeline.save()``, the cache)."""

    enabled: bool = False
    """Write with Ray tasks; False: with local processes."""
    address: str | None = None
    """The cluster to attach to (``"auto"``, ``"ray://head:10001"``); None: the Ray already
    started in this process, else a local cluster started for the job, on loopback only."""
    num_workers: int = bounded(4, minimum=1)
    """Ray tasks writing at once."""
    resources_per_worker: dict[str, float] | None = None
    """Each worker's Ray resources (``{"CPU": 1}``); None: Ray's default."""
    use_gpu: bool = False
    """Give each worker a GPU."""
    object_store_memory: int | None = bounded(None, minimum=1)
    """Bytes of Ray's object store when this process starts Ray; None: Ray's default."""

    def _check(self, path: str) -> None:
        for name, amount in (self.resources_per_worker or {}).items():
            require(
                amount >= 0,
                f"{join(path, 'resources_per_worker')}[{name!r}]: must be >= 0, got {amount!r}",
            )
