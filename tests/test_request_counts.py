"""A source's IOStats against the fault proxy's own request log: every request counted once,
every faulted one retried once, and a persistent fault tried exactly max_retries + 1 times."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from easydata_grain import (
    JsonShardedSource,
    ParquetShardedSource,
    RetriesExhaustedError,
    RetryPolicy,
)
from easydata_grain.sources.file_source import FileShardedSource
from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy

POLICY = RetryPolicy(max_retries=2, initial_backoff=0.001, max_backoff=0.001, read_timeout=5.0)
EVERY = 3  # a 503 on every third request: never twice in a row, so every fault is retried once
JSON_ROWS = [{"id": i, "text": "x" * (i % 40)} for i in range(2000)]
# On S3 and GCS a glob lists in one request, and each file's info comes from that listing (no
# request). Azure is left out: adlfs sends a HEAD besides the list (one listing request counted).
KINDS = ["s3", "gcs"]


class SmallBlockJson(JsonShardedSource):
    """JSON Lines read in 4 KiB requests, so that a shard takes many."""

    block_size: ClassVar[int] = 4096


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("counts")
    [path] = write_parquet_dataset(directory, num_shards=1, rows_per_shard=600, row_group_size=100)
    return path


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard ``a.<fmt>`` in a fresh bucket, reached through ``proxy``."""

    fmt: str
    rows: int
    proxy: FaultProxy
    open_source: Callable[[], FileShardedSource]
    """A new source reading the shard's glob through the proxy."""


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest) -> StoreEndpoint:
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(params=["parquet", "jsonl"])
def shard(
    request: pytest.FixtureRequest,
    store: StoreEndpoint,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    parquet_file: str,
    tmp_path: Path,
) -> Shard:
    fmt = request.param
    bucket = store.new_bucket("counts")
    proxy = fault_proxy(store)
    options = store.storage_options(proxy.url)
    if fmt == "parquet":
        store.upload(parquet_file, f"{bucket}/data/a.parquet")
        return Shard(
            fmt,
            600,
            proxy,
            lambda: ParquetShardedSource(
                f"{bucket}/data/*.parquet", storage_options=options, retry=POLICY, batch_size=64
            ),
        )
    lines = "".join(json.dumps(row) + "\n" for row in JSON_ROWS).encode()
    store.upload(lines, f"{bucket}/data/a.jsonl")
    return Shard(
        fmt,
        len(JSON_ROWS),
        proxy,
        lambda: SmallBlockJson(
            f"{bucket}/data/*.jsonl",
            storage_options=options,
            retry=POLICY,
            index_cache_dir=tmp_path,
            batch_size=100,
        ),
    )


def test_stats_count_every_request_the_proxy_saw(shard: Shard) -> None:
    proxy = shard.proxy
    proxy.inject("503", every=EVERY)
    source = shard.open_source()
    listing = proxy.log
    assert source.stats.requests == len(listing) == 1 and listing[0].fault is None

    assert sum(1 for _ in source.open_shard(source.shard_names[0])) == shard.rows
    log = proxy.log
    # The object's downloads, and GCS's generation look-ups.
    gets = [r for r in log if r.method == "GET" and f"a.{shard.fmt}" in r.path]
    assert "HEAD" not in proxy.requests  # the file's size and version came with the listing
    assert source.stats.requests == len(listing) + len(gets) == len(log)
    assert source.stats.retries == proxy.fault_count == sum(r.fault is not None for r in gets) > 0


@pytest.mark.parametrize("phase", ["metadata", "rows"])
def test_a_persistent_fault_is_tried_max_retries_plus_one_times(shard: Shard, phase: str) -> None:
    """Once, not at every level: the row stream (or metadata read) does not retry again what
    the read under it already retried."""
    proxy = shard.proxy
    source = shard.open_source()
    if phase == "rows":
        source.row_counts()
    before = source.stats.snapshot()
    proxy.reset_counters()
    proxy.inject("503", methods="GET", path_contains=f"a.{shard.fmt}")
    attempts = POLICY.max_retries + 1
    what = r"the metadata of \S+" if phase == "metadata" else r"\S+ failed at row 0"
    with pytest.raises(
        RetriesExhaustedError, match=rf"{what}.* after 2 retries \({attempts} attempts\)"
    ):
        list(source.open_shard(source.shard_names[0]))
    assert proxy.requests == {"GET": attempts} and proxy.fault_count == attempts
    after = source.stats.snapshot()
    assert after["requests"] - before["requests"] == attempts
    assert after["retries"] - before["retries"] == POLICY.max_retries
