"""Store access: every way to authenticate goes through the RetryPolicy, error messages state what
happened (attempts made, no doubled periods), and local reads count their bytes too."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure.core.credentials import AzureNamedKeyCredential

from easydata_grain import (
    AccessDeniedError,
    IOStats,
    JsonShardedSource,
    ListingError,
    ParquetShardedSource,
    RetryPolicy,
    SourceError,
)
from easydata_grain.io.listing import expand_paths
from easydata_grain.sources.parquet import selected_column_chunks
from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import AZURITE_ACCOUNT, AZURITE_KEY, StoreEndpoint, azure_connection_string

REPO_ROOT = Path(__file__).resolve().parents[1]
# One retry, almost no backoff: a listing against a dead endpoint makes exactly 2 attempts.
ONE_RETRY = RetryPolicy(max_retries=1, initial_backoff=0.01, max_backoff=0.01, connect_timeout=2)
DOUBLED_PERIODS = ("..", ". .")


def _refused_url() -> str:
    """An http URL on loopback where nothing listens (a port bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _account_host(url: str) -> str:
    """``account_host`` for Azurite's account at ``url`` (path-style, as Azurite serves it)."""
    return f"{url}/{AZURITE_ACCOUNT}"


def _sas_token() -> str:
    """An account SAS for Azurite's account, signed with its documented key."""
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def _azure_options(form: str, url: str) -> dict[str, Any]:
    """storage_options authenticating to Azurite's account at ``url`` in one of adlfs's ways."""
    if form == "connection_string":
        return {"connection_string": azure_connection_string(url)}
    account = {"account_name": AZURITE_ACCOUNT, "account_host": _account_host(url)}
    if form == "account_key":
        return {**account, "account_key": AZURITE_KEY}
    if form == "account_key_https":  # no scheme: adlfs's own https
        https = {"account_host": _account_host(url.removeprefix("http://"))}
        return {**account, "account_key": AZURITE_KEY, **https}
    if form == "sas_token":
        return {**account, "sas_token": _sas_token()}
    if form == "credential":
        return {**account, "credential": AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)}
    return {**account, "anon": True}


AZURE_FORMS = ["connection_string", "account_key", "sas_token", "credential", "anon"]


def _listing_failure(url: str, options: dict[str, Any]) -> tuple[ListingError, float]:
    """The error of listing ``url`` under ONE_RETRY, and the seconds it took."""
    started = time.monotonic()
    with pytest.raises(ListingError) as caught:
        ParquetShardedSource(url, storage_options=options, retry=ONE_RETRY)
    return caught.value, time.monotonic() - started


@pytest.mark.timeout(60)
@pytest.mark.parametrize("form", [*AZURE_FORMS, "account_key_https"])
def test_every_azure_form_fails_fast_on_a_refused_port(form: str) -> None:
    error, seconds = _listing_failure(
        "az://container/data/*.parquet", _azure_options(form, _refused_url())
    )
    assert seconds < 5, f"{seconds:.1f} s: the Azure SDK retried on its own"
    assert "after 1 retry (2 attempts)" in str(error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind, options",
    [
        ("s3", lambda url: {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": url}}),
        ("s3", lambda url: {"anon": True, "client_kwargs": {"endpoint_url": url}}),
        ("gs", lambda url: {"endpoint_url": url, "token": "anon", "project": "test"}),
    ],
    ids=["s3-key", "s3-anon", "gcs-anon"],
)
def test_s3_and_gcs_fail_fast_on_a_refused_port(kind: str, options: Any) -> None:
    error, seconds = _listing_failure(f"{kind}://bucket/data/*.parquet", options(_refused_url()))
    assert seconds < 5
    assert "after 1 retry (2 attempts)" in str(error)


@pytest.fixture(scope="module")
def azure_tables(azure_store: StoreEndpoint) -> dict[bool, str]:
    """A Parquet file in a private and in a public (anonymously readable) Azurite container:
    their glob URLs by ``public``."""
    from azure.storage.blob import BlobServiceClient

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2, 3]}), buffer)
    client = BlobServiceClient.from_connection_string(azure_connection_string(azure_store.url))
    tables = {}
    for public in (False, True):
        container = azure_store.new_bucket("auth")
        azure_store.upload(buffer.getvalue(), f"{container}/data/a.parquet")
        if public:
            client.get_container_client(container.split("://")[1]).set_container_access_policy(
                {}, public_access="container"
            )
        tables[public] = f"{container}/data/*.parquet"
    return tables


@pytest.mark.parametrize("form", AZURE_FORMS)
def test_every_azure_form_reads_from_azurite(
    form: str, azure_store: StoreEndpoint, azure_tables: dict[bool, str]
) -> None:
    url = azure_tables[form == "anon"]
    source = ParquetShardedSource(url, storage_options=_azure_options(form, azure_store.url))
    assert [row["id"] for row in source.open_shard(source.shard_names[0])] == [1, 2, 3]
    client = source._fs.service_client
    assert client._config.retry_policy.total_retries == 0  # our policy alone retries


@pytest.mark.parametrize("form", ["wrong_key", "anon"])
def test_the_private_container_needs_the_right_key(
    azure_store: StoreEndpoint, azure_tables: dict[bool, str], form: str
) -> None:
    if form == "anon":
        options = _azure_options("anon", azure_store.url)
    else:
        options = {**_azure_options("account_key", azure_store.url), "account_key": "d3Jvbmc="}
    with pytest.raises(AccessDeniedError) as caught:
        ParquetShardedSource(azure_tables[False], storage_options=options)
    assert not any(p in str(caught.value) for p in DOUBLED_PERIODS)


