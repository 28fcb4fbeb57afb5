"""JsonShardedSource against real emulators (S3, GCS, Azure), through a fault-injecting proxy."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import pytest

from easydata_grain import NO_RETRY, JsonShardedSource, RetriesExhaustedError, RetryPolicy
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy
from tests.helpers import plain

FAST_RETRY = RetryPolicy(max_retries=6, initial_backoff=0.01, max_backoff=0.05, read_timeout=1.0)
ROWS = [
    {"id": i, "text": f"línea {i} " * (i % 7), "input_ids": list(range(i % 50))}
    for i in range(1500)
]
FILES = {
    "a.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS[:600]).encode(),
    "b.jsonl.gz": gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS[600:1000]).encode()),
    "c.jsonl": "".join(json.dumps(r) + "\n\n" for r in ROWS[1000:]).encode(),
}


@pytest.fixture
def remote_jsonl(store: StoreEndpoint) -> str:
    bucket = store.new_bucket("js")
    for name, content in FILES.items():
        store.upload(content, f"{bucket}/data/{name}")
    store.upload(json.dumps(ROWS[:300]).encode(), f"{bucket}/array/rows.json")
    return bucket


def _read(source: JsonShardedSource) -> list[dict]:
    return [plain(r) for shard in source.shard_names for r in source.open_shard(shard)]


def test_jsonl_and_array_read_and_seek(store: StoreEndpoint, remote_jsonl: str, tmp_path) -> None:
    options = store.storage_options()
    source = JsonShardedSource(
        f"{remote_jsonl}/data/*", storage_options=options, index_cache_dir=str(tmp_path)
    )
    assert source.row_counts() == [600, 400, 500]
    assert _read(source) == ROWS
    last = source.shard_names[2]
    assert [plain(r) for r in source.open_shard_at_row(last, 321)] == ROWS[1321:]
    array = JsonShardedSource(
        f"{remote_jsonl}/array/rows.json",
        jsonl=False,
        storage_options=options,
        index_cache_dir=str(tmp_path),
    )
    assert _read(array) == ROWS[:300]
    assert [plain(r) for r in array.open_shard_at_row(array.shard_names[0], 299)] == ROWS[299:300]


@pytest.mark.parametrize("fault", ["500", "503", "drop", "truncate", "stall"])
def test_faults_are_retried_row_for_row(
    store: StoreEndpoint,
    remote_jsonl: str,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    fault: str,
    tmp_path,
) -> None:
    proxy = fault_proxy(store)
    proxy.inject(fault, every=3, stall_seconds=2.5)
    source = JsonShardedSource(
        f"{remote_jsonl}/data/*",
        storage_options=store.storage_options(proxy.url),
        retry=FAST_RETRY,
        index_cache_dir=str(tmp_path),
        batch_size=50,
    )
    assert _read(source) == ROWS
    assert proxy.fault_count > 0


def test_without_retries_the_fault_surfaces(
    store: StoreEndpoint,
    remote_jsonl: str,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    tmp_path,
) -> None:
    proxy = fault_proxy(store)
    source = JsonShardedSource(
        f"{remote_jsonl}/data/a.jsonl",
        storage_options=store.storage_options(proxy.url),
        retry=NO_RETRY,
        index_cache_dir=str(tmp_path),
    )
    source.row_counts()
    proxy.inject("503", every=1, methods=["GET"])
    with pytest.raises(RetriesExhaustedError, match=r"a\.jsonl.*after 0 retries"):
        _read(source)
