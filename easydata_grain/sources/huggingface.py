"""HuggingFaceShardedSource: a Hub dataset's data files, pinned to one commit, as real shards.

``datasets`` and ``huggingface_hub`` resolve a name, subset, split and revision to the files
``datasets.load_dataset`` would read (README ``configs:``, default patterns, ``data_dir``,
``data_files``), at one commit sha, which their ``hf://datasets/{repo}@{sha}/...`` URLs carry.
Those files are the shards of a ``ParquetShardedSource`` or ``JsonShardedSource`` read over
``hf://`` (``streaming=True``) or from local copies in the Hub cache (``streaming=False``), so
indexed mode, O(1) seeks, column projection and retries are theirs.

With ``cache_dir``, the resolution (commit, format, files, sizes) and the Parquet footers are
kept in one JSON file per request under ``cache_dir/easydata_hub/``; a second construction of
the same request reads them and sends no request at all (not even for a branch: a restarted job
reads the commit it started on). JSON line indexes are kept by the JSON source under
``cache_dir/indexes``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import (
    AccessDeniedError,
    MissingColumnError,
    NoFilesMatchedError,
    OfflineError,
    ShardNotFoundError,
    SourceError,
    UnsupportedFormatError,
)
from easydata_grain.io.filesystem import hub_commit_gone, hub_offline
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.file_source import ShardMeta, _decode, _encode
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.metadata_cache import decode_footer, encode_footer
from easydata_grain.sources.metadata_sharing import MetadataSharing, default_sharing
from easydata_grain.sources.parquet import ParquetIndex, ParquetShardedSource
from easydata_grain.sources.protocol import projected_identities
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row

logger = logging.getLogger(__name__)

_LOGIN = "Log in with `huggingface-cli login` (or `hf auth login`), or pass token=."
_EXPORT = "refs/convert/parquet"
_DOWNLOAD_THREADS = 8
_SNIFF_BYTES = 4096
STREAMED = "datasets"
"""``HubFiles.kind`` of files only ``datasets`` reads: a ``DatasetsStreamSource`` streams them."""
_SHA = re.compile(r"[0-9a-f]{40}")
_CACHE_FOLDER = "easydata_hub"
_CACHE_FORMAT = 1
_PATHS_INFO_BATCH = 500
_REQUEST_FIELDS = ("dataset_name", "subset", "split", "revision", "data_dir", "data_files")


@dataclasses.dataclass(frozen=True)
class HubFiles:
    """What a dataset name, subset, split and revision resolved to."""

    repo_id: str
    subset: str
    split: str
    commit: str | None
    """The commit sha the files are read at (None for a local directory)."""
    kind: str
    """``"parquet"``, ``"jsonl"`` (JSON Lines) or ``"json"`` (JSON arrays)."""
    urls: tuple[str, ...]
    """``hf://datasets/{repo_id}@{commit}/{path}`` (local paths for a local directory)."""
    origin: str
    """Where the files come from, in words."""
    sizes: tuple[int, ...] = ()
    """Each file's size in bytes (empty for a local directory)."""
    etags: tuple[str, ...] = ()
    """Each file's content id at the commit: its LFS sha256 or git blob id (empty for a local
    directory)."""


def _whose_token(token: str | None) -> str:
    """The token a request carried, in words (never the token)."""
    return "the token given" if token else "the login's token (if any: no token= was given)"


def _gated(repo_id: str, token: str | None) -> AccessDeniedError:
    return AccessDeniedError(
        f"The dataset {repo_id!r} is gated and the Hub refused {_whose_token(token)}.",
        path=repo_id,
        hint=f"Accept its conditions on its Hub page with your account, then: {_LOGIN}",
    )


