"""URL -> fsspec filesystem, with the stores' own retries handed over to our RetryPolicy.

Each store's client retries on its own (s3fs/botocore, gcsfs's ``retry_request``, the Azure
SDK's policy, huggingface_hub's ``http_backoff``). Those retries hide faults from our counters,
ignore "retries disabled", and the Azure SDK's backoff alone takes tens of seconds, so the
filesystems built here turn them off and bound each connect and socket read by the policy's
timeouts: a stalled read becomes a transient fault that our policy retries at the same row.
"""

from __future__ import annotations

import os
import types
import urllib.error
from typing import Any

import fsspec
from fsspec.asyn import sync

from easydata_grain.io.retry import RetryPolicy

# gcsfs otherwise calls a gRPC control API over TLS, which hangs without a real GCS.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

_PROTOCOL_ALIASES = {"gcs": "gs", "s3a": "s3", "abfs": "az", "abfss": "az", "local": "file"}
REMOTE_PROTOCOLS = frozenset({"gs", "s3", "az"})


def protocol_of(url: str) -> str:
    """The canonical protocol of a URL or path: ``gs``, ``s3``, ``az``, ``file``, or another."""
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    return _PROTOCOL_ALIASES.get(scheme, scheme)


def _merge(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``user`` over ``defaults``, merging nested dicts one level deep."""
    merged = dict(defaults)
    for key, value in user.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _s3(options: dict[str, Any], policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    config = {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": policy.connect_timeout,
        "read_timeout": policy.read_timeout,
    }
    fs = fsspec.filesystem(
        "s3", skip_instance_cache=True, **_merge({"config_kwargs": config}, options)
    )
    fs.retries = 1  # s3fs's own loop counts attempts: one attempt, no retry
    return fs


def _gcs(options: dict[str, Any], policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    import aiohttp
    from gcsfs import GCSFileSystem

    timeout = aiohttp.ClientTimeout(
        sock_connect=policy.connect_timeout, sock_read=policy.read_timeout
    )
    fs = fsspec.filesystem(
        "gs", skip_instance_cache=True, **{"requests_timeout": timeout, **options}
    )
    # gcsfs wraps its request methods in @retry_request (6 attempts); bind the undecorated ones.
    for name in ("_request", "_get_file_request", "_get_file_concurrent"):
        undecorated = getattr(GCSFileSystem, name).__wrapped__
        setattr(fs, name, types.MethodType(undecorated, fs))
    return fs


def _azure(options: dict[str, Any], policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    """adlfs, its service client rebuilt without SDK retries and with the policy's timeouts.

    adlfs passes no client options, whichever way it authenticates (connection string, account
    key, SAS token, credential, anonymous), so the client it built is replaced by one with the
    same endpoint and credential. ``account_host`` may carry a scheme, as an emulator needs
    (``http://127.0.0.1:10000/devstoreaccount1``); adlfs alone always uses https.
    """
    from azure.storage.blob.aio import BlobServiceClient

    scheme, _, host = str(options.get("account_host") or "").rpartition("://")
    if scheme:
        options = {**options, "account_host": host}
    fs = fsspec.filesystem("az", skip_instance_cache=True, **options)
    old = fs.service_client
    endpoint = old.primary_endpoint  # with the SAS token, if any, as its query
    if scheme:
        endpoint = f"{scheme}://{endpoint.split('://', 1)[1]}"
    fs.service_client = BlobServiceClient(
        endpoint,
        credential=old.credential,
        secondary_hostname=old.secondary_hostname,
        _location_mode=old.location_mode,
        retry_total=0,
        connection_timeout=policy.connect_timeout,
        read_timeout=policy.read_timeout,
    )
    sync(fs.loop, old.close)
    return fs


def _hf(options: dict[str, Any], policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    """huggingface_hub's ``HfFileSystem``, its files reading each range in one request.

    Its files retry on their own (``http_backoff``: 5 retries on 429, 5xx and dropped
    connections), hidden from our counters; here a range read is one attempt bounded by the
    policy's timeouts. An error answer fails it with an ``urllib.error.HTTPError`` whose
    ``code`` the policy reads (408, 429 and 5xx are retried; 401, 403 and 404 are not), a
    dropped or stalled connection with a ``ConnectionError`` (retried).
    """
    import httpx2
    from huggingface_hub import HfFileSystem
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_file_system import HfFileSystemFile
    from huggingface_hub.utils import get_session, hf_raise_for_status

    timeout = httpx2.Timeout(policy.read_timeout, connect=policy.connect_timeout)

    def fetch_range(file: HfFileSystemFile, start: int, end: int) -> bytes:
        headers = {"range": f"bytes={start}-{end - 1}", **file.fs._api._build_hf_headers()}
        try:
            response = get_session().get(file.url(), headers=headers, timeout=timeout)
            hf_raise_for_status(response)
        except HfHubHTTPError as exc:
            status = exc.response.status_code
            raise urllib.error.HTTPError(file.url(), status, str(exc), None, None) from exc
        except httpx2.TransportError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return response.content

    fs = HfFileSystem(skip_instance_cache=True, **options)

    def open_file(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        file = HfFileSystem._open(fs, path, mode, **kwargs)
        if isinstance(file, HfFileSystemFile):  # its cache already holds the bound method
            file._fetch_range = file.cache.fetcher = types.MethodType(fetch_range, file)
        return file

    fs._open = open_file
    return fs


_BUILDERS = {"s3": _s3, "gs": _gcs, "az": _azure, "hf": _hf}


def filesystem_for(
    url: str, storage_options: dict[str, Any] | None, policy: RetryPolicy
) -> fsspec.AbstractFileSystem:
    """A new filesystem that serves ``url``; ``storage_options`` override our defaults."""
    protocol = protocol_of(url)
    options = dict(storage_options or {})
    builder = _BUILDERS.get(protocol)
    if builder is None:
        return fsspec.filesystem(protocol, **options)
    return builder(options, policy)


def info_is_cached(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether ``fs.info(path)`` is answered from the listing cache, without a request (s3fs,
    gcsfs and adlfs look there first: a file found by a listing is not asked for again)."""
    stripped = fs._strip_protocol(path)
    try:
        entries = fs._ls_from_cache(stripped)
    except FileNotFoundError:  # the parent is cached and does not hold it
        return False
    return any(entry.get("name", "").rstrip("/") == stripped for entry in entries or ())


def to_url(path: str, protocol: str) -> str:
    """A path as returned by the filesystem (no scheme) turned back into a full URL."""
    if protocol == "file" or "://" in path:
        return path
    return f"{protocol}://{path}"
