"""What a pipeline writes: its cache, its saved output and the Ray engine that writes them.

Their stages land with issue 12 (caching and materialization): until then these configs are
accepted and checked, and the Pipeline refuses to run a cache or save stage or a Ray engine
with a clear "not supported yet" error.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from easydata_grain.config.validation import Config, bounded, join, require

_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class CacheStageConfig(Config):
    """How ``Pipeline.cache()`` stores processed rows, keyed by a fingerprint of the sources,
    transforms and tokenizer, so a second run reuses them (issue 12)."""

    enabled: bool = True
    """Whether ``Pipeline.cache()`` caches; False: the stage passes rows through."""
    cache_type: Literal["memory", "disk", "hierarchical"] = "hierarchical"
    """``memory``: an LRU of ``memory_cache_size`` items; ``disk``: files under ``cache_dir``;
    ``hierarchical``: memory in front of disk."""
    cache_dir: str = ".cache/easydata_grain_pipeline"
    """The disk cache's directory (EasyData: ``.cache/easydel_pipeline``)."""
    memory_cache_size: int = bounded(100, minimum=0)
    """Items kept in the memory cache."""
    disk_cache_expiry: int = bounded(86400, minimum=0)
    """Seconds before a disk cache entry is made again."""
    compression: Literal["none", "gzip", "lz4", "zstd"] = "none"
    """How disk cache files are compressed."""
    hash_fn: Literal["content", "path", "combined"] = "combined"
    """What the cache key hashes: the data's content, its paths, or both."""


@dataclasses.dataclass(frozen=True)
class SaveStageConfig(Config):
    """How ``Pipeline.save()`` writes the processed rows (issue 12)."""

    enabled: bool = False
    """Whether ``Pipeline.save()`` writes; False: the stage passes rows through."""
    output_dir: str = "./output"
    """Where the files go."""
    format: Literal["parquet", "arrow", "jsonl"] = "parquet"
    """The files' format."""
    num_shards: int | None = bounded(None, minimum=1)
    """Files to write; None: as many as ``max_shard_size`` needs."""
    compression: str | None = None
    """The files' compression codec (``"zstd"``); None: the format's default."""
    max_shard_size: str | int = "500MB"
    """The largest file, in bytes or as ``"500MB"``, ``"2GiB"``."""
    overwrite: bool = False
    """Replace files already in ``output_dir``; False: existing output is an error."""
    push_to_hub: bool = False
    """Upload the files to the Hub as ``hub_repo_id``."""
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
    """Ray as the engine that materializes a pipeline's rows in parallel (issue 12)."""

    enabled: bool = False
    """Write with Ray Data; False: with local processes."""
    num_workers: int = bounded(4, minimum=1)
    """Ray workers writing at once."""
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
