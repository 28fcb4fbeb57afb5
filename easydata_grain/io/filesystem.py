"""URL -> fsspec filesystem, with the stores' own retries handed to our RetryPolicy."""

from __future__ import annotations

import os
from typing import Any

import fsspec

# gcsfs otherwise calls a gRPC control API over TLS at import, which hangs without a real GCS.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

_PROTOCOL_ALIASES = {"gcs": "gs", "s3a": "s3", "abfs": "az", "abfss": "az", "local": "file"}
REMOTE_PROTOCOLS = frozenset({"gs", "s3", "az"})

# Each store's client retries on its own; those retries hide faults from our counters and from
# the "retries disabled" setting, and the Azure SDK's backoff alone can take tens of seconds.
# Our RetryPolicy is the one retry layer, so the defaults turn the clients' own retries off.
# Anything the user passes in ``storage_options`` wins over these.
_STORE_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"retries": 1, "config_kwargs": {"retries": {"max_attempts": 0, "mode": "standard"}}},
    "gs": {},
    "az": {},
}


def protocol_of(url: str) -> str:
    """The canonical protocol of a URL or path: ``gs``, ``s3``, ``az``, ``file``, or another."""
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    return _PROTOCOL_ALIASES.get(scheme, scheme)


def store_options(protocol: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The options a filesystem is built with: our defaults for the store, then the user's."""
    options = {
        key: dict(value) if isinstance(value, dict) else value
        for key, value in _STORE_DEFAULTS.get(protocol, {}).items()
    }
    for key, value in (storage_options or {}).items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            options[key] = {**options[key], **value}
        else:
            options[key] = value
    return options


def filesystem_for(
    url: str, storage_options: dict[str, Any] | None = None
) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves ``url`` (local paths included)."""
    protocol = protocol_of(url)
    return fsspec.filesystem(protocol, **store_options(protocol, storage_options))


def to_url(fs: fsspec.AbstractFileSystem, path: str, protocol: str) -> str:
    """A path as returned by the filesystem (no scheme) turned back into a full URL."""
    if protocol == "file" or "://" in path:
        return path
    return f"{protocol}://{path}"
