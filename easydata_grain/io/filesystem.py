"""URL -> fsspec filesystem, with the stores' own retries handed over to our RetryPolicy.

Each store's client retries on its own (s3fs/botocore, gcsfs's ``retry_request``, the Azure
SDK's policy, huggingface_hub's ``http_backoff``). Those retries hide faults from our counters,
ignore "retries disabled", and the Azure SDK's backoff alone takes tens of seconds, so the
filesystems built here turn them off and bound each connect and socket read by the policy's
timeouts: a stalled read becomes a transient fault that our policy retries at the same row.
"""

from __future__ import annotations

import os
import re
import types
import urllib.error
from typing import Any

import fsspec
from fsspec.asyn import sync

from easydata_grain.io.errors import CommitNotFoundError, OfflineError
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.io.stats import IOStats

# gcsfs otherwise calls a gRPC control API over TLS, which hangs without a real GCS.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

_PROTOCOL_ALIASES = {"gcs": "gs", "s3a": "s3", "abfs": "az", "abfss": "az", "local": "file"}
REMOTE_PROTOCOLS = frozenset({"gs", "s3", "az", "hf"})
"""The protocols whose shards are read range by range (``io.remote_file.RemoteFile``)."""


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


_PINNED_URL = re.compile(
    r"^(?:hf://)?datasets/(?P<repo>[^@/]+/[^@/]+)@(?P<commit>[0-9a-f]{40})/(?P<path>.+)$"
)


def hub_commit_gone(repo_id: str, commit: str, detail: str) -> CommitNotFoundError:
    """The error for a Hub dataset's commit that no longer exists (``detail``: what failed)."""
    return CommitNotFoundError(
        f"The commit {commit} of the Hub dataset {repo_id!r} is gone: the Hub has no such "
        f"revision any more (its history was squashed or rewritten, or the revision deleted), so "
        f"{detail}, which a source, a cached resolution or a loader state is pinned to.",
        path=repo_id,
        hint="To resume exactly, restore the data at that commit on the Hub (e.g. push it "
        "back as a branch or tag). Otherwise start from a fresh state: build the source again "
        "without revision=<that sha> (with cache_dir=, delete its cached resolution: "
        "source.resolution_cache), and start the loader without the old state (a state saved "
        "at the old commit does not fit other data).",
    )


def hub_offline(what: str, hint: str) -> OfflineError:
    """The error for a Hub request refused because ``HF_HUB_OFFLINE`` is set."""
    return OfflineError(f"HF_HUB_OFFLINE is set, so {what} cannot be read from the Hub.", hint=hint)


def _hf(options: dict[str, Any], policy: RetryPolicy) -> fsspec.AbstractFileSystem:
    """huggingface_hub's ``HfFileSystem``, its files reading each range in one request.

    Its files retry on their own (``http_backoff``: 5 retries on 429, 5xx and dropped
    connections), hidden from our counters; here a range read is one attempt bounded by the
    policy's timeouts. An error answer fails it with an ``urllib.error.HTTPError`` whose
    ``code`` the policy reads (408, 429 and 5xx are retried; 401, 403 and 404 are not) and whose
    ``headers`` carry the answer's (``Retry-After``, which the policy obeys); a dropped or
    stalled connection with a ``ConnectionError`` (retried). A commit that is gone from the Hub
    raises ``CommitNotFoundError``, ``HF_HUB_OFFLINE`` an ``OfflineError`` (neither retried).

    Two options of ours (taken out before ``HfFileSystem`` sees the rest):

    - ``pinned_files``: ``{url: {"size": int, "etag": str}}`` for files at a commit sha
      (``hf://datasets/{repo}@{sha}/{path}``). Their entries are known, so ``info``, ``exists``
      and ``open`` answer them without a request, and the commit is not asked for (a commit
      that is gone shows on the first read).
    - ``request_stats``: an ``IOStats`` that counts every range request (failed ones too) and
      the body bytes received: the requests this filesystem sends for pinned files.
    """
    import httpx2
    from huggingface_hub import HfFileSystem
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError
    from huggingface_hub.hf_file_system import HfFileSystemFile
    from huggingface_hub.utils import get_session, hf_raise_for_status

    options = dict(options)
    pinned = options.pop("pinned_files", None) or {}
    counter: IOStats | None = options.pop("request_stats", None)
    timeout = httpx2.Timeout(policy.read_timeout, connect=policy.connect_timeout)

    def fetch_range(file: HfFileSystemFile, start: int, end: int) -> bytes:
        headers = {"range": f"bytes={start}-{end - 1}", **file.fs._api._build_hf_headers()}
        url = file.url()
        if counter is not None:
            counter.add(requests=1)
        try:
            response = get_session().get(url, headers=headers, timeout=timeout)
            hf_raise_for_status(response)
        except RevisionNotFoundError as exc:
            where = file.resolved_path
            raise hub_commit_gone(
                where.repo_id, where.revision, f"{where.path_in_repo!r} cannot be read at it"
            ) from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code
            answer = exc.response.headers
            raise urllib.error.HTTPError(url, status, str(exc), answer, None) from exc  # type: ignore[arg-type]
        except OfflineModeIsEnabled as exc:
            raise hub_offline(
                f"hf://{file.path}",
                "Streaming reads need the Hub: read local copies instead (streaming=False with "
                "a cache_dir= the files were downloaded to while online).",
            ) from exc
        except httpx2.TransportError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if counter is not None:
            counter.add(bytes_read=len(response.content))
        return response.content

    fs = HfFileSystem(skip_instance_cache=True, **options)
    for url, entry in pinned.items():
        match = _PINNED_URL.match(url)
        if match is None:
            raise ValueError(
                f"pinned_files takes hf://datasets/{{repo}}@{{sha}}/... URLs, got {url!r}"
            )
        fs._repo_and_revision_exists_cache[("dataset", match["repo"], match["commit"])] = (
            True,
            None,
        )
        name = fs._strip_protocol(url)
        known = {"name": name, "size": int(entry["size"]), "type": "file", "etag": entry["etag"]}
        fs.dircache.setdefault(fs._parent(name), []).append(known)

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


def listed_entries(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, dict[str, Any]]:
    """The entries of ``folder`` in fsspec's listing cache, by name (empty when it was not
    listed). s3fs, gcsfs and adlfs fill it when they list and answer ``info`` from it: a file
    found by a listing is not asked for again. One dict for the folder, so that looking up N
    files is O(N), not N scans of the listing."""
    return {entry.get("name", "").rstrip("/"): entry for entry in fs.dircache.get(folder) or ()}


def to_url(path: str, protocol: str) -> str:
    """A path as returned by the filesystem (no scheme) turned back into a full URL."""
    if protocol == "file" or "://" in path:
        return path
    return f"{protocol}://{path}"