def _hub_error(
    exc: Exception, repo_id: str, revision: str | None, token: str | None
) -> SourceError | None:
    """Our error for a ``huggingface_hub`` error about ``repo_id`` (None for other errors)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return _gated(repo_id, token)
    if isinstance(exc, RevisionNotFoundError) and revision and _SHA.fullmatch(revision):
        return hub_commit_gone(repo_id, revision, "it cannot be resolved")
    if isinstance(exc, RevisionNotFoundError):
        return ShardNotFoundError(
            f"The dataset {repo_id!r} has no revision {revision!r}.",
            path=repo_id,
            hint="Pass one of its branches, tags or commit shas (revision=None reads main).",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ShardNotFoundError(
            f"The dataset {repo_id!r} was not found on the Hub ({constants.ENDPOINT}), or it "
            f"is private and {_whose_token(token)} cannot read it.",
            path=repo_id,
            hint=f"Check the name ('org/name'). If the dataset is private: {_LOGIN}",
        )
    return None


def _unreachable(exc: BaseException) -> bool:
    """Whether a request failed because the Hub could not be reached (offline mode, a refused
    or dropped connection, a timeout), not because of its answer."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError) or (
            type(current).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")
            and "Error" in type(current).__name__
            and getattr(current, "response", None) is None
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _nothing_cached(repo_id: str, cache_dir: str | None, exc: BaseException | None) -> OfflineError:
    """The error for a Hub dataset that cannot be resolved offline: nothing is cached."""
    from huggingface_hub import constants

    where = (
        f"nothing is cached for this request in cache_dir={cache_dir!r}"
        if cache_dir
        else "nothing is cached (no cache_dir= was given)"
    )
    why = (
        "HF_HUB_OFFLINE is set"
        if exc is None or constants.is_offline_mode()
        else f"the Hub ({constants.ENDPOINT}) cannot be reached ({type(exc).__name__}: {exc})"
    )
    return OfflineError(
        f"The dataset {repo_id!r} cannot be resolved: {why}, and {where}.",
        path=repo_id,
        hint="Build the source once online with the same arguments and a cache_dir= (with "
        "streaming=False the files are kept there too, so it reads offline), then use that "
        "cache_dir=; or check the network and unset HF_HUB_OFFLINE.",
    )


def _commit_of(
    repo_id: str, revision: str | None, token: str | None
) -> tuple[str, bool, dict[str, tuple[int, str]]]:
    """The commit sha ``revision`` (None: main) of dataset ``repo_id`` is at, whether the
    dataset is gated, and the size and content id (LFS sha256 or blob id) of its files."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(token=token).dataset_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        error = _hub_error(exc, repo_id, revision, token)
        if error is None:
            raise
        raise error from exc
    entries = {
        sibling.rfilename: (sibling.size, sibling.lfs.sha256 if sibling.lfs else sibling.blob_id)
        for sibling in info.siblings or ()
        if sibling.size is not None
    }
    return info.sha, bool(info.gated), entries


def _entries(
    repo_id: str,
    commit: str,
    urls: Sequence[str],
    known: Mapping[str, tuple[int, str]],
    token: str | None,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The sizes and content ids of the files ``urls`` at ``commit``: from ``known`` (the
    repo info's), asking the Hub (paths-info) only for those it lacks."""
    from huggingface_hub import HfApi

    prefix = f"hf://datasets/{repo_id}@{commit}/"
    paths = [url.removeprefix(prefix) for url in urls]
    missing = [p for p in paths if p not in known]
    found = dict(known)
    for at in range(0, len(missing), _PATHS_INFO_BATCH):
        batch = missing[at : at + _PATHS_INFO_BATCH]
        infos = HfApi(token=token).get_paths_info(
            repo_id, batch, revision=commit, repo_type="dataset"
        )
        for entry in infos:
            if getattr(entry, "size", None) is not None:
                found[entry.path] = (entry.size, entry.lfs.sha256 if entry.lfs else entry.blob_id)
    lost = [p for p in paths if p not in found]
    if lost:
        raise ShardNotFoundError(
            f"The dataset {repo_id!r} has no file {lost[0]!r} at commit {commit} "
            f"({len(lost)} of its {len(paths)} data files are missing).",
            path=repo_id,
            hint="The repo changed while it was resolved; build the source again.",
        )
    return tuple(found[p][0] for p in paths), tuple(str(found[p][1]) for p in paths)


