"""ParquetShardedSource on local disk: seek, projection, numpy lists and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    CorruptShardError,
    MissingColumnError,
    NoFilesMatchedError,
    ParquetShardedSource,
    RowOutOfRangeError,
    SchemaMismatchError,
    ShardNotFoundError,
)
from easydata_grain.synthetic import write_parquet_dataset
from tests.helpers import plain

_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    """Random tables with scalar, string, struct and list columns, nulls included."""
    n = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = rng.integers(0, 6, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    null_rows = rng.random(n) < 0.1
    ids = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(rng.integers(-5, 9, offsets[-1]).astype(np.int32))
    )
    return pa.table(
        {
            "id": pa.array(np.arange(n)),
            "ids": ids,
            "scores": pa.array(
                [rng.random(k).tolist() if k % 3 else None for k in lengths], pa.list_(pa.float64())
            ),
            "text": pa.array([None if z else f"tëxt {i}" for i, z in enumerate(null_rows)]),
            "meta": pa.array([{"a": int(k), "b": [int(k)] * int(k)} for k in lengths]),
        }
    )


@_settings
@given(table=tables(), group=st.integers(1, 64), batch=st.integers(1, 100), data=st.data())
def test_seek_equals_suffix_of_full_read(
    tmp_path: Path, table: pa.Table, group: int, batch: int, data: st.DataObject
) -> None:
    path = tmp_path / f"t{group}-{batch}-{table.num_rows}.parquet"
    pq.write_table(table, path, row_group_size=group)
    source = ParquetShardedSource(str(path), batch_size=batch)
    full = [plain(r) for r in source.open_shard(str(path))]
    assert full == table.to_pylist()
    assert source.num_rows(str(path)) == table.num_rows
    row = data.draw(st.integers(0, table.num_rows))
    assert [plain(r) for r in source.open_shard_at_row(str(path), row)] == full[row:]


def test_numeric_lists_are_readonly_numpy_views(tmp_path: Path) -> None:
    paths = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=100)
    source = ParquetShardedSource(paths)
    row = next(source.open_shard(paths[0]))
    assert isinstance(row["input_ids"], np.ndarray) and row["input_ids"].dtype == np.int32
    assert not row["input_ids"].flags.writeable and row["input_ids"].base is not None
    assert isinstance(row["text"], str) and isinstance(row["id"], int)
    as_lists = ParquetShardedSource(paths, numpy_lists=False)
    assert isinstance(next(as_lists.open_shard(paths[0]))["input_ids"], list)


def test_projection_and_metadata(tmp_path: Path) -> None:
    write_parquet_dataset(tmp_path, num_shards=3, rows_per_shard=50, row_group_size=7)
    source = ParquetShardedSource(str(tmp_path / "*.parquet"), columns=["text", "id"])
    assert source.row_counts() == [50, 50, 50] and len(source) == 150
    assert source.schema.names == ["text", "id"]
    row = next(source.open_shard(source.shard_names[2]))
    assert list(row) == ["text", "id"] and row["id"] == 100
    assert source.stats.rows >= 1


def test_directory_relative_names_and_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_parquet_dataset(tmp_path / "data", num_shards=2, rows_per_shard=5)
    monkeypatch.chdir(tmp_path)
    by_dir = ParquetShardedSource("data")
    assert [os.path.basename(n) for n in by_dir.shard_names] == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]
    single = ParquetShardedSource("data/shard-00001.parquet")
    assert single.shard_names == ["data/shard-00001.parquet"]
    assert next(single.open_shard_at_row(str(tmp_path / "data/shard-00001.parquet"), 4))["id"] == 9
    with pytest.raises(ShardNotFoundError, match="not a shard of this source"):
        single.open_shard("data/shard-00000.parquet")


def test_seek_reads_nothing_before_the_target_row_group(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": np.arange(1000)}), path, row_group_size=100, compression="none")
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    source = ParquetShardedSource(str(path))
    assert [r["id"] for r in source.open_shard_at_row(str(path), 100)] == list(range(100, 1000))
    with pytest.raises(CorruptShardError, match=r"t\.parquet.*row group 0"):
        list(source.open_shard(str(path)))


def test_missing_and_unmatched_paths(tmp_path: Path) -> None:
    with pytest.raises(ShardNotFoundError, match=r"nope\.parquet"):
        ParquetShardedSource(str(tmp_path / "nope.parquet"))
    with pytest.raises(NoFilesMatchedError, match=r"\*\.parquet"):
        ParquetShardedSource(str(tmp_path / "*.parquet"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NoFilesMatchedError, match="directory"):
        ParquetShardedSource(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"not parquet at all" * 10, "truncated"])
def test_corrupt_empty_and_truncated_files(tmp_path: Path, content: bytes | str) -> None:
    good = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=100)[0]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(Path(good).read_bytes()[:-50] if content == "truncated" else content)
    source = ParquetShardedSource(str(bad))
    with pytest.raises(CorruptShardError, match=r"bad\.parquet"):
        source.row_counts()


def test_projected_column_missing(tmp_path: Path) -> None:
    paths = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=10)
    with pytest.raises(
        MissingColumnError, match=r"\['tokens'\].*columns are \['id', 'input_ids', 'text'\]"
    ):
        ParquetShardedSource(paths, columns=["id", "tokens"]).row_counts()


def test_schema_mismatch_names_both_files_and_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1], "text": ["a"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [1.5], "body": ["b"]}), tmp_path / "b.parquet")
    source = ParquetShardedSource(str(tmp_path / "*.parquet"))
    with pytest.raises(SchemaMismatchError) as error:
        source.row_counts()
    message = str(error.value)
    assert "b.parquet" in message and "a.parquet" in message
    assert "['text']" in message and "['body']" in message and "id (int64 vs double)" in message
    projected = ParquetShardedSource(str(tmp_path / "*.parquet"), columns=["id"])
    with pytest.raises(SchemaMismatchError, match="id"):
        list(projected.open_shard(projected.shard_names[1]))


def test_row_past_the_end(tmp_path: Path) -> None:
    path = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=10)[0]
    source = ParquetShardedSource(path)
    assert list(source.open_shard_at_row(path, 10)) == []
    with pytest.raises(RowOutOfRangeError, match=r"Row 11 .* 10 rows"):
        source.open_shard_at_row(path, 11)
    with pytest.raises(RowOutOfRangeError):
        source.open_shard_at_row(path, -1)


def test_invalid_arguments(tmp_path: Path) -> None:
    path = write_parquet_dataset(tmp_path, num_shards=1, rows_per_shard=10)[0]
    with pytest.raises(TypeError, match="columns"):
        ParquetShardedSource(path, columns="id")
    with pytest.raises(ValueError, match="batch_size"):
        ParquetShardedSource(path, batch_size=0)
    with pytest.raises(TypeError, match="storage_options"):
        ParquetShardedSource(path, storage_options="anon")
    with pytest.raises(ValueError, match="one store"):
        ParquetShardedSource([path, "s3://bucket/x.parquet"])
