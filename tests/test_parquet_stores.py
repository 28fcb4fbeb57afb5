"""ParquetShardedSource against real emulators (S3, GCS, Azure), through a fault-injecting proxy."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    NO_RETRY,
    AccessDeniedError,
    ListingError,
    NoFilesMatchedError,
    ParquetShardedSource,
    RetriesExhaustedError,
    RetryPolicy,
    ShardNotFoundError,
)
from easydata_grain.io.filesystem import filesystem_for
from easydata_grain.io.remote_file import RemoteFile
from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy
from tests.helpers import plain

FAST_RETRY = RetryPolicy(max_retries=6, initial_backoff=0.01, max_backoff=0.05, read_timeout=1.0)
FAULTS = ["500", "503", "drop", "truncate", "stall"]


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_parquet_dataset(
        tmp_path_factory.mktemp("pq"),
        num_shards=3,
        rows_per_shard=600,
        row_group_size=100,
        max_tokens=64,
    )


@pytest.fixture
def remote_dataset(store: StoreEndpoint, local_dataset: list[str]) -> str:
    """The local dataset uploaded to a fresh bucket; returns the glob URL."""
    bucket = store.new_bucket("pq")
    for path in local_dataset:
        store.upload(path, f"{bucket}/data/{Path(path).name}")
    return f"{bucket}/data/*.parquet"


def _all_rows(source: ParquetShardedSource) -> list[dict]:
    return [plain(row) for shard in source.shard_names for row in source.open_shard(shard)]


def _expected(local_dataset: list[str], columns: list[str] | None = None) -> list[dict]:
    return _all_rows(ParquetShardedSource(local_dataset, columns=columns))


def _source(url: str, options: dict, **kwargs: object) -> ParquetShardedSource:
    return ParquetShardedSource(url, storage_options=options, **kwargs)


def test_remote_read_equals_local(
    store: StoreEndpoint, remote_dataset: str, local_dataset: list[str]
) -> None:
    source = _source(remote_dataset, store.storage_options())
    assert [n.rsplit("/", 1)[1] for n in source.shard_names] == [
        Path(p).name for p in local_dataset
    ]
    assert source.shard_names[0].startswith(f"{store.protocol}://")
    assert source.row_counts() == [600, 600, 600]
    assert _all_rows(source) == _expected(local_dataset)
    assert source.stats.bytes_read > 0 and source.stats.requests > 0


@pytest.mark.parametrize("fault", FAULTS)
def test_faults_are_retried_row_for_row(
    store: StoreEndpoint,
    remote_dataset: str,
    local_dataset: list[str],
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    fault: str,
) -> None:
    proxy = fault_proxy(store)
    options = store.storage_options(proxy.url)
    proxy.inject(fault, every=4, stall_seconds=2.5)
    source = _source(remote_dataset, options, retry=FAST_RETRY, batch_size=64)
    assert _all_rows(source) == _expected(local_dataset)
    assert proxy.fault_count > 0
    # Error replies and stalls always reach our policy; aiohttp re-sends a dropped request and
    # the Azure SDK re-reads a truncated body on their own, which is just as exact.
    if fault in ("500", "503", "stall"):
        assert source.stats.retries > 0


@pytest.mark.parametrize("fault", ["503", "drop", "truncate"])
def test_without_retries_the_fault_surfaces(
    store: StoreEndpoint,
    remote_dataset: str,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    fault: str,
) -> None:
    proxy = fault_proxy(store)
    source = _source(
        remote_dataset, store.storage_options(proxy.url), retry=NO_RETRY, batch_size=64
    )
    source.row_counts()
    proxy.inject(fault, every=1, methods=["GET"])
    with pytest.raises(RetriesExhaustedError, match=r"\.parquet.*after 0 retries"):
        _all_rows(source)


def test_failed_listing_raises_instead_of_returning_nothing(
    store: StoreEndpoint, remote_dataset: str, fault_proxy: Callable[[StoreEndpoint], FaultProxy]
) -> None:
    proxy = fault_proxy(store)
    proxy.inject("503", every=1)
    with pytest.raises(ListingError, match=r"\*\.parquet"):
        _source(remote_dataset, store.storage_options(proxy.url), retry=NO_RETRY)
    proxy.clear()
    proxy.inject("503", every=1, limit=2)
    assert (
        len(_source(remote_dataset, store.storage_options(proxy.url), retry=FAST_RETRY).shard_names)
        == 3
    )


def test_projection_transfers_fewer_bytes(
    store: StoreEndpoint,
    remote_dataset: str,
    local_dataset: list[str],
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
) -> None:
    proxy = fault_proxy(store)
    sent = {}
    for label, columns in (("all", None), ("id", ["id"])):
        proxy.reset_counters()
        source = _source(remote_dataset, store.storage_options(proxy.url), columns=columns)
        rows = _all_rows(source)
        sent[label] = proxy.body_bytes_sent
        assert rows == _expected(local_dataset, columns)
    assert sent["id"] * 5 < sent["all"], sent


def test_missing_objects_and_buckets(store: StoreEndpoint, remote_dataset: str) -> None:
    options = store.storage_options()
    bucket = remote_dataset.rsplit("/data/", 1)[0]
    with pytest.raises(NoFilesMatchedError, match="nothing"):
        _source(f"{bucket}/data/*.nothing", options)
    with pytest.raises(ShardNotFoundError, match=r"missing\.parquet"):
        _source(f"{bucket}/data/missing.parquet", options)
    with pytest.raises(ShardNotFoundError, match="bucket 'no-such-bucket-x1'"):
        _source(f"{store.protocol}://no-such-bucket-x1/data/*.parquet", options)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_seek_equals_suffix_on_the_store(
    store: StoreEndpoint, remote_dataset: str, local_dataset: list[str], data: st.DataObject
) -> None:
    source = _source(
        remote_dataset, store.storage_options(), batch_size=data.draw(st.integers(1, 150))
    )
    shard = data.draw(st.sampled_from(source.shard_names))
    row = data.draw(st.integers(0, source.num_rows(shard)))
    local = ParquetShardedSource(local_dataset)
    local_shard = local.shard_names[source.shard_index(shard)]
    expected = [plain(r) for r in local.open_shard(local_shard)][row:]
    assert [plain(r) for r in source.open_shard_at_row(shard, row)] == expected


def test_seek_downloads_only_the_target_row_group(
    store: StoreEndpoint, remote_dataset: str, fault_proxy: Callable[[StoreEndpoint], FaultProxy]
) -> None:
    proxy = fault_proxy(store)
    source = _source(remote_dataset, store.storage_options(proxy.url))
    shard = source.shard_names[0]
    source.num_rows(shard)
    metadata = source.shard_meta(0).index.metadata
    group_bytes = [metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)]
    proxy.reset_counters()
    next(source.open_shard_at_row(shard, 550))
    assert proxy.body_bytes_sent < 2 * group_bytes[5] + 1024, (proxy.body_bytes_sent, group_bytes)


@pytest.mark.parametrize("kind", ["s3", "azure"])  # the GCS emulator checks no credentials
def test_wrong_credentials_fail_at_once(
    kind: str, local_dataset: list[str], request: pytest.FixtureRequest
) -> None:
    store: StoreEndpoint = request.getfixturevalue(f"{kind}_store")
    bucket = store.new_bucket("creds")
    store.upload(local_dataset[0], f"{bucket}/data/a.parquet")
    slow_retries = RetryPolicy(max_retries=3, initial_backoff=5.0)
    with pytest.raises(AccessDeniedError, match="credentials"):
        _source(f"{bucket}/data/*.parquet", store.bad_credentials_options(), retry=slow_retries)
    # Credentials that expire after listing: the read fails at once, naming the file.
    source = _source(f"{bucket}/data/a.parquet", store.storage_options(), retry=slow_retries)
    source._fs = filesystem_for(
        source.shard_names[0], store.bad_credentials_options(), slow_retries
    )
    start = time.monotonic()
    with pytest.raises(AccessDeniedError, match=r"(?s)a\.parquet.*credentials"):
        source.row_counts()
    assert time.monotonic() - start < 4.0  # no retry of a permanent error


def test_arrow_reads_only_on_the_reading_thread(
    store: StoreEndpoint, remote_dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow's own threads never call into Python (they would abort the interpreter's exit)."""
    readers: set[int] = set()
    read = RemoteFile.read

    def recording_read(self: RemoteFile, size: int = -1) -> bytes:
        readers.add(threading.get_ident())
        return read(self, size)

    monkeypatch.setattr(RemoteFile, "read", recording_read)
    source = _source(remote_dataset, store.storage_options(), columns=["id", "input_ids"])
    shard = source.shard_names[1]
    assert sum(1 for _ in source.open_shard_at_row(shard, 150)) == 450
    assert readers == {threading.get_ident()}


