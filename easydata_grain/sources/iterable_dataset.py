"""``IterableDatasetSource``: a ``datasets.IterableDataset`` already built, as a sharded source.

``load_dataset(..., streaming=True)`` (or ``IterableDataset.from_generator``) gives an
``IterableDataset`` of ``num_shards`` shards (one per data file, for file datasets). Shard ``i``
is ``dataset.shard(num_shards, i, contiguous=True)``, its rows exactly as the whole stream
yields them, and a seek to row ``r`` is ``.skip(r)``: exact, but the shard is replayed up to the
row (stream files have no row index). Row counts are unknown, so the loader reads it in
streaming mode, resuming by seeking (shard, row): the same way it reads ``DatasetsStreamSource``.
``TransformedShardedSource`` wraps a ``datasets`` dataset in this source (``as_sharded``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from easydata_grain.fingerprint import digest
from easydata_grain.sources.replayed_shards import ReplayedShards
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, close_rows

_SHUFFLE_NODES = ("BufferShuffledExamplesIterable", "ShuffledDataSourcesExamplesIterable")


def _nodes(dataset: Any) -> Iterator[Any]:
    """The ``datasets`` examples iterables under an ``IterableDataset``, outermost first."""
    todo = [getattr(dataset, "_ex_iterable", None)]
    while todo:
        node = todo.pop()
        if node is None:
            continue
        yield node
        todo.append(getattr(node, "ex_iterable", None))
        todo.extend(getattr(node, "ex_iterables", ()))


def _files(dataset: Any) -> list[str]:
    """The data files a file dataset reads, in ``datasets``' order (empty for a generator)."""
    for node in _nodes(dataset):
        files = getattr(node, "kwargs", {}).get("base_files")
        if files:
            return [str(f) for f in files]
    return []


def _file_identity(path: str) -> str:
    """A file's path, with its size and modification time when it is local."""
    if os.path.isfile(path):
        info = os.stat(path)
        return f"{path}|{info.st_size}|{info.st_mtime_ns}"
    return path


class IterableDatasetSource(ReplayedShards, TransformableSource):
    """The shards of a ``datasets.IterableDataset`` (see the module's docstring).

    Shards are named by their data file where each shard is one file and the stream does not
    shuffle them; otherwise ``{label}[i/n]``. ``identities`` carry the files (local ones with
    their size and modification time) and the stream's steps, so a loader state saved over
    other files is refused; a generator's code is not part of it.
    """

    def __init__(self, dataset: Any):
        datasets = sys.modules.get("datasets")  # not imported: dataset is no IterableDataset
        if not isinstance(dataset, getattr(datasets, "IterableDataset", ())):
            raise TypeError(
                f"IterableDatasetSource takes a datasets.IterableDataset "
                f"(load_dataset(..., streaming=True)), got {type(dataset).__name__}."
            )
        self.dataset = dataset
        """The stream, as given."""
        self.num_shards: int = dataset.num_shards
        files = _files(dataset)
        steps = [type(node).__name__ for node in _nodes(dataset)]
        by_file = len(files) == self.num_shards and not set(_SHUFFLE_NODES) & set(steps)
        label = dataset.info.dataset_name or "IterableDataset"
        self._name_shards(
            files
            if by_file
            else [f"{label}[{i}/{self.num_shards}]" for i in range(self.num_shards)]
        )
        self._identity = digest(
            {
                "files": [_file_identity(f) for f in files],
                "steps": steps,
                "name": [label, dataset.info.config_name],
            }
        )

    def identities(self) -> list[str]:
        """Each shard's name with a digest of the stream's files, steps and builder name."""
        return [f"{name}|{self._identity}" for name in self._names]

    def _rows(self, index: int, row: int) -> Iterator[Row]:
        stream = self.dataset
        if self.num_shards > 1:
            stream = stream.shard(num_shards=self.num_shards, index=index, contiguous=True)
        rows = iter(stream.skip(row) if row else stream)
        try:
            yield from rows
        finally:
            close_rows(rows)

    def __repr__(self) -> str:
        return (
            f"IterableDatasetSource({len(self._names)} shard(s) from {self._names[:1]!r}; "
            "streaming mode, a seek replays its shard up to the row)"
        )


def as_sharded(source: Any) -> Any:
    """``source`` as a sharded source where it is a ``datasets`` dataset: an
    ``IterableDataset`` as an ``IterableDatasetSource``, a map-style ``Dataset`` as an
    ``InMemorySource`` (indexed); anything else unchanged."""
    datasets = sys.modules.get("datasets")  # not imported: source is no datasets dataset
    if isinstance(source, getattr(datasets, "IterableDataset", ())):
        return IterableDatasetSource(source)
    if isinstance(source, getattr(datasets, "Dataset", ())):
        from easydata_grain.sources.in_memory import InMemorySource

        return InMemorySource.from_dataset(source)
    return source
