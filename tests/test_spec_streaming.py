"""The spec page's (../shared/spec/streaming.md) code blocks, run against the emulators.

Each test holds one block of the sections Cloud Storage Streaming, JSON/JSONL Streaming,
Automatic Retry, Resumable Streaming, Parquet Row-Group Resume, Distributed Streaming and
Monitoring Streaming as the user wrote it, with only URLs and credentials adapted (the
emulators' buckets and keys instead of real ones), then checks what the block produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import JsonShardedSource, ParquetShardedSource, RetryPolicy
from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy

ROWS_PER_SHARD = 3_000


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_parquet_dataset(
        tmp_path_factory.mktemp("spec"), num_shards=4, rows_per_shard=ROWS_PER_SHARD, max_tokens=8
    )


def _bucket(store: StoreEndpoint, local_shards: list[str], prefix: str) -> str:
    """A fresh bucket holding the shards under ``prefix``; returns the bucket URL."""
    bucket = store.new_bucket("spec")
    for path in local_shards:
        store.upload(path, f"{bucket}/{prefix}/{Path(path).name}")
    return bucket


def _ids(source: ParquetShardedSource) -> list[int]:
    return [row["id"] for shard in source.shard_names for row in source.open_shard(shard)]


ALL_IDS = list(range(4 * ROWS_PER_SHARD))


def test_google_cloud_storage(gcs_store: StoreEndpoint, local_shards: list[str]) -> None:
    bucket = _bucket(gcs_store, local_shards, "training-data")
    _bucket_data = bucket  # the spec's second and third blocks read gs://my-bucket/data
    for path in local_shards:
        gcs_store.upload(path, f"{bucket}/data/{Path(path).name}")
    credentials = gcs_store.storage_options()  # instead of {"token": "cloud"} / a key file

    # Stream from GCS
    source = ParquetShardedSource(
        f"{bucket}/training-data/*.parquet",
        storage_options=credentials,  # Uses default credentials
    )
    assert _ids(source) == ALL_IDS

    # With service account
    source = ParquetShardedSource(
        f"{_bucket_data}/data/*.parquet",
        storage_options=credentials,
    )
    assert _ids(source) == ALL_IDS

    # Column projection for efficiency
    source = ParquetShardedSource(
        f"{_bucket_data}/data/*.parquet",
        storage_options=credentials,
        columns=["input_ids", "id"],  # Only load needed columns
    )
    row = next(source.open_shard(source.shard_names[0]))
    assert list(row) == ["input_ids", "id"] and isinstance(row["input_ids"], np.ndarray)


def test_amazon_s3(
    s3_store: StoreEndpoint, s3_anonymous_store: StoreEndpoint, local_shards: list[str]
) -> None:
    bucket = _bucket(s3_store, local_shards, "data")
    endpoint = {"endpoint_url": s3_store.url}  # the emulator instead of AWS

    # Stream from S3
    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet",
        storage_options={
            "key": s3_store.key,
            "secret": s3_store.secret,
            "client_kwargs": {**endpoint},
        },
    )
    assert _ids(source) == ALL_IDS

    public_bucket = s3_anonymous_store.new_bucket("public")
    publisher = s3_anonymous_store.filesystem()
    for path in local_shards:
        publisher.put_file(path, f"{public_bucket}/data/{Path(path).name}", ACL="public-read")
    endpoint = {"endpoint_url": s3_anonymous_store.url}  # an emulator that serves anyone

    # Public bucket (anonymous access)
    source = ParquetShardedSource(
        f"{public_bucket}/data/*.parquet",
        storage_options={"anon": True, "client_kwargs": endpoint},
    )
    assert _ids(source) == ALL_IDS


def test_azure_blob_storage(azure_store: StoreEndpoint, local_shards: list[str]) -> None:
    container = _bucket(azure_store, local_shards, "data")
    source = ParquetShardedSource(
        f"{container}/data/*.parquet",
        storage_options=azure_store.storage_options(),  # instead of account_name/account_key
    )
    assert _ids(source) == ALL_IDS


def test_json_jsonl_streaming(gcs_store: StoreEndpoint, tmp_path: Path) -> None:
    bucket = gcs_store.new_bucket("spec")
    rows = [{"id": i, "text": f"example {i}"} for i in range(500)]
    gcs_store.upload(
        "".join(json.dumps(r) + "\n" for r in rows[:250]).encode(), f"{bucket}/data/a.jsonl"
    )
    gcs_store.upload(
        "".join(json.dumps(r) + "\n" for r in rows[250:]).encode(), f"{bucket}/data/b.jsonl"
    )
    gcs_store.upload(json.dumps(rows).encode(), f"{bucket}/data/all.json")
    credentials = {**gcs_store.storage_options()}  # instead of {"token": "cloud"}

    # Stream JSONL from GCS
    source = JsonShardedSource(
        f"{bucket}/data/*.jsonl",
        storage_options=credentials,
        index_cache_dir=str(tmp_path),
    )
    assert [r for s in source.shard_names for r in source.open_shard(s)] == rows

    # Stream large JSON files
    source = JsonShardedSource(
        f"{bucket}/data/*.json",
        jsonl=False,  # JSON array format
        storage_options=credentials,
        index_cache_dir=str(tmp_path),
    )
    assert [r for s in source.shard_names for r in source.open_shard(s)] == rows


def test_automatic_retry(
    gcs_store: StoreEndpoint,
    local_shards: list[str],
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
) -> None:
    bucket = _bucket(gcs_store, local_shards, "data")
    proxy = fault_proxy(gcs_store)
    proxy.inject("503", every=3)
    seen: list[int] = []

    def process(example: dict) -> None:
        seen.append(example["id"])

    # Built-in: 3 retries with exponential backoff
    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet",
        storage_options=gcs_store.storage_options(proxy.url),
        retry=RetryPolicy(
            initial_backoff=0.01
        ),  # the default policy, with short waits for the test
    )

    # Retry happens automatically on network errors
    for shard in source.shard_names:
        for example in source.open_shard(shard):  # Retries on failure
            process(example)

    assert seen == ALL_IDS and proxy.fault_count > 0 and source.stats.retries >= proxy.fault_count


def test_resumable_streaming(s3_store: StoreEndpoint, local_shards: list[str]) -> None:
    bucket = _bucket(s3_store, local_shards, "data")
    seen: list[int] = []
    process = seen.append

    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet", storage_options=s3_store.storage_options()
    )

    # A run that stopped in the middle of the third shard
    current_shard, current_row = source.shard_names[2], 1234

    # Save checkpoint
    checkpoint = {
        "shard": current_shard,
        "row": current_row,
    }

    # Resume from checkpoint
    for example in source.open_shard_at_row(checkpoint["shard"], checkpoint["row"]):
        process(example["id"])
        # Update checkpoint periodically

    assert seen == list(range(2 * ROWS_PER_SHARD + 1234, 3 * ROWS_PER_SHARD))


def test_parquet_row_group_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"id": np.arange(1_000_000)}), "data.parquet", row_group_size=10_000)
    seen: list[int] = []
    process = seen.append

    # Parquet file with 100 row groups of 10000 rows each
    # Resume at row 550000 = row group 55, row 0 in group

    source = ParquetShardedSource("data.parquet")
    # Automatically seeks to correct row group
    for example in source.open_shard_at_row("data.parquet", row=550000):
        process(example)

    assert [e["id"] for e in seen] == list(range(550_000, 1_000_000))
    assert source.shard_meta(0).index.group_of(550_000) == 55


def test_distributed_streaming(
    gcs_store: StoreEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shards = write_parquet_dataset(
        tmp_path_factory.mktemp("dist"), num_shards=11, rows_per_shard=50, max_tokens=4
    )
    bucket = _bucket(gcs_store, shards, "data")
    per_worker: dict[int, list[int]] = {}

    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet", storage_options=gcs_store.storage_options()
    )

    # Get all shard names
    all_shards = source.shard_names

    # Assign to workers
    for worker_id in range(8):
        num_workers = 8
        worker_shards = all_shards[worker_id::num_workers]

        # Each worker processes its shards
        for shard in worker_shards:
            for example in source.open_shard(shard):
                per_worker.setdefault(worker_id, []).append(example["id"])

    everything = sorted(i for ids in per_worker.values() for i in ids)
    assert everything == list(range(11 * 50)) and len(per_worker) == 8


def test_monitoring_streaming(
    azure_store: StoreEndpoint, local_shards: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    bucket = _bucket(azure_store, local_shards, "data")
    process = list.append.__get__([])

    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet", storage_options=azure_store.storage_options()
    )

    start = time.time()
    count = 0
    for shard in source.shard_names:
        for example in source.open_shard(shard):
            process(example)
            count += 1
            if count % 10000 == 0:
                elapsed = time.time() - start
                rate = count / elapsed
                print(f"Processed {count} examples, {rate:.1f} ex/sec")

    assert count == len(ALL_IDS)
    assert "Processed 10000 examples" in capsys.readouterr().out
