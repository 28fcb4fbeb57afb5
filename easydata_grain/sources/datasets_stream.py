"""DatasetsStreamSource: a Hub dataset's split streamed by ``datasets``, one shard per data file.

For data files that our Parquet and JSON sources cannot read (CSV, text, Arrow, JSON whose rows
sit under a ``field``, WebDataset...) and that have no Parquet export, ``datasets`` itself
reads them: ``load_dataset_builder(repo, subset, revision=<commit sha>)`` then
``as_streaming_dataset(split)``, which is what ``load_dataset(..., streaming=True)`` does, so
the builder's config (a CSV separator, a JSON ``field``, declared features) applies. Shard
``i`` is ``IterableDataset.shard(num_shards, i)``: the ``i``-th data file, its rows exactly as
the whole stream yields them. Row counts are unknown without reading the files, so this is
not an ``IndexedSource``: the loader reads it in streaming mode (shuffle buffer, state saved
with the buffer). A seek to row ``r`` of a shard is ``.skip(r)``: such files have no row index,
so ``datasets`` parses the shard from its start and drops ``r`` rows (whole Arrow tables where
it can), exact but proportional to ``r``. Loading scripts are not run (``datasets`` 4+ refuses
them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import (
    MissingColumnError,
)
from easydata_grain.io.retry import RetryPolicy, storage_error
from easydata_grain.io.stats import IOStats
from easydata_grain.sources.protocol import projected_identities
from easydata_grain.sources.replayed_shards import ReplayedShards
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, close_rows


def _local_identity(path: str) -> str:
    """A local file's path, size and modification time."""
    info = os.stat(path)
    return f"{path}|{info.st_size}|{info.st_mtime_ns}"