# -- messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["data/*.parquet", "data/a.parquet"])
def test_wrong_s3_credentials_say_so_in_one_sentence(s3_store: StoreEndpoint, pattern: str) -> None:
    bucket = s3_store.new_bucket("creds")
    s3_store.upload(b"not read", f"{bucket}/data/a.parquet")
    with pytest.raises(AccessDeniedError) as caught:
        ParquetShardedSource(
            f"{bucket}/{pattern}", storage_options=s3_store.bad_credentials_options()
        )
    message = str(caught.value)
    assert "signature" in message and "Check the credentials" in message
    assert not any(p in message for p in DOUBLED_PERIODS), message


@pytest.mark.parametrize(
    "message, expected",
    [
        ("Denied: Check your key..", "Denied: Check your key. Do this."),
        ("Denied: Check your key. .", "Denied: Check your key. Do this."),
        ("Denied: Check your key.\n.", "Denied: Check your key. Do this."),
        ("No such file '../a.parquet'.", "No such file '../a.parquet'. Do this."),
        ("No such directory 'data/..'.", "No such directory 'data/..'. Do this."),
        ("It said: wait...", "It said: wait... Do this."),
        ("Versions v1..v2 differ.", "Versions v1..v2 differ. Do this."),
    ],
)
def test_source_errors_never_double_a_period(message: str, expected: str) -> None:
    assert str(SourceError(message, hint="Do this.")) == expected


class _FailingFileSystem(fsspec.AbstractFileSystem):
    """A filesystem whose listings fail with a permanent I/O error, counting the attempts."""

    protocol = "failing"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.attempts = 0

    def find(self, path: str, **kwargs: Any) -> list[str]:
        self.attempts += 1
        raise OSError(errno.EIO, "Input/output error")


def test_a_permanent_listing_failure_says_it_was_not_retried() -> None:
    fs = _FailingFileSystem(skip_instance_cache=True)
    with pytest.raises(ListingError) as caught:
        expand_paths(fs, "data/*.parquet", policy=RetryPolicy(max_retries=3), stats=IOStats())
    assert fs.attempts == 1
    assert "failed after 1 attempt (not retried: permanent): OSError" in str(caught.value)
    assert "3 retries" not in str(caught.value)


def _list_hub_offline(endpoint: str, tmp_path: Path) -> str:
    """The error message of listing a Hub dataset with ``HF_ENDPOINT=endpoint``, in a fresh
    process (huggingface_hub reads its endpoint when imported); ``max_retries=2``."""
    code = (
        "from easydata_grain import ParquetShardedSource, RetryPolicy\n"
        "try:\n"
        "    ParquetShardedSource('hf://datasets/nonexistent/x/*.parquet',"
        " retry=RetryPolicy(max_retries=2, initial_backoff=0.01))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_UPDATE_DOWNLOAD_COUNTS="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_offline_hub_listing_states_its_attempts(tmp_path: Path) -> None:
    output = _list_hub_offline(_refused_url(), tmp_path)
    assert output.startswith("ListingError"), output
    assert "failed after 2 retries (3 attempts): ConnectError" in output


class _BadRequest(BaseHTTPRequestHandler):
    """Answers every request with 400 (a permanent error) and records the API calls."""

    calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path.startswith("/api/datasets/"):
            self.calls.append(self.path)
        self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log."""


def test_a_permanent_hub_error_is_not_retried_and_says_so(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadRequest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        output = _list_hub_offline(f"http://127.0.0.1:{server.server_address[1]}", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert output.startswith("ListingError"), output
    assert "failed after 1 attempt (not retried: permanent)" in output
    assert "retries" not in output
    assert _BadRequest.calls == ["/api/datasets/nonexistent/x"]


# -- bytes read from local files -----------------------------------------------------------------


def _chunk_bytes(path: str, columns: list[str] | None, groups: range | None = None) -> int:
    """The compressed size of the column chunks of ``columns`` (all for None) in ``groups``."""
    metadata = pq.read_metadata(path)
    return sum(
        chunk.total_compressed_size
        for group in groups or range(metadata.num_row_groups)
        for chunk in selected_column_chunks(metadata, group, columns)
    )


def test_local_parquet_bytes_read_reflect_the_projection(tmp_path: Path) -> None:
    [path] = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=300, row_group_size=100)
    counts = {}
    for columns in (None, ["id", "input_ids"], ["id"]):
        source = ParquetShardedSource(path, columns=columns)
        assert sum(1 for _ in source.open_shard(path)) == 300
        assert source.stats.bytes_read == _chunk_bytes(path, columns)
        counts[str(columns)] = source.stats.bytes_read
    assert counts["None"] > counts["['id', 'input_ids']"] > counts["['id']"] > 0

    source = ParquetShardedSource(path, columns=["id"])
    assert source.read_block_table(path, 1).num_rows == 100
    assert source.stats.bytes_read == _chunk_bytes(path, ["id"], range(1, 2))
    list(source.open_shard_at_row(path, 250))  # the last row group only
    assert source.stats.bytes_read == _chunk_bytes(path, ["id"], range(1, 3))


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_local_json_bytes_read_count_the_file(tmp_path: Path, name: str) -> None:
    lines = [json.dumps({"id": i, "text": "x" * i}) + "\n" for i in range(200)]
    data = "".join(lines).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    size = path.stat().st_size

    source = JsonShardedSource(str(path), index_cache_dir=tmp_path / "cache")
    assert len(source) == 200 and source.stats.bytes_read == size  # the indexing pass
    assert sum(1 for _ in source.open_shard(str(path))) == 200
    assert source.stats.bytes_read == 2 * size
    if not name.endswith(".gz"):  # a seek skips what lies before the row
        list(source.open_shard_at_row(str(path), 150))
        skipped = len("".join(lines[:150]).encode())
        assert source.stats.bytes_read == 3 * size - skipped