_EXIT_WHILE_READING = """
import json, sys, threading, time
from easydata_grain import ParquetShardedSource
url, options = sys.argv[1], json.loads(sys.argv[2])
source = ParquetShardedSource(url, storage_options=options)
source.row_counts()
print("listed", flush=True)
sys.stdin.readline()
threading.Thread(target=lambda: list(source.open_shard(0)), daemon=True).start()
time.sleep(float(sys.argv[3]))
"""


@pytest.mark.parametrize("exit_after", [0.3, 1.1])
def test_exit_while_a_read_is_stalled(
    s3_store: StoreEndpoint,
    local_dataset: list[str],
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    exit_after: float,
) -> None:
    """A process that exits while a reader thread waits on the store exits cleanly."""
    bucket = s3_store.new_bucket("exit")
    for path in local_dataset:
        s3_store.upload(path, f"{bucket}/data/{Path(path).name}")
    proxy = fault_proxy(s3_store)
    arguments = [f"{bucket}/data/*.parquet", json.dumps(s3_store.storage_options(proxy.url))]
    with subprocess.Popen(
        [sys.executable, "-c", _EXIT_WHILE_READING, *arguments, str(exit_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    ) as process:
        assert process.stdout is not None and process.stdin is not None
        line = process.stdout.readline()
        assert line.strip() == "listed", line + process.communicate(timeout=60)[1]
        # Every read from now on stalls: the reader thread is waiting on the store at exit.
        proxy.inject("stall", methods=["GET"], stall_seconds=0.4)
        process.stdin.write("go\n")
        process.stdin.flush()
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Fatal Python error" not in stderr
