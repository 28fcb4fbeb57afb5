"""Parquet shards from different writers: nullability and field metadata are no mismatch, a
real mismatch is named as it is; damaged pages are caught by their checksums."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    AsyncDataLoader,
    CorruptShardError,
    ParquetShardedSource,
    SchemaMismatchError,
)
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.sources.file_source import describe_schema_difference
from ops.emulators import StoreEndpoint

ROWS = 30


def columns(first: int) -> dict[str, pa.Array]:
    """Token ids and an id column: what the columnar batch path gathers."""
    ids = np.arange(first, first + ROWS)
    return {
        "id": pa.array(ids),
        "input_ids": pa.array([list(range(i % 5 + 1)) for i in ids], pa.list_(pa.int32())),
    }


def strict_schema() -> pa.Schema:
    """As duckdb or Spark write it: NOT NULL columns (and list elements), field ids."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False, metadata={"PARQUET:field_id": "1"}),
            pa.field(
                "input_ids",
                pa.list_(pa.field("element", pa.int32(), nullable=False)),
                nullable=False,
                metadata={"PARQUET:field_id": "2"},
            ),
        ]
    )


def write_mixed(directory: Path, strict_first: bool) -> list[str]:
    """Shards alternating between NOT NULL (duckdb, Spark) and nullable (pyarrow, polars)."""
    paths = []
    for shard in range(4):
        table = pa.table(columns(shard * ROWS))
        if (shard % 2 == 0) == strict_first:
            table = table.cast(strict_schema())
        path = directory / f"part-{shard}.parquet"
        pq.write_table(table, path, row_group_size=7)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("strict_first", [True, False])
def test_shards_differing_only_in_nullability_read_together(
    tmp_path: Path, strict_first: bool
) -> None:
    paths = write_mixed(tmp_path, strict_first)
    assert not pq.read_schema(paths[0 if strict_first else 1]).field("id").nullable
    source = ParquetShardedSource(paths)
    assert source.row_counts() == [ROWS] * 4
    assert all(f.nullable and not f.metadata for f in source.schema)
    assert source.schema.field("input_ids").type.value_field.nullable
    assert [int(r["id"]) for s in source.shard_names for r in source.open_shard(s)] == list(
        range(4 * ROWS)
    )
    # Every shard's blocks come as tables of the one block schema, concatenable.
    tables = [
        source.read_block_table(shard, block)
        for shard in range(4)
        for block in range(len(source.block_starts(shard)))
    ]
    assert all(t.schema.equals(source.block_schema) for t in tables)
    assert pa.concat_tables(tables).column("id").to_pylist() == list(range(4 * ROWS))


