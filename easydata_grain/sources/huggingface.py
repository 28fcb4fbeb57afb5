"""HuggingFaceShardedSource: a Hub dataset's data files, pinned to one commit, as real shards.

``datasets`` and ``huggingface_hub`` resolve a name, subset, split and revision to the files
``datasets.load_dataset`` would read (README ``configs:``, default patterns, ``data_dir``,
``data_files``), at one commit sha, which their ``hf://datasets/{repo}@{sha}/...`` URLs carry.
Those files are the shards of a ``ParquetShardedSource`` or ``JsonShardedSource`` read over
``hf://`` (``streaming=True``) or from local copies in the Hub cache (``streaming=False``), so
indexed mode, O(1) seeks, column projection and retries are theirs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import (
    AccessDeniedError,
    MissingColumnError,
    NoFilesMatchedError,
    ShardNotFoundError,
    SourceError,
    UnsupportedFormatError,
)
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.metadata_sharing import default_sharing
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.types import Row

_LOGIN = "Log in with `huggingface-cli login` (or `hf auth login`), or pass token=."
_EXPORT = "refs/convert/parquet"
_DOWNLOAD_THREADS = 8
_SNIFF_BYTES = 4096


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


def _commit_of(repo_id: str, revision: str | None, token: str | None) -> tuple[str, bool]:
    """The commit sha ``revision`` (None: main) of dataset ``repo_id`` is at, and whether the
    dataset is gated."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(token=token).dataset_info(repo_id, revision=revision)
    except Exception as exc:
        error = _hub_error(exc, repo_id, revision, token)
        if error is None:
            raise
        raise error from exc
    return info.sha, bool(info.gated)


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
) -> HubFiles:
    """The files ``datasets.load_dataset`` reads for this name, subset, split and revision,
    pinned to the commit the revision is at now; files of other formats are replaced by the
    dataset's Parquet export when it has one."""
    local = os.path.isdir(dataset_name)
    if local and revision is not None:
        raise ValueError(f"{dataset_name!r} is a local directory: it has no revision= to pick.")
    commit, gated = (None, False) if local else _commit_of(dataset_name, revision, token)
    files = {"data_dir": data_dir, "data_files": data_files}
    builder = _builder(dataset_name, subset, commit, token, gated=gated, **files)
    urls = _split_files(builder, dataset_name, split)
    name = builder.config.name
    kind = _kind_of(builder, urls, token)
    if kind is not None:
        return HubFiles(dataset_name, name, split, commit, kind, urls, "its data files")
    export = None if local else _parquet_export(dataset_name, token)
    if export is None:
        raise UnsupportedFormatError(
            f"The split {split!r} of the dataset {dataset_name!r} (subset {name!r}) is made of "
            f"{builder.name} files (e.g. {urls[0]!r}), which HuggingFaceShardedSource reads "
            f"only as Parquet or JSON Lines, and the dataset has no Parquet export ({_EXPORT}).",
            path=dataset_name,
            hint="Streaming such files is not supported yet: pass "
            "datasets.load_dataset(..., streaming=True) to the loader instead (streaming mode), "
            "or convert the files to Parquet.",
        )
    exported = _builder(dataset_name, None, export, token, gated=gated, data_dir=name)
    urls = _split_files(exported, dataset_name, split)
    origin = f"its Parquet export ({_EXPORT}; the repo holds {builder.name} files)"
    return HubFiles(dataset_name, name, split, export, "parquet", urls, origin)


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
            error = _hub_error(exc, files.repo_id, files.commit, token)
            if error is None:
                raise
            raise error from exc

    with ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool:
        return list(pool.map(download, files.urls))


class HuggingFaceShardedSource:
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
    one. ``columns`` projects; ``token`` (default: the login's) opens private and gated
    datasets, and never appears in a message.
    """

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
        asked = [dataset_name, subset, split, revision, data_dir, data_files]
        resolved = default_sharing().share(
            lambda: dataclasses.asdict(
                resolve_hub_files(
                    dataset_name,
                    subset,
                    split,
                    revision=revision,
                    token=token,
                    data_dir=data_dir,
                    data_files=data_files,
                )
            ),
            what=f"the files of the Hub dataset {dataset_name!r}",
            key=digest(["HuggingFaceShardedSource", *asked]),
        )
        self.files = HubFiles(**{**resolved, "urls": tuple(resolved["urls"])})
        """What the name resolved to: repo, subset, split, commit, format and files."""
        self._positions = {url: i for i, url in enumerate(self.files.urls)}
        if self.streaming or self.files.commit is None:  # hf:// URLs, or a local directory's
            paths = list(self.files.urls)
        else:
            paths = _download(self.files, self.cache_dir, token)
        hub = self.streaming and self.files.commit is not None
        options = {"token": token} if hub and token is not None else {}
        options.update(storage_options or {})
        self.source: ParquetShardedSource | JsonShardedSource
        """The Parquet or JSON source reading the files (over ``hf://`` or local copies)."""
        if self.files.kind == "parquet":
            self.source = ParquetShardedSource(paths, options, self.columns, retry=retry)
        else:
            index_dir = None if self.cache_dir is None else os.path.join(self.cache_dir, "indexes")
            self.source = JsonShardedSource(
                paths,
                jsonl=self.files.kind == "jsonl",
                storage_options=options,
                retry=retry,
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
        """What was read: rows, bytes, requests, retries."""
        return self.source.stats

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
        local directory, the files' own identities (size and mtime)."""
        if self.files.commit is None:
            return self.source.identities()
        return [f"{url}|{n}" for url, n in zip(self.files.urls, self.row_counts(), strict=True)]

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

    def __repr__(self) -> str:
        files = self.files
        at = f"@{files.commit[:12]}" if files.commit else ""
        where = "hf://" if self.streaming and files.commit else "local copies"
        return (
            f"HuggingFaceShardedSource({files.repo_id}{at}, subset={files.subset!r}, "
            f"split={files.split!r}: {len(files.urls)} {files.kind} shards from {files.origin}, "
            f"read from {where})"
        )
