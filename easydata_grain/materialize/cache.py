"""``cached_rows()``: a pipeline's rows read from the cache when it holds them, else
materialized there first, then read.

The cache directory holds one materialized output per fingerprint (``materialized_path``). A
lookup reads that entry's manifest only; a hit whose shards all verify (present, size and
sha256) is read as a ``ParquetShardedSource``, and nothing upstream runs: no tokenizer call,
no transform. A miss (never made, another tokenizer, template, transform or source data: the
fingerprint differs, so the entry's name does) materializes the rows there, then reads them.
An entry that fails its checks (a shard deleted, truncated or altered) or is older than
``expiry_seconds`` is made again, with a warning naming the shard; an interrupted run resumes.
Nothing is unpickled: the manifest is JSON, the rows are Parquet.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from easydata_grain.io.errors import CacheRebuiltWarning, CorruptShardError, ShardNotFoundError
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.materialize.manifest import MANIFEST_NAME
from easydata_grain.materialize.materializer import materialize
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.reading import (
    find_materialized,
    materialized_path,
    open_materialized,
)
from easydata_grain.materialize.store import OutputStore
from easydata_grain.sources.parquet import ParquetShardedSource


def cached_rows(
    rows: MaterializableRows,
    cache_dir: str,
    *,
    expiry_seconds: float | None = None,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    **write: Any,
) -> ParquetShardedSource:
    """``rows`` as a source read from ``cache_dir`` (see the module's docstring).
    ``expiry_seconds``: an entry older than this is made again (None: never; a store that
    does not give modification times never expires). ``write``: ``materialize()``'s settings
    for a miss (engine, workers, compression, ...)."""
    policy = retry or RetryPolicy()
    fingerprint = rows.fingerprint()
    path = materialized_path(cache_dir, fingerprint)
    found = find_materialized(cache_dir, fingerprint, storage_options=storage_options, retry=policy)
    stale = found is not None and _expired(path, expiry_seconds, storage_options, policy)
    if found is not None and not stale:
        try:
            return open_materialized(
                path, fingerprint, storage_options=storage_options, retry=policy
            )
        except (CorruptShardError, ShardNotFoundError) as error:
            warnings.warn(
                f"The cache entry {path} failed its checks and is made again: {error}",
                CacheRebuiltWarning,
                stacklevel=2,
            )
            stale = True
    elif stale:
        warnings.warn(
            f"The cache entry {path} is older than {expiry_seconds} s and is made again.",
            CacheRebuiltWarning,
            stacklevel=2,
        )
    materialize(rows, path, overwrite=stale, storage_options=storage_options, retry=policy, **write)
    # Just written and hashed as it was written: the sizes suffice.
    return open_materialized(
        path, fingerprint, storage_options=storage_options, retry=policy, verify="size"
    )


def _expired(
    path: str,
    expiry_seconds: float | None,
    storage_options: dict[str, Any] | None,
    retry: RetryPolicy,
) -> bool:
    if expiry_seconds is None:
        return False
    written = OutputStore(path, storage_options, retry).modified(MANIFEST_NAME)
    return written is not None and time.time() - written > expiry_seconds