def _listed_entries(
    builder: Any, repo_id: str, commit: str, urls: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """The size and content id (LFS sha256 or blob id) of each of the files ``urls`` (of
    ``repo_id`` at ``commit``) that ``datasets`` listed while making ``builder``, by path in
    the repo. Its listings stay in its ``HfFileSystem`` (fsspec keeps one instance per
    arguments and thread, which ``datasets``' own URL preparation gives back), so no request is
    made; a file not listed there is left out (``_entries`` asks the Hub for it)."""
    from datasets import DownloadConfig
    from datasets.utils.file_utils import _prepare_path_and_storage_options

    config = DownloadConfig(token=builder.token, storage_options=builder.storage_options)
    prefix = f"hf://datasets/{repo_id}@{commit}/"
    found: dict[str, tuple[int, str]] = {}
    for url in urls:
        prepared, options = _prepare_path_and_storage_options(url, download_config=config)
        fs, path = fsspec.core.url_to_fs(prepared, **options)
        for entry in fs.dircache.get(fs._parent(path), ()):
            if entry.get("name") == path and entry.get("size") is not None:
                lfs = entry.get("lfs")
                content = lfs["sha256"] if lfs else entry["blob_id"]
                found[url.removeprefix(prefix)] = (entry["size"], content)
    return found


def _builder(
    repo_id: str,
    subset: str | None,
    revision: str | None,
    token: str | None,
    *,
    gated: bool,
    data_dir: str | None = None,
    data_files: Any = None,
) -> Any:
    """``datasets``' builder for the dataset: its config lists the data files of each split."""
    import datasets
    from datasets.data_files import EmptyDatasetError
    from datasets.exceptions import DataFilesNotFoundError, DatasetNotFoundError

    try:
        return datasets.load_dataset_builder(
            repo_id,
            subset,
            revision=revision,
            token=token,
            data_dir=data_dir,
            data_files=data_files,
        )
    except (DataFilesNotFoundError, EmptyDatasetError) as exc:
        asked = {"data_dir": data_dir, "data_files": data_files, "subset": subset}
        given = "".join(f" {k}={v!r}" for k, v in asked.items() if v is not None)
        raise NoFilesMatchedError(
            f"No data files of the dataset {repo_id!r} match{given}: {exc}.",
            path=repo_id,
            hint="Check data_dir and data_files against the repo's files (paths are relative "
            "to the repo's root).",
        ) from exc
    except RuntimeError as exc:  # datasets 4+: "Dataset scripts are no longer supported"
        if "script" not in str(exc):
            raise
        raise UnsupportedFormatError(
            f"The dataset {repo_id!r} is made by a loading script, which datasets "
            f"{datasets.__version__} no longer runs: {exc}.",
            path=repo_id,
            hint="Read its Parquet export (refs/convert/parquet) if the Hub made one, or "
            "convert the data to Parquet or JSON Lines.",
        ) from exc
    except DatasetNotFoundError as exc:
        if gated:
            raise _gated(repo_id, token) from exc
        raise ShardNotFoundError(
            f"The dataset {repo_id!r} cannot be read: {exc}.", path=repo_id, hint=_LOGIN
        ) from exc
    except ValueError as exc:  # datasets' way to say that the subset is unknown or missing
        where = {"revision": revision, "token": token}
        subsets = datasets.get_dataset_config_names(repo_id, **where)
        if subset in subsets or (
            subset is None and datasets.get_dataset_default_config_name(repo_id, **where)
        ):
            raise
        wrong = f"has no subset {subset!r}" if subset else "has no default subset"
        raise ShardNotFoundError(
            f"The dataset {repo_id!r} {wrong}; its subsets are {subsets}.",
            path=repo_id,
            hint="Pass one of them as subset=.",
        ) from exc


def _split_files(builder: Any, repo_id: str, split: str) -> tuple[str, ...]:
    """The data files of ``split``, in ``datasets``' order."""
    files = {str(name): tuple(urls) for name, urls in (builder.config.data_files or {}).items()}
    if split not in files:
        raise ShardNotFoundError(
            f"The subset {builder.config.name!r} of the dataset {repo_id!r} has no split "
            f"{split!r}; its splits are {list(files)}.",
            path=repo_id,
            hint="Pass one of them as split=.",
        )
    return files[split]


def _kind_of(builder: Any, urls: Sequence[str], token: str | None) -> str | None:
    """How our sources read the builder's files: ``"parquet"``, ``"jsonl"`` (JSON Lines) or
    ``"json"`` (each file one JSON array, as the first file shows); None when they cannot (CSV,
    Arrow, text...; JSON whose rows sit under a ``field``)."""
    if builder.name == "parquet":
        return "parquet"
    if builder.name != "json" or builder.config.field is not None:
        return None
    options = {"token": token} if token is not None and urls[0].startswith("hf://") else {}
    with fsspec.open(urls[0], "rb", compression="infer", **options) as first:
        return "json" if first.read(_SNIFF_BYTES).lstrip()[:1] == b"[" else "jsonl"


def _parquet_export(repo_id: str, token: str | None) -> str | None:
    """The commit of the dataset's Parquet export (``refs/convert/parquet``), if it has one."""
    from huggingface_hub import HfApi

    refs = HfApi(token=token).list_repo_refs(repo_id, repo_type="dataset")
    return next((ref.target_commit for ref in refs.converts if ref.ref == _EXPORT), None)


def resolve_hub_files(
    dataset_name: str,
    subset: str | None,
    split: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    data_dir: str | None = None,
    data_files: Any = None,
) -> tuple[HubFiles, Any]:
    """The files ``datasets.load_dataset`` reads for this name, subset, split and revision,
    pinned to the commit the revision is at now; files of other formats are replaced by the
    dataset's Parquet export when it has one, else left to ``datasets`` (kind ``"datasets"``).
    With them, the ``datasets`` builder that lists them (the export's for an export)."""
    local = os.path.isdir(dataset_name)
    if local and revision is not None:
        raise ValueError(f"{dataset_name!r} is a local directory: it has no revision= to pick.")
    commit, gated, known = (None, False, {}) if local else _commit_of(dataset_name, revision, token)
    files = {"data_dir": data_dir, "data_files": data_files}
    builder = _builder(dataset_name, subset, commit, token, gated=gated, **files)
    urls = _split_files(builder, dataset_name, split)
    name = builder.config.name
    kind = _kind_of(builder, urls, token)
    if kind is not None:
        origin = "its data files"
        if commit is None:
            return HubFiles(dataset_name, name, split, commit, kind, urls, origin), builder
        entries = _entries(dataset_name, commit, urls, known, token)
        return HubFiles(dataset_name, name, split, commit, kind, urls, origin, *entries), builder
    export = None if local else _parquet_export(dataset_name, token)
    if export is None:
        origin = (
            f"the repo holds {builder.name} files, which HuggingFaceShardedSource reads only as "
            f"Parquet or JSON, and it has no Parquet export ({_EXPORT})"
        )
        return HubFiles(dataset_name, name, split, commit, STREAMED, urls, origin), builder
    exported = _builder(dataset_name, None, export, token, gated=gated, data_dir=name)
    urls = _split_files(exported, dataset_name, split)
    origin = f"its Parquet export ({_EXPORT}; the repo holds {builder.name} files)"
    listed = _listed_entries(exported, dataset_name, export, urls)
    entries = _entries(dataset_name, export, urls, listed, token)
    return HubFiles(dataset_name, name, split, export, "parquet", urls, origin, *entries), exported


def _download(files: HubFiles, cache_dir: str | None, token: str | None) -> list[str]:
    """Local copies of the files in the Hub cache (``cache_dir``, else ``HF_HOME``'s)."""
    from huggingface_hub import hf_hub_download

    prefix = f"hf://datasets/{files.repo_id}@{files.commit}/"

    def download(url: str) -> str:
        try:
            return hf_hub_download(
                files.repo_id,
                url.removeprefix(prefix),
                repo_type="dataset",
                revision=files.commit,
                cache_dir=cache_dir,
                token=token,
            )
        except Exception as exc:
            from huggingface_hub import constants
            from huggingface_hub.errors import LocalEntryNotFoundError

            if isinstance(exc, LocalEntryNotFoundError) and constants.is_offline_mode():
                raise hub_offline(
                    f"the file {url!r} (not in cache_dir={cache_dir!r})",
                    "Download the files once online with streaming=False and this cache_dir=.",
                ) from exc
            error = _hub_error(exc, files.repo_id, files.commit, token)
            if error is None:
                raise
            raise error from exc

    with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
        return list(pool.map(download, files.urls))


# -- the resolution cache (cache_dir) ------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _footer_entry(meta: ShardMeta) -> dict[str, Any]:
    """A Parquet shard's metadata as JSON: its footer (Thrift bytes, as a ``_metadata`` file
    holds it), its projected schema (Arrow IPC) and its row-group starts; no pickle."""
    return {
        "num_rows": meta.num_rows,
        "identity": meta.identity,
        "size": meta.size,
        "version": meta.version,
        "schema": _b64(meta.schema.serialize().to_pybytes()),
        "footer": encode_footer(meta.index.metadata),
        "group_starts": list(meta.index.group_starts),
    }


def _footer_meta(entry: Mapping[str, Any]) -> ShardMeta:
    """The ``ShardMeta`` of a ``_footer_entry``, checked (ValueError when it does not hold)."""
    metadata = decode_footer(entry["footer"])
    starts = tuple(int(s) for s in entry["group_starts"])
    expected = [0]
    for group in range(metadata.num_row_groups - 1):
        expected.append(expected[-1] + metadata.row_group(group).num_rows)
    if metadata.num_row_groups and list(starts) != expected:
        raise ValueError("row-group starts that do not match the footer")
    if metadata.num_rows != int(entry["num_rows"]):
        raise ValueError("a row count that does not match the footer")
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["schema"])))
    return ShardMeta(
        num_rows=metadata.num_rows,
        schema=schema,
        identity=str(entry["identity"]),
        size=int(entry["size"]),
        index=ParquetIndex(metadata, starts),
        version=entry["version"],
    )


