"""``HeadSource``: exactly the first ``num_rows`` rows, in shard order, and indexed like its source."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, ParquetShardedSource, RowOutOfRangeError
from easydata_grain.sources.head import HeadSource
from easydata_grain.sources.protocol import IndexedSource
from easydata_grain.synthetic import write_parquet_dataset

SHARDS, ROWS = 3, 500


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> ParquetShardedSource:
    paths = write_parquet_dataset(
        tmp_path_factory.mktemp("head"),
        num_shards=SHARDS,
        rows_per_shard=ROWS,
        row_group_size=64,
        max_tokens=4,
    )
    return ParquetShardedSource(paths, columns=["id"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(1, SHARDS * ROWS), shuffle=st.sampled_from([0, 100]))
def test_the_loader_reads_exactly_the_first_rows(
    source: ParquetShardedSource, limit: int, shuffle: int
) -> None:
    head = HeadSource(source, limit)
    assert isinstance(head, IndexedSource)
    assert sum(head.row_counts()) == limit
    loader = AsyncDataLoader(head, batch_size=32, shuffle_buffer_size=shuffle, seed=1)
    ids = [int(i) for batch in loader for i in batch["id"]]
    first = [row["id"] for name in source.shard_names for row in source.open_shard(name)]
    assert sorted(ids) == sorted(first[:limit])
    assert len(loader) == -(-limit // 32)


def test_shards_iterate_to_the_cut(source: ParquetShardedSource) -> None:
    head = HeadSource(source, ROWS + 7)
    assert head.shard_names == source.shard_names[:2]
    assert len(list(head.open_shard(head.shard_names[1]))) == 7
    assert [r["id"] for r in head.open_shard_at_row(head.shard_names[1], 5)] == [
        r["id"] for r in list(source.open_shard(source.shard_names[1]))[5:7]
    ]


def test_more_rows_than_the_source_has_is_an_error(source: ParquetShardedSource) -> None:
    with pytest.raises(RowOutOfRangeError, match="has only 1500 rows"):
        HeadSource(source, SHARDS * ROWS + 1)
    with pytest.raises(ValueError, match="num_rows must be an int >= 1"):
        HeadSource(source, 0)


def test_a_stream_is_refused_with_the_reason() -> None:
    with pytest.raises(TypeError, match="row counts are known"):
        HeadSource(iter([{"a": 1}]), 1)


def test_the_cut_is_part_of_the_identity(source: ParquetShardedSource) -> None:
    assert HeadSource(source, 10).identities() != HeadSource(source, 11).identities()
