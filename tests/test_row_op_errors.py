"""A transform of ``AsyncDataLoader(transforms=[...])`` that fails on a row names the row's
source shard and row, as ``TransformedShardedSource`` does (``graph/row_errors.py``): after
shuffling, host splits and batched calls (a tokenizer gets a whole chunk)."""

from __future__ import annotations

from pathlib import Path

import grain
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    Hosts,
    MalformedRowError,
    MissingColumnError,
    ParquetShardedSource,
    SelectFields,
    TokenizeTransform,
)
from easydata_grain.synthetic import tiny_tokenizer

TOKENIZER = tiny_tokenizer()
SCHEMA = pa.schema([("text", pa.string()), ("n", pa.int64())])


def write_shards(directory: Path, sizes: list[int], bad: tuple[int, int]) -> list[str]:
    """Parquet shards of texts; the text at ``bad`` (shard, row) is None."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, size in enumerate(sizes):
        texts = [f"text {shard} {row}" for row in range(size)]
        if shard == bad[0]:
            texts[bad[1]] = None
        path = directory / f"part-{shard}.parquet"
        table = pa.table({"text": texts, "n": list(range(size))}, schema=SCHEMA)
        pq.write_table(table, path, row_group_size=5)
        paths.append(str(path))
    return paths


class FailOnRow(grain.transforms.Map):
    """Raises a ValueError on the row whose ``n`` is ``n`` (a user's own map)."""

    def __init__(self, n: int):
        self.n = n

    def map(self, row: dict) -> dict:
        if row["n"] == self.n:
            raise ValueError(f"no row {self.n} here")
        return row


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    data=st.data(),
    shuffle=st.sampled_from([0, 7]),
    batch=st.integers(1, 6),
    hosts=st.integers(1, 2),
    seed=st.integers(0, 5),
)
def test_a_tokenizer_error_names_the_source_shard_and_row(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    data: st.DataObject,
    shuffle: int,
    batch: int,
    hosts: int,
    seed: int,
) -> None:
    shard = data.draw(st.integers(0, len(sizes) - 1))
    row = data.draw(st.integers(0, sizes[shard] - 1))
    paths = write_shards(tmp_path_factory.mktemp("rows"), sizes, (shard, row))
    errors = []
    for host in range(hosts):
        loader = AsyncDataLoader(
            ParquetShardedSource(paths),
            global_batch_size=batch * hosts,
            hosts=Hosts(host, hosts),
            shuffle_buffer_size=shuffle,
            seed=seed,
            drop_remainder=False,
            pad=True,
            transforms=[TokenizeTransform(TOKENIZER)],
        )
        try:
            list(loader)
        except MalformedRowError as error:
            errors.append(error)
    assert errors  # the host that reads the bad row (both, where it pads the last batch)
    for error in errors:
        assert (error.path, error.row) == (paths[shard], row)
        message = f"{paths[shard]}, row {row}: TokenizeTransform tokenizes strings"
        assert str(error).startswith(message)
        assert isinstance(error.__cause__, MalformedRowError)


def test_a_users_map_error_names_the_row_and_keeps_the_cause(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, [12, 9], (9, 9))
    source = ParquetShardedSource(paths)
    options = {"shuffle_buffer_size": 4, "seed": 1, "drop_remainder": False}
    loader = AsyncDataLoader(source, batch_size=4, transforms=[FailOnRow(10)], **options)
    with pytest.raises(MalformedRowError, match=r"part-0\.parquet, row 10: a transform failed: "):
        list(loader)  # only shard 0 has a row 10
    with pytest.raises(MalformedRowError) as caught:
        list(loader)
    assert (caught.value.path, caught.value.row) == (paths[0], 10)
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_missing_field_keeps_its_class_and_names_the_row(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, [6], (9, 9))
    loader = AsyncDataLoader(
        ParquetShardedSource(paths),
        batch_size=2,
        transforms=[
            lambda row: {"text": row["text"]} if row["n"] < 3 else {},
            SelectFields("text"),
        ],
    )
    with pytest.raises(MissingColumnError) as caught:
        list(loader)
    assert (caught.value.path, caught.value.row) == (paths[0], 3)


@pytest.mark.slow
def test_with_worker_processes_the_error_names_the_row(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, [20, 20], (1, 13))
    loader = AsyncDataLoader(
        ParquetShardedSource(paths),
        batch_size=4,
        shuffle_buffer_size=6,
        seed=2,
        pad=True,
        worker_processes=2,
        transforms=[TokenizeTransform(TOKENIZER)],
    )
    with pytest.raises(MalformedRowError) as caught:
        list(loader)
    assert str(caught.value).startswith(f"{paths[1]}, row 13: ")


def forget_to_return(row: dict) -> None:
    """A map that changes the row in place and returns nothing."""
    row["n2"] = row["n"] * 2


class NoneOnRow(grain.transforms.Map):
    """Returns None on the row whose ``n`` is 3."""

    def map(self, row: dict) -> dict | None:
        return None if row["n"] == 3 else row


@pytest.mark.parametrize("form", ["fluent", "chain", "loader function", "loader Map"])
def test_a_map_that_returns_none_is_an_error_not_a_dropped_row(tmp_path: Path, form: str) -> None:
    paths = write_shards(tmp_path, [8], (9, 9))
    source = ParquetShardedSource(paths)
    message = r"part-0\.parquet, row (0|3): .* returned None for the row with fields"
    with pytest.raises(MalformedRowError, match=message):
        if form == "fluent":
            list(source.map(forget_to_return).open_shard(paths[0]))
        elif form == "chain":
            chained = source.filter(lambda row: True).map(NoneOnRow())
            list(chained.open_shard(paths[0]))
        else:
            op = forget_to_return if form == "loader function" else NoneOnRow()
            list(AsyncDataLoader(source, batch_size=2, transforms=[op]))


def test_a_padding_copy_of_the_bad_row_names_the_row_it_copies(tmp_path: Path) -> None:
    paths = write_shards(tmp_path, [1, 1], (1, 0))  # 2 rows, a global batch of 4: padded
    for host in range(2):
        loader = AsyncDataLoader(
            ParquetShardedSource(paths),
            global_batch_size=4,
            hosts=Hosts(host, 2),
            drop_remainder=False,
            pad=True,
            transforms=[TokenizeTransform(TOKENIZER)],
        )
        with pytest.raises(MalformedRowError) as caught:
            list(loader)
        assert (caught.value.path, caught.value.row) == (paths[1], 0)  # not epoch 2's first
