"""A ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)`` over local files) as a
sharded source: its shards and seeks, ``TransformedShardedSource`` over it (the same rows as
``AsyncDataLoader(ds, transforms=...)``), and a loader over it that resumes exactly."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import datasets
import pytest

from easydata_grain import AsyncDataLoader
from easydata_grain.io.errors import ShardNotFoundError
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.iterable_dataset import IterableDatasetSource, as_sharded
from easydata_grain.sources.transformed import TransformedShardedSource
from easydata_grain.transforms.fields import MapField
from easydata_grain.transforms.filters import FilterByField


def _even(value: int) -> bool:
    return value % 2 == 0


OPS = [FilterByField("id", _even), MapField("text", str.upper)]


@pytest.fixture
def stream(tmp_path: Path) -> Any:
    """A streamed JSON Lines dataset of three local files (one shard each), 11 rows a file."""
    files = []
    for k in range(3):
        path = tmp_path / f"part-{k}.jsonl"
        rows = [{"id": 100 * k + i, "text": f"row {k}-{i}"} for i in range(11)]
        path.write_text("\n".join(json.dumps(row) for row in rows))
        files.append(str(path))
    return datasets.load_dataset("json", data_files=files, split="train", streaming=True)


def _ids(loader: Any) -> list[list[int]]:
    return [batch["id"].tolist() for batch in loader]


def test_shards_are_the_files_and_seeks_are_exact(stream: Any) -> None:
    source = IterableDatasetSource(stream)
    assert [Path(name).name for name in source.shard_names] == [f"part-{k}.jsonl" for k in range(3)]
    every = [row for name in source.shard_names for row in source.open_shard(name)]
    assert every == list(stream)
    assert [r["id"] for r in source.open_shard_at_row(source.shard_names[1], 8)] == [108, 109, 110]
    assert list(source.open_shard_at_row(2, 11)) == []
    with pytest.raises(ShardNotFoundError):
        source.open_shard("nope.jsonl")
    with pytest.raises(ValueError, match="row must be"):
        source.open_shard_at_row(0, -1)
    with pytest.raises(TypeError, match=r"datasets\.IterableDataset"):
        IterableDatasetSource([{"id": 1}])
    generated = datasets.IterableDataset.from_generator(lambda: ({"id": i} for i in range(4)))
    one = IterableDatasetSource(generated)
    assert one.shard_names == ["generator[0/1]"]
    assert [r["id"] for r in one.open_shard_at_row(0, 2)] == [2, 3]


def test_transformed_source_takes_a_stream(stream: Any) -> None:
    source = TransformedShardedSource(stream, OPS)
    assert isinstance(source.source, IterableDatasetSource)
    expected = [{**row, "text": row["text"].upper()} for row in stream if _even(row["id"])]
    assert [row for name in source.shard_names for row in source.open_shard(name)] == expected
    # a filtered row keeps its address: row 3 of a shard is the source's row 3
    assert next(iter(source.open_shard_at_row(source.shard_names[2], 3)))["id"] == 204
    copy = pickle.loads(pickle.dumps(source))  # worker processes
    assert [row for row in copy.open_shard(copy.shard_names[0])] == expected[:6]
    # the loader's rows equal AsyncDataLoader(ds, transforms=...) (file order)
    assert _ids(AsyncDataLoader(source, batch_size=4)) == _ids(
        AsyncDataLoader(stream, batch_size=4, transforms=OPS)
    )
    # fluent methods on the adapted stream
    fluent = IterableDatasetSource(stream).filter(FilterByField("id", _even)).map(OPS[1])
    assert [row for name in fluent.shard_names for row in fluent.open_shard(name)] == expected
    # a map-style Dataset becomes an in-memory (indexed) source
    table = datasets.Dataset.from_list([{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
    assert isinstance(as_sharded(table), InMemorySource)
    assert as_sharded(table).row_counts() == [2]


@pytest.mark.parametrize("buffer", [0, 6])
def test_a_loader_over_it_resumes_exactly(stream: Any, buffer: int) -> None:
    def build() -> AsyncDataLoader:
        source = TransformedShardedSource(stream, OPS)
        return AsyncDataLoader(source, batch_size=3, shuffle_buffer_size=buffer, seed=4)

    straight = _ids(build())
    assert sorted(i for batch in straight for i in batch) == sorted(
        r["id"] for r in stream if _even(r["id"])
    )
    for stop in range(1, len(straight)):
        first = build()
        head = [next(first)["id"].tolist() for _ in range(stop)]
        state = json.loads(json.dumps(first.get_state()))
        second = build()
        second.set_state(state)
        assert head + _ids(second) == straight


def test_repr_of_a_half_built_source_does_not_raise() -> None:
    source = TransformedShardedSource.__new__(TransformedShardedSource, 5, OPS)
    with pytest.raises(TypeError, match="source must be a ShardedSource"):
        source.__init__(5, OPS)  # type: ignore[misc]
    assert repr(source) == "TransformedShardedSource('<not set>', '<not set>')"