class DatasetsStreamSource(ReplayedShards, TransformableSource):
    """A split of a Hugging Face dataset streamed by ``datasets``, pinned to one commit; each
    data file is a shard. Streaming mode only (no row counts).

    ``dataset_name``, ``subset``, ``split``, ``data_dir`` and ``data_files`` pick the files as
    ``datasets.load_dataset`` does; ``revision`` (a branch, tag or sha; main by default) is
    pinned to its commit sha at construction, which the shard names
    (``hf://datasets/{repo}@{sha}/{path}``) and so the loader's fingerprint carry. Every shard's
    rows are those of ``datasets.load_dataset(dataset_name, subset, split=split,
    streaming=True, revision=<sha>)`` for that file, in the same order; ``open_shard_at_row``
    is exact (``IterableDataset.skip``) but replays the shard up to the row. A transient fault
    while reading re-opens the shard at the next row, under ``retry`` (``datasets`` retries its
    own reads first). ``columns`` projects; ``token`` opens private and gated datasets.
    ``why`` says, for ``repr``, why this source was chosen over an indexed one. ``builder`` is
    ``datasets``' builder for this name, subset, ``data_dir`` and ``data_files`` when one is
    already made (by ``HuggingFaceShardedSource``'s resolution) at ``revision``, which must then
    be its commit sha (None for a local directory): the commit is not looked up and the builder
    not made again.
    """

    def __init__(
        self,
        dataset_name: str,
        split: str = "train",
        subset: str | None = None,
        *,
        revision: str | None = None,
        token: str | None = None,
        data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
        data_dir: str | None = None,
        columns: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        why: str | None = None,
        builder: Any = None,
    ):
        # Lazy: huggingface.py may build this source, and its helpers give the Hub's errors.
        from easydata_grain.sources.huggingface import _SHA, _builder, _commit_of, _split_files

        if not isinstance(dataset_name, str) or not dataset_name:
            raise TypeError(f"dataset_name must be a repo id or a directory, got {dataset_name!r}")
        if columns is not None and (isinstance(columns, str) or not columns):
            raise TypeError(f"columns must be a non-empty list of column names, got {columns!r}")
        local = os.path.isdir(dataset_name)
        if local and revision is not None:
            raise ValueError(f"{dataset_name!r} is a local directory: it has no revision= to pick.")
        self.repo_id = dataset_name
        self.split = split
        self.columns = None if columns is None else list(columns)
        self.retry = retry or RetryPolicy()
        self.stats = IOStats()
        """Rows delivered and retries (``datasets`` reads the bytes, uncounted)."""
        self.why = why
        if builder is not None:
            if not local and not _SHA.fullmatch(revision or ""):
                raise ValueError(
                    f"builder= is given, so revision= must be the commit sha it was made at, "
                    f"got {revision!r}."
                )
            self.commit: str | None = revision
            """The commit sha the files are read at (None for a local directory)."""
        else:
            # _commit_of's first two values: the sha and whether the dataset is gated.
            pinned = (None, False) if local else _commit_of(dataset_name, revision, token)[:2]
            self.commit = pinned[0]
            builder = _builder(
                dataset_name,
                subset,
                self.commit,
                token,
                gated=bool(pinned[1]),
                data_dir=data_dir,
                data_files=data_files,
            )
        self.subset: str = builder.config.name
        self.format: str = builder.name
        """The ``datasets`` builder reading the files: ``"csv"``, ``"text"``, ``"arrow"``..."""
        self.urls = _split_files(builder, dataset_name, split)
        """The split's data files, in ``datasets``' order."""
        self._dataset = builder.as_streaming_dataset(split=split)
        self._num_shards = self._dataset.num_shards
        if self._num_shards == len(self.urls):
            self._name_shards([str(url) for url in self.urls])
        else:  # files that datasets does not stream one per shard: the split is one shard
            at = f"@{self.commit}" if self.commit else ""
            self._name_shards(
                [
                    f"{dataset_name}{at}:{self.subset}/{split} "
                    f"({len(self.urls)} files, {digest([str(u) for u in self.urls])})"
                ]
            )

    # -- identities ----------------------------------------------------------------------------

    def identities(self) -> list[str]:
        """Each shard's name, which carries the commit sha; for a local directory, the files'
        sizes and modification times too; with ``columns``. (The loader's fingerprint of a
        stream uses the shard names.)"""
        if self.commit is None and len(self._names) == len(self.urls):
            return projected_identities([_local_identity(n) for n in self._names], self.columns)
        return projected_identities(list(self._names), self.columns)

    # -- reading -------------------------------------------------------------------------------

    def _stream(self, index: int, row: int) -> Any:
        """The ``datasets.IterableDataset`` of shard ``index`` from ``row`` on."""
        stream = self._dataset
        if len(self._names) > 1:
            stream = stream.shard(num_shards=self._num_shards, index=index, contiguous=True)
        return stream.skip(row) if row else stream

    def _rows(self, index: int, row: int) -> Iterator[Row]:
        name = self._names[index]
        attempts = self.retry.attempts(self.stats)
        position = row
        while True:
            rows = iter(self._stream(index, position))
            try:
                for item in rows:
                    out = self._projected(item)
                    position += 1
                    attempts.progress()
                    self.stats.add(rows=1)
                    yield out
                return
            except Exception as exc:
                if attempts.retry(exc):  # re-open at the next row: exact, the stream is pinned
                    continue
                error = storage_error(exc, name, position, retries=attempts.retries)
                if error is None:
                    raise
                raise error from exc
            finally:
                close_rows(rows)

    def _projected(self, row: Row) -> Row:
        if self.columns is None:
            return row
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise MissingColumnError(
                f"A row of the dataset {self.repo_id!r} has no field(s) {missing}; its fields "
                f"are {sorted(row)}.",
                path=self.repo_id,
                hint="Fix columns= (names are case-sensitive).",
            )
        return {c: row[c] for c in self.columns}

    def describe(self) -> str:
        """Where the rows come from and why they stream (``loader.describe()`` prints it)."""
        return repr(self)

    def __repr__(self) -> str:
        at = f"@{self.commit[:12]}" if self.commit else ""
        per = (
            "one shard per file" if len(self._names) == len(self.urls) else "the split as one shard"
        )
        why = f" ({self.why})" if self.why else ""
        return (
            f"DatasetsStreamSource({self.repo_id}{at}, subset={self.subset!r}, "
            f"split={self.split!r}: {len(self._names)} {self.format} shard(s){why}; streaming "
            f"mode over datasets.load_dataset(streaming=True), {per}: {self.format} files have "
            "no row index, so a seek or resume replays its shard up to the row)"
        )
