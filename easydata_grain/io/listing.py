"""Expand paths, globs and directories into a file list; a failed or empty listing raises."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate

from easydata_grain.io.errors import (
    AccessDeniedError,
    ListingError,
    NoFilesMatchedError,
    ShardNotFoundError,
)
from easydata_grain.io.filesystem import protocol_of, to_url
from easydata_grain.io.retry import RetryPolicy, attempts_text, is_access_denied, is_transient
from easydata_grain.io.stats import IOStats

_MAGIC = re.compile(r"[*?\[]")


def _static_prefix(path: str) -> str:
    """The directory part of a pattern before its first wildcard."""
    match = _MAGIC.search(path)
    head = path if match is None else path[: match.start()]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def _list_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """All files under ``root``, raising on any error.

    ``fs.glob`` (and ``find`` with ``maxdepth``) return short or empty results on s3fs when a
    listing request fails; a recursive ``find`` without ``maxdepth`` raises on every store.
    """
    return sorted(fs.find(root, withdirs=False))


def _missing_bucket(fs: fsspec.AbstractFileSystem, path: str, stats: IOStats) -> str | None:
    """The bucket of ``path`` if it does not exist (stores list a missing bucket as empty)."""
    bucket = path.split("/", 1)[0]
    stats.add(requests=1)
    try:
        fs.info(bucket)
    except FileNotFoundError:
        return bucket
    return None


def _expand_one(
    fs: fsspec.AbstractFileSystem,
    pattern: str,
    suffixes: Sequence[str],
    policy: RetryPolicy,
    stats: IOStats,
) -> list[str]:
    protocol = protocol_of(pattern)
    path = fs._strip_protocol(pattern)
    is_glob = _MAGIC.search(path) is not None

    def listing() -> list[str]:
        stats.add(requests=1)  # one per attempt (a listing may take a few)
        if is_glob:
            regex = re.compile(glob_translate(path))
            return [p for p in _list_files(fs, _static_prefix(path)) if regex.match(p)]
        if fs.isdir(path):
            files = _list_files(fs, path)
            return [p for p in files if p.endswith(tuple(suffixes))] if suffixes else files
        if not fs.exists(path):
            raise FileNotFoundError(path)
        return [path]

    attempts = policy.attempts(stats)
    try:
        found = attempts.call(listing)
    except FileNotFoundError as exc:
        if is_glob:
            found = []
        else:
            raise ShardNotFoundError(
                f"No such file or directory: {pattern!r}.",
                path=pattern,
                hint="Check the path and the bucket name.",
            ) from exc
    except Exception as exc:
        if is_access_denied(exc):
            raise AccessDeniedError(
                f"Listing {pattern!r} was refused: {type(exc).__name__}: {exc}.",
                path=pattern,
                hint="Check the credentials in storage_options.",
            ) from exc
        tried = attempts_text(attempts.retries, transient=is_transient(exc))
        raise ListingError(
            f"Listing {pattern!r} failed {tried}: {type(exc).__name__}: {exc}.",
            path=pattern,
            hint="The file list is unknown, so nothing is read; check the store and retry.",
        ) from exc
    if (
        not found
        and protocol != "file"
        and (bucket := policy.call(lambda: _missing_bucket(fs, path, stats), stats=stats))
    ):
        raise ShardNotFoundError(
            f"The bucket {bucket!r} of {pattern!r} does not exist.",
            path=pattern,
            hint="Check the bucket (container) name and the account or endpoint.",
        )
    if not found:
        what = "pattern" if is_glob else "directory"
        wanted = f" (files ending in {', '.join(suffixes)})" if suffixes and not is_glob else ""
        raise NoFilesMatchedError(
            f"The {what} {pattern!r} matched no file{wanted}.",
            path=pattern,
            hint="Check the path, the bucket and the extension.",
        )
    return [to_url(p, protocol) for p in found]


def canonical_url(url: str) -> str:
    """The name that every spelling of one file shares: the absolute, normalised path of a local
    file (relative, ``./`` and ``file://`` forms alike); on a store, the URL with the canonical
    scheme and no leading or trailing slash on the path (repeated slashes inside a key are kept:
    on object stores ``a//b`` and ``a/b`` are different objects)."""
    protocol = protocol_of(url)
    if protocol == "file":
        return os.path.abspath(LocalFileSystem._strip_protocol(url))
    return f"{protocol}://{url.split('://', 1)[-1].strip('/')}"


def expand_paths(
    fs: fsspec.AbstractFileSystem,
    patterns: str | Sequence[str],
    *,
    suffixes: Sequence[str] = (),
    policy: RetryPolicy,
    stats: IOStats,
) -> list[str]:
    """Expand a path, glob or directory (or a list of them) into sorted, de-duplicated file URLs.

    Local paths given without a wildcard keep the form they were given in, so that shard names
    match what the user wrote. A file named twice (by two patterns, or in two spellings: see
    ``canonical_url``) is listed once, where it first appears. A pattern that matches nothing,
    a missing file and a failed listing each raise an error naming the pattern.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise NoFilesMatchedError("No paths were given.", hint="Pass a path, a glob or a list.")
    files: list[str] = []
    seen: set[str] = set()
    for pattern in patterns:
        if protocol_of(pattern) == "file" and _MAGIC.search(pattern) is None:
            expanded = _expand_one(fs, pattern, suffixes, policy, stats)
            if expanded == [fs._strip_protocol(pattern)]:
                expanded = [pattern]
        else:
            expanded = _expand_one(fs, pattern, suffixes, policy, stats)
        for path in expanded:
            key = canonical_url(path)
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files