class HubCache:
    """One resolution of a Hub dataset request, and its shards' Parquet footers, kept in a JSON
    file ``<cache_dir>/easydata_hub/<digest of the request>.json``.

    The request is the endpoint, name, subset, split, revision, ``data_dir`` and ``data_files``
    (never the token). An entry is written to a temporary file and renamed, so readers never see
    a partial one; one that cannot be read, is of another format or request, or holds footers
    that fail their checks is logged and ignored (resolved or read again), never trusted.
    """

    def __init__(self, cache_dir: str, request: Mapping[str, Any]):
        self.request = json.loads(json.dumps(dict(request), sort_keys=True, default=str))
        self.path = os.path.join(cache_dir, _CACHE_FOLDER, f"{digest(self.request)}.json")
        """The entry's file: delete it to resolve the request again."""

    def load(self) -> dict[str, Any] | None:
        """The entry, or None when there is none (or none to trust)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                entry = json.load(handle)
            if entry.get("format") != _CACHE_FORMAT or entry.get("request") != self.request:
                raise ValueError("an entry of another format or request")
            HubFiles(**{**entry["files"], "urls": tuple(entry["files"]["urls"])})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "Ignoring the Hub cache entry %s: %s: %s", self.path, type(exc).__name__, exc
            )
            return None
        return entry

    def save(self, entry: Mapping[str, Any]) -> None:
        """Write the entry atomically; a cache that cannot be written is logged, not raised."""
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        except OSError as exc:
            logger.warning("Could not write the Hub cache entry %s: %s", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({**entry, "format": _CACHE_FORMAT, "request": self.request}, handle)
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("Could not write the Hub cache entry %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def footers(self, key: str) -> list[ShardMeta] | None:
        """The cached metadata of a Parquet source's shards (``key``: its configuration)."""
        entry = self.load()
        found = None if entry is None else entry.get("footers", {}).get(key)
        if found is None:
            return None
        try:
            return [_footer_meta(item) for item in found]
        except (ValueError, KeyError, TypeError, OSError, pa.ArrowException) as exc:
            logger.warning(
                "Ignoring the footers cached in %s: %s: %s", self.path, type(exc).__name__, exc
            )
            return None

    def save_footers(self, key: str, metas: Sequence[ShardMeta]) -> None:
        """Add a Parquet source's shard metadata to the entry (kept only if the entry is)."""
        entry = self.load()
        if entry is not None:
            footers = {**entry.get("footers", {}), key: [_footer_entry(m) for m in metas]}
            self.save({**entry, "footers": footers})


