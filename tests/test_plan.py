"""The compiled plan: what describe() says, len(loader), the declared source protocols, and resume
rules derived from the plan (elastic restore with filters across host counts)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, ParquetShardedSource
from easydata_grain.distributed import Hosts
from easydata_grain.synthetic import write_parquet_dataset
from tests.resume_worker import KeepNotDivisible


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("plan")
    write_parquet_dataset(root, num_shards=3, rows_per_shard=70, row_group_size=16)
    return str(root / "*.parquet")


def source(data: str, columns: tuple[str, ...] = ("id", "input_ids")) -> ParquetShardedSource:
    return ParquetShardedSource(data, columns=list(columns))


def test_describe_one_host(data: str) -> None:
    text = AsyncDataLoader(source(data), batch_size=8, shuffle_buffer_size=32, pad=True).describe()
    assert "ParquetShardedSource: 3 shard(s), 210 rows" in text
    assert "indexed: row counts are known" in text
    assert "rows shuffled in windows of 32" in text
    assert "split" not in text
    assert "columnar  yes" in text
    assert "exact, on any number of hosts" in text


def test_describe_four_hosts_splits_before_the_row_ops(data: str) -> None:
    loader = AsyncDataLoader(source(data), global_batch_size=16, pad=True, hosts=Hosts(2, 4))
    text = loader.describe()
    assert "host 2 takes rows [8, 12) of every global batch of 16" in text
    assert "before the row ops" in text and "sample_mask" in text
    assert text.index("split") < text.index("row ops")


def test_describe_a_filter_splits_after_and_gathers_rows(data: str) -> None:
    loader = AsyncDataLoader(source(data), batch_size=8, transforms=[KeepNotDivisible(3)])
    text = loader.describe()
    assert "KeepNotDivisible" in text and "the row count changes" in text
    assert text.index("row ops") < text.index("split") and "after the row ops" in text
    assert "columnar  no: batches are collated from rows" in text


def test_describe_a_stream_and_worker_processes(data: str) -> None:
    from datasets import IterableDataset

    def rows() -> Any:
        yield from ({"id": i} for i in range(10))

    stream = AsyncDataLoader(IterableDataset.from_generator(rows), shuffle_buffer_size=4)
    assert "streaming: the source can only be iterated" in stream.describe()
    assert "exact, on the same number of hosts" in stream.describe()
    workers = AsyncDataLoader(source(data), batch_size=8, worker_processes=2)
    assert "2 worker process(es)" in workers.describe()
    assert "same hosts and worker_processes" in workers.describe()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"batch_size": 8}, 27),
        ({"batch_size": 8, "drop_remainder": True}, 26),
        ({"batch_size": 7, "num_epochs": 2}, 60),
        ({"global_batch_size": 16, "hosts": Hosts(1, 2)}, 14),
    ],
)
def test_len_is_the_batches_of_one_loop(data: str, kwargs: dict[str, Any], expected: int) -> None:
    loader = AsyncDataLoader(source(data, ("id",)), **kwargs)
    assert len(loader) == expected == len(list(loader))


def test_len_is_unknown_with_a_filter_or_endless(data: str) -> None:
    assert AsyncDataLoader(source(data), transforms=[KeepNotDivisible(3)])  # truthy all the same
    with pytest.raises(TypeError, match="filter"):
        len(AsyncDataLoader(source(data), transforms=[KeepNotDivisible(3)]))
    with pytest.raises(TypeError, match="endless"):
        len(AsyncDataLoader(source(data), num_epochs=None))


def test_a_source_with_row_counts_but_not_the_whole_protocol_is_an_error() -> None:
    class Half:
        shard_names = ("a",)

        def open_shard(self, shard: str) -> Any:
            return iter([{"id": 1}])

        def open_shard_at_row(self, shard: str, row: int) -> Any:
            return iter([{"id": 1}][row:])

        def row_counts(self) -> list[int]:
            return [1]

    with pytest.raises(TypeError, match=r"lacks \['block_starts', 'identities', 'read_block'"):
        AsyncDataLoader(Half())


_settings = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def global_batches(loaders: list[AsyncDataLoader]) -> list[list[int]]:
    """Each step's global batch: the hosts' real rows (sample_mask) in host order."""
    out = []
    for batches in zip(*(list(loader) for loader in loaders), strict=True):
        rows = []
        for batch in batches:
            mask = batch.get("sample_mask")
            rows += [i for k, i in enumerate(batch["id"].tolist()) if mask is None or mask[k]]
        out.append(rows)
    return out


@_settings
@given(
    saved_hosts=st.sampled_from([1, 2, 4]),
    restored_hosts=st.sampled_from([1, 2, 4]),
    local=st.integers(1, 6),
    shuffle=st.sampled_from([0, 5, 64]),
    filtering=st.booleans(),
    drop_remainder=st.booleans(),
    stop=st.floats(0, 1),
)
def test_elastic_restore_with_and_without_filters(
    data: str,
    saved_hosts: int,
    restored_hosts: int,
    local: int,
    shuffle: int,
    filtering: bool,
    drop_remainder: bool,
    stop: float,
) -> None:
    """Saved on H hosts at a random step, restored on H': the global batches that follow are
    those of an uninterrupted run (the same global batch size on any host count)."""
    global_size = local * 4

    def loaders(count: int) -> list[AsyncDataLoader]:
        return [
            AsyncDataLoader(
                source(data, ("id",)),
                global_batch_size=global_size,
                shuffle_buffer_size=shuffle,
                seed=7,
                drop_remainder=drop_remainder,
                transforms=[KeepNotDivisible(3)] if filtering else [],
                hosts=Hosts(h, count),
            )
            for h in range(count)
        ]

    expected = global_batches(loaders(1))
    step = int(stop * len(expected))
    saving = loaders(saved_hosts)
    for loader in saving:
        for _ in range(step):
            next(loader)
    state = json.loads(json.dumps(saving[0].get_state()))
    restored = loaders(restored_hosts)
    for loader in restored:
        loader.set_state(state)
    assert global_batches(restored) == expected[step:]