def test_loader_batches_shards_of_mixed_nullability_column_by_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gathered = []
    gather = IndexedSourceDataset._gather_columns

    def counting(self: IndexedSourceDataset, indices: list[int]) -> object:
        columns = gather(self, indices)
        gathered.append(columns is not None)
        return columns

    monkeypatch.setattr(IndexedSourceDataset, "_gather_columns", counting)
    source = ParquetShardedSource(write_mixed(tmp_path, strict_first=True))
    loader = AsyncDataLoader(source, batch_size=8, shuffle_buffer_size=16, pad=True, seed=1)
    batches = list(loader)
    ids = np.concatenate([b["id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(4 * ROWS))
    assert all(b["input_ids"].dtype == np.int32 for b in batches)
    assert gathered and all(gathered)  # the columnar path, not dict rows


def test_nested_not_null_fields_read_with_nullable_ones(tmp_path: Path) -> None:
    nested = pa.struct(
        [pa.field("a", pa.int64(), nullable=False), pa.field("b", pa.list_(pa.string()))]
    )
    rows = [{"meta": {"a": i, "b": [str(i)]}} for i in range(5)]
    strict = pa.schema([pa.field("meta", nested, nullable=False)])
    pq.write_table(pa.Table.from_pylist(rows, strict), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    source = ParquetShardedSource(str(tmp_path / "*.parquet"))
    assert [r["meta"] for s in source.shard_names for r in source.open_shard(s)] == [
        row["meta"] for row in rows + rows
    ]
    assert source.read_block_table(0, 0).schema.equals(source.block_schema)


def mismatch(tmp_path: Path, first: pa.Table, second: pa.Table) -> str:
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(second, tmp_path / "b.parquet")
    with pytest.raises(SchemaMismatchError) as error:
        ParquetShardedSource(str(tmp_path / "*.parquet")).row_counts()
    return str(error.value)


def test_column_order_difference_is_named(tmp_path: Path) -> None:
    message = mismatch(
        tmp_path, pa.table({"id": [1], "text": ["a"]}), pa.table({"text": ["b"], "id": [2]})
    )
    assert "another column order (['id', 'text'] vs ['text', 'id'])" in message
    assert "different types" not in message


def test_nested_type_difference_names_the_nested_field(tmp_path: Path) -> None:
    message = mismatch(
        tmp_path,
        pa.table({"meta": [{"a": 1, "b": [1]}]}),
        pa.table({"meta": [{"a": 1, "b": ["x"]}]}),
    )
    assert "different types for meta.b[] (int64 vs string)" in message
    assert "column order" not in message


def test_type_difference_next_to_a_nullability_difference(tmp_path: Path) -> None:
    strict = pa.schema([pa.field("x", pa.int64(), nullable=False)])
    message = mismatch(tmp_path, pa.table({"x": [1]}, strict), pa.table({"x": [1.5]}))
    assert "different types for x (int64 vs double)" in message
    assert "column order" not in message


def test_description_of_schemas_equal_but_for_nullability() -> None:
    strict = pa.schema([pa.field("x", pa.int64(), nullable=False)])
    text = describe_schema_difference(strict, pa.schema([pa.field("x", pa.int64())]))
    assert "order" not in text and "nullability" in text


def checksummed_shard(path: Path) -> pa.Table:
    """Four row groups of plain, uncompressed values with page checksums: a flipped byte in a
    page changes one value, and only the checksum can tell."""
    table = pa.table({"id": np.arange(400), "x": np.arange(400) * 3})
    pq.write_table(
        table,
        path,
        row_group_size=100,
        compression="none",
        use_dictionary=False,
        write_page_checksum=True,
    )
    return table


def damage_page(path: Path, group: int, column: int) -> None:
    """Flip a byte in the middle of a column chunk's data page; the footer stays intact."""
    chunk = pq.read_metadata(path).row_group(group).column(column)
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_page_is_caught_by_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    table = checksummed_shard(path)
    damage_page(path, group=2, column=1)
    source = ParquetShardedSource(str(path))
    corrupt = r"c\.parquet.* is corrupt in row group 2: .*CRC checksum"
    with pytest.raises(CorruptShardError, match=corrupt):
        list(source.open_shard(str(path)))
    with pytest.raises(CorruptShardError, match=corrupt):
        list(source.open_shard_at_row(str(path), 250))
    with pytest.raises(CorruptShardError, match=corrupt):
        source.read_block_table(0, 2)
    with pytest.raises(CorruptShardError, match=corrupt):
        source.read_block(0, 2)
    with pytest.raises(CorruptShardError, match=corrupt):
        list(AsyncDataLoader(source, batch_size=16, shuffle_buffer_size=64))
    # The undamaged row groups read as written.
    assert source.read_block_table(0, 3).equals(table.slice(300))
    head = [int(r["x"]) for r in itertools.islice(source.open_shard(str(path)), 200)]
    assert head == table.column("x").to_pylist()[:200]


def test_damaged_page_on_a_store(s3_store: StoreEndpoint, tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    checksummed_shard(path)
    damage_page(path, group=1, column=0)
    url = f"{s3_store.new_bucket('crc')}/c.parquet"
    s3_store.upload(str(path), url)
    source = ParquetShardedSource(url, storage_options=s3_store.storage_options())
    with pytest.raises(CorruptShardError, match=r"c\.parquet.* row group 1: .*CRC checksum"):
        source.read_block_table(0, 1)