class _PinnedMetadata:
    """The ``MetadataSharing`` of the Parquet or JSON source under a ``HuggingFaceShardedSource``.

    Its listing is the resolution itself (the files at the commit, already listed by
    ``datasets``): nothing is listed again. Its shards' metadata is read as usual (here or on
    host 0 of a slice, by ``inner``), from the ``HubCache`` when it holds the footers, which are
    added to it once read. Every host takes part in the same shares, whatever its cache holds.
    """

    def __init__(self, urls: Sequence[str], cache: HubCache | None, inner: MetadataSharing):
        self.urls = list(urls)
        self.cache = cache
        self.inner = inner
        self.footers_cached = False
        """Whether the shards' metadata came from the cache."""
        self._listed = False

    def share(self, compute: Callable[[], Any], *, what: str, key: str) -> Any:
        """The file list (the source's first request, at its construction), then metadata."""
        if not self._listed:
            self._listed = True
            return list(self.urls)
        return self.inner.share(lambda: self._metadata(compute, key), what=what, key=key)

    def _metadata(self, compute: Callable[[], Any], key: str) -> Any:
        cached = None if self.cache is None else self.cache.footers(key)
        if cached is not None and len(cached) == len(self.urls):
            self.footers_cached = True
            return [_encode(meta) for meta in cached]
        encoded = compute()
        metas = [_decode(text) for text in encoded]
        if self.cache is not None and all(isinstance(m.index, ParquetIndex) for m in metas):
            self.cache.save_footers(key, metas)
        return encoded

    def __repr__(self) -> str:
        return f"_PinnedMetadata({len(self.urls)} files, inner={self.inner!r})"


def _resolution(
    dataset_name: str,
    split: str,
    subset: str | None,
    revision: str | None,
    token: str | None,
    data_dir: str | None,
    data_files: Any,
    cache_dir: str | None,
) -> tuple[HubFiles, str | None, HubCache | None, Any]:
    """What the request resolves to (from ``cache_dir``'s entry when there is one, else from
    the Hub, once for all hosts), when the cached entry was made, the cache, and the
    ``datasets`` builder of the files when this process resolved them (else None)."""
    asked = [dataset_name, subset, split, revision, data_dir, data_files]
    made: list[Any] = []
    cache = None
    if cache_dir is not None and not os.path.isdir(dataset_name):
        from huggingface_hub import constants

        request = dict(zip(_REQUEST_FIELDS, asked, strict=True), endpoint=constants.ENDPOINT)
        cache = HubCache(cache_dir, request)

    def resolve() -> dict[str, Any]:
        entry = None if cache is None else cache.load()
        if entry is not None:
            return {**entry["files"], "cached_at": entry["resolved_at"]}
        from huggingface_hub import constants

        if constants.is_offline_mode() and not os.path.isdir(dataset_name):
            raise _nothing_cached(dataset_name, cache_dir, None)
        try:
            files, builder = resolve_hub_files(
                dataset_name,
                subset,
                split,
                revision=revision,
                token=token,
                data_dir=data_dir,
                data_files=data_files,
            )
        except SourceError:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise _nothing_cached(dataset_name, cache_dir, exc) from exc
            raise
        made.append(builder)
        found = dataclasses.asdict(files)
        if cache is not None:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            cache.save({"files": found, "resolved_at": now, "footers": {}})
        return {**found, "cached_at": None}

    resolved = default_sharing().share(
        resolve,
        what=f"the files of the Hub dataset {dataset_name!r}",
        key=digest(["HuggingFaceShardedSource", *asked]),
    )
    cached_at: str | None = resolved.pop("cached_at")
    fields = {**resolved, "urls": tuple(resolved["urls"])}
    fields.update(sizes=tuple(resolved["sizes"]), etags=tuple(resolved["etags"]))
    return HubFiles(**fields), cached_at, cache, made[0] if made else None


