"""A source built to read only some columns is a different source for caches and saved
states; the compiler's own projection (``with_columns``) is not."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import ParquetShardedSource, Pipeline


@pytest.fixture
def parquet(tmp_path: Path) -> str:
    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [1, 2, 3], "b": [4, 5, 6], "c": ["x", "y", "z"]}), path)
    return path


def test_columns_are_part_of_the_identities(parquet: str) -> None:
    everything = ParquetShardedSource(parquet).identities()
    assert ParquetShardedSource(parquet, columns=["id"]).identities() != everything
    assert (
        ParquetShardedSource(parquet, columns=["id"]).identities()
        != ParquetShardedSource(parquet, columns=["b"]).identities()
    )
    narrowed = ParquetShardedSource(parquet, columns=["id", "b"])
    assert narrowed.with_columns(["id"]).identities() == narrowed.identities()


def test_a_cache_made_with_other_columns_misses(parquet: str, tmp_path: Path) -> None:
    def columns(chosen: list[str]) -> list[str]:
        config = {
            "datasets": [
                {"data_files": parquet, "cache_path": str(tmp_path / "cache"), "columns": chosen}
            ],
            "load": {"batch_size": 3, "drop_last": False},
        }
        (batch,) = list(Pipeline.from_config(config).build())
        return sorted(batch)

    assert columns(["id"]) == ["id"]
    assert columns(["b"]) == ["b"]
    assert columns(["b", "c"]) == ["b", "c"]
    assert columns(["id"]) == ["id"]  # a hit on the first entry
    assert len(list((tmp_path / "cache").iterdir())) == 3