class HuggingFaceShardedSource(TransformableSource):
    """A split of a Hugging Face Hub dataset, its data files as shards, read in indexed mode.

    ``dataset_name`` is a repo id (``"HuggingFaceFW/fineweb"``) or a local directory laid out
    like one; ``subset`` (a config name), ``split``, ``data_dir`` and ``data_files`` pick the
    files exactly as ``datasets.load_dataset`` does. ``revision`` (a branch, tag or sha; main by
    default) is pinned to its commit sha at construction: the shard names
    (``hf://datasets/{repo}@{sha}/{path}``), the identities and so the loader's fingerprint
    carry it, and a resumed job reads the same bytes after the repo is updated.

    Parquet and JSON Lines files (compressed too) are read by ``ParquetShardedSource`` and
    ``JsonShardedSource``: with ``streaming=True`` straight from the Hub (``hf://``, ranges
    only, retried by ``retry``), with ``streaming=False`` from copies downloaded into the Hub
    cache (``cache_dir``, default ``HF_HOME``'s); the rows and their order are the same. Other
    formats are read from the dataset's Parquet export (``refs/convert/parquet``) when it has
    one; otherwise the constructor returns a ``DatasetsStreamSource`` instead: ``datasets``
    streams the files (one shard per file, at the same commit) and the loader reads them in
    streaming mode, since their row counts are unknown (``streaming``, ``cache_dir`` and
    ``storage_options`` do not apply to it). ``columns`` projects; ``token`` (default: the
    login's) opens private and gated datasets, and never appears in a message.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """A ``DatasetsStreamSource`` for a split only ``datasets`` can read (it has no row
        counts, so it must not look like an ``IndexedSource``); else a new instance, which
        ``__init__`` builds from the resolution made here."""
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        except TypeError:
            return self  # unpickling and copying (no arguments), or __init__ names the mistake
        bound.apply_defaults()
        a = bound.arguments
        if not isinstance(a["dataset_name"], str) or not a["dataset_name"]:
            return self  # __init__ raises the TypeError
        cache_dir = None if a["cache_dir"] is None else os.fspath(a["cache_dir"])
        asked = ("split", "subset", "revision", "token", "data_dir", "data_files")
        resolution = _resolution(a["dataset_name"], *(a[k] for k in asked), cache_dir)
        files, builder = resolution[0], resolution[3]
        if files.kind != STREAMED:
            self._resolution = resolution
            return self
        from easydata_grain.sources.datasets_stream import DatasetsStreamSource

        return DatasetsStreamSource(
            a["dataset_name"],
            a["split"],
            a["subset"],
            revision=files.commit,
            token=a["token"],
            data_files=a["data_files"],
            data_dir=a["data_dir"],
            columns=a["columns"],
            retry=a["retry"],
            why=files.origin,
            builder=builder,
        )

    def __init__(
        self,
        dataset_name: str,
        split: str = "train",
        subset: str | None = None,
        streaming: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        revision: str | None = None,
        token: str | None = None,
        data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
        data_dir: str | None = None,
        columns: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ):
        if not isinstance(dataset_name, str) or not dataset_name:
            raise TypeError(f"dataset_name must be a repo id or a directory, got {dataset_name!r}")
        if columns is not None and (isinstance(columns, str) or not columns):
            raise TypeError(f"columns must be a non-empty list of column names, got {columns!r}")
        self.streaming = bool(streaming)
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.columns = None if columns is None else list(columns)
        self.revision = revision
        """The revision asked for (None: main), which ``files.commit`` pins."""
        files, self.cached_at, cache, _ = self.__dict__.pop("_resolution", None) or _resolution(
            dataset_name, split, subset, revision, token, data_dir, data_files, self.cache_dir
        )
        """When the resolution read from ``cache_dir`` was made (UTC); None: resolved now."""
        if files.kind == STREAMED:
            raise TypeError(
                f"{files.repo_id!r} can only be streamed by datasets: build it with "
                "HuggingFaceShardedSource(...), which returns a DatasetsStreamSource for it."
            )
        self.resolution_cache = None if cache is None else cache.path
        """The file keeping this request's resolution and footers (None without cache_dir, or
        for a local directory): delete it to resolve a branch again."""
        self.files = files
        """What the name resolved to: repo, subset, split, commit, format, files and sizes."""
        self._positions = {url: i for i, url in enumerate(self.files.urls)}
        self._requests: IOStats | None = None
        hub = self.streaming and self.files.commit is not None
        self._sharing = None
        options: dict[str, Any] = {}
        if self.streaming or self.files.commit is None:  # hf:// URLs, or a local directory's
            paths = list(self.files.urls)
        else:
            paths = _download(self.files, self.cache_dir, token)
        if hub:
            if token is not None:
                options["token"] = token
            self._requests = IOStats()
            pinned = zip(self.files.urls, self.files.sizes, self.files.etags, strict=True)
            options["pinned_files"] = {u: {"size": n, "etag": e} for u, n, e in pinned}
            options["request_stats"] = self._requests
            self._sharing = _PinnedMetadata(self.files.urls, cache, default_sharing())
        options.update(storage_options or {})
        self.source: ParquetShardedSource | JsonShardedSource
        """The Parquet or JSON source reading the files (over ``hf://`` or local copies)."""
        if self.files.kind == "parquet":
            self.source = ParquetShardedSource(
                paths, options, self.columns, retry=retry, metadata_sharing=self._sharing
            )
        else:
            index_dir = None if self.cache_dir is None else os.path.join(self.cache_dir, "indexes")
            self.source = JsonShardedSource(
                paths,
                jsonl=self.files.kind == "jsonl",
                storage_options=options,
                retry=retry,
                metadata_sharing=self._sharing,
                index_cache_dir=index_dir,
            )

    @staticmethod
    def from_dataset(dataset: Any) -> Any:
        """A source for a ``datasets`` dataset already built: a map-style ``Dataset`` becomes an
        ``InMemorySource`` (its Arrow table, indexed mode); an ``IterableDataset`` is returned
        as it is (the loader reads it in streaming mode, resuming from its ``state_dict``)."""
        import datasets

        if isinstance(dataset, datasets.Dataset):
            return InMemorySource.from_dataset(dataset)
        if isinstance(dataset, datasets.IterableDataset):
            return dataset
        raise TypeError(
            f"from_dataset takes a datasets.Dataset or IterableDataset, got {type(dataset).__name__} "
            "(a DatasetDict? pick a split: ds['train'])."
        )

    # -- the ShardedSource protocol ------------------------------------------------------------

    @property
    def shard_names(self) -> list[str]:
        """The files, as ``hf://datasets/{repo}@{commit}/{path}`` URLs, in ``datasets``' order."""
        return list(self.files.urls)

    def open_shard(self, shard: str | int) -> Iterator[Row]:
        """All rows of a shard."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str | int, row: int) -> Iterator[Row]:
        """The rows of a shard from ``row`` on, seeking without reading earlier data."""
        return self._projected(self.source.open_shard_at_row(self.shard_index(shard), row))

    # -- indexed and columnar access (the Parquet or JSON source's) -----------------------------

    @property
    def stats(self) -> IOStats:
        """What was read: rows, bytes, requests, retries. Streaming, ``requests`` and
        ``bytes_read`` are the requests sent to the Hub for the files (footers, line scans,
        ranges; failed ones included) and the bytes they received, as for other stores; the
        resolution's requests (made by ``datasets``, none with a cached resolution) are not
        counted. Reading local copies, they count the reads of the files."""
        if self._requests is None:
            return self.source.stats
        read = self.source.stats.snapshot()
        wire = self._requests.snapshot()
        read.update(requests=wire["requests"], bytes_read=wire["bytes_read"])
        return IOStats(**read)

    def shard_index(self, shard: str | int) -> int:
        """The position of a shard given by name (or by position, checked)."""
        if isinstance(shard, str):
            index = self._positions.get(shard)
            if index is None:
                raise ShardNotFoundError(
                    f"{shard!r} is not a shard of {self!r}.",
                    path=shard,
                    hint=f"Use one of source.shard_names ({len(self._positions)} shards).",
                )
            return index
        return self.source.shard_index(shard)

    def num_rows(self, shard: str | int) -> int:
        """A shard's row count, from its metadata."""
        return self.source.num_rows(self.shard_index(shard))

    def row_counts(self) -> list[int]:
        """Every shard's row count, from metadata (Parquet footers, JSON line indexes)."""
        return self.source.row_counts()

    def __len__(self) -> int:
        return sum(self.row_counts())

    def block_starts(self, shard: str | int) -> Sequence[int]:
        """The first row of each block (row group, 1024 JSON lines) of a shard."""
        return self.source.block_starts(self.shard_index(shard))

    def read_block(self, shard: str | int, block: int) -> list[Row]:
        """All rows of one block of a shard."""
        return list(self._projected(self.source.read_block(self.shard_index(shard), block)))

    @property
    def schema(self) -> pa.Schema | None:
        """The (projected) Arrow schema of Parquet shards; None for JSON."""
        return self.source.schema

    @property
    def block_schema(self) -> pa.Schema | None:
        """The schema of ``read_block_table``'s tables; None for JSON (blocks are rows)."""
        return self.source.block_schema

    def read_block_table(self, shard: str | int, block: int) -> pa.Table:
        """One block of a Parquet shard as an Arrow table."""
        return self.source.read_block_table(self.shard_index(shard), block)  # type: ignore[union-attr]

    def table_rows(self, table: pa.Table) -> list[Row]:
        """The dict rows of a ``read_block_table`` table."""
        return self.source.table_rows(table)  # type: ignore[union-attr]

    def identities(self) -> list[str]:
        """Each shard's URL (with the commit sha, which fixes its bytes) and row count; for a
        local directory, the files' own identities (size and mtime); with ``columns``."""
        if self.files.commit is None and self.files.kind == "parquet":
            return self.source.identities()  # with the columns it reads
        files = (
            self.source.identities()
            if self.files.commit is None
            else [f"{url}|{n}" for url, n in zip(self.files.urls, self.row_counts(), strict=True)]
        )
        return projected_identities(files, self.columns)

    def _projected(self, rows: Iterable[Row]) -> Iterator[Row]:
        """``rows`` with only ``columns``, for JSON (Parquet projects as it reads)."""
        if self.columns is None or self.files.kind == "parquet":
            yield from rows
            return
        for row in rows:
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise MissingColumnError(
                    f"A row of the dataset {self.files.repo_id!r} has no field(s) {missing}; "
                    f"its fields are {sorted(row)}.",
                    path=self.files.repo_id,
                    hint="Fix columns= (names are case-sensitive).",
                )
            yield {c: row[c] for c in self.columns}

    def describe(self) -> str:
        """Where the rows come from, in words: the repo and the commit it is pinned to (and
        whether that resolution was made now or read from ``cache_dir``), the subset, split and
        format, which files (the repo's own, or its Parquet export, and why), whether they are
        streamed over ``hf://`` or read from local copies, and what ``cache_dir`` keeps."""
        files = self.files
        if files.commit is None:
            return (
                f"local directory {files.repo_id!r} laid out like a Hub repo, subset "
                f"{files.subset!r}, split {files.split!r}: {len(files.urls)} {files.kind} "
                f"file(s), read from disk"
            )
        asked = "main" if self.revision is None else self.revision
        pinned = (
            f"commit {files.commit}"
            if asked == files.commit
            else f"commit {files.commit} (revision {asked!r})"
        )
        if self.cached_at is not None:
            resolution = (
                f"resolution cached at {self.cached_at} in {self.resolution_cache} (no request; "
                "delete that file to resolve the revision again)"
            )
        elif self.resolution_cache is not None:
            resolution = f"resolved now, kept in {self.resolution_cache}"
        else:
            resolution = "resolved now, not cached (no cache_dir)"
        why = "" if files.origin == "its data files" else ", which the sources read as shards"
        if self.streaming:
            read = "streamed over hf:// (ranges, retried by the policy)"
            if self.resolution_cache is None:
                kept = "footers and line indexes not cached"
            elif files.kind == "parquet":
                cached = self._sharing is not None and self._sharing.footers_cached
                kept = "footers " + ("read from the cache" if cached else "cached once read")
            else:
                kept = f"line indexes cached in {os.path.join(self.cache_dir or '', 'indexes')}"
        else:
            where = self.cache_dir or "HF_HOME's Hub cache"
            read = f"read from local copies in {where}"
            kept = "files downloaded once (Hub cache layout)"
        return (
            f"Hub dataset {files.repo_id} at {pinned}; {resolution}; subset {files.subset!r}, "
            f"split {files.split!r}; {len(files.urls)} {files.kind} shard(s) from "
            f"{files.origin}{why}; {read}; {kept}"
        )

    def __repr__(self) -> str:
        files = self.files
        at = f"@{files.commit[:12]}" if files.commit else ""
        where = "hf://" if self.streaming and files.commit else "local copies"
        cached = "" if self.cached_at is None else f", resolution cached at {self.cached_at}"
        return (
            f"HuggingFaceShardedSource({files.repo_id}{at}, subset={files.subset!r}, "
            f"split={files.split!r}: {len(files.urls)} {files.kind} shards from {files.origin}, "
            f"read from {where}{cached})"
        )
