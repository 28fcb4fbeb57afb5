"""Listing: a file named twice, by two patterns or in two spellings, is read once."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import ParquetShardedSource
from easydata_grain.io.listing import canonical_url
from ops.emulators import StoreEndpoint


def _parquet(first_id: int, rows: int = 100) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": list(range(first_id, first_id + rows))}), buffer)
    return buffer.getvalue()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data/a.parquet`` (ids 0-99) and ``data/b.parquet`` (100-199), in the working dir."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.parquet").write_bytes(_parquet(0))
    (tmp_path / "data" / "b.parquet").write_bytes(_parquet(100))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def _ids(source: ParquetShardedSource) -> list[int]:
    return [row["id"] for shard in source.shard_names for row in source.open_shard(shard)]


def test_a_file_matched_by_a_glob_and_named_again_is_read_once(data_dir: Path) -> None:
    source = ParquetShardedSource(["data/*.parquet", "data/a.parquet"])
    assert len(source.shard_names) == 2 and len(source) == 200
    assert sorted(_ids(source)) == list(range(200))


def test_every_spelling_of_a_local_path_is_one_file(data_dir: Path) -> None:
    absolute = str(data_dir / "a.parquet")
    spellings = [
        "data/a.parquet",
        "./data/a.parquet",
        absolute,
        f"file://{absolute}",
        "data//a.parquet",
        "data/../data/a.parquet",
    ]
    assert len({canonical_url(s) for s in spellings}) == 1
    source = ParquetShardedSource([*spellings, "data/b.parquet"])
    assert source.shard_names == ["data/a.parquet", "data/b.parquet"]  # first spelling kept
    assert _ids(source) == list(range(200))


def test_the_first_occurrence_keeps_its_place(data_dir: Path) -> None:
    source = ParquetShardedSource(["data/b.parquet", os.path.abspath("data/*.parquet")])
    assert source.shard_names == ["data/b.parquet", str(data_dir / "a.parquet")]


def test_a_store_file_named_twice_is_read_once(gcs_store: StoreEndpoint) -> None:
    bucket = gcs_store.new_bucket("dup")
    gcs_store.upload(_parquet(0), f"{bucket}/data/a.parquet")
    gcs_store.upload(_parquet(100), f"{bucket}/data/b.parquet")
    patterns = [
        f"{bucket}/data/*.parquet",
        f"{bucket}/data/a.parquet/",
        f"gcs{bucket[2:]}/data/a.parquet",
    ]
    source = ParquetShardedSource(patterns, storage_options=gcs_store.storage_options())
    assert source.shard_names == [f"{bucket}/data/a.parquet", f"{bucket}/data/b.parquet"]
    assert _ids(source) == list(range(200))


def test_store_keys_that_differ_in_a_doubled_slash_are_two_files(s3_store: StoreEndpoint) -> None:
    bucket = s3_store.new_bucket("slash")
    s3_store.upload(_parquet(0), f"{bucket}/data/a.parquet")
    s3_store.upload(_parquet(100), f"{bucket}/data//a.parquet")
    patterns = [f"{bucket}/data/a.parquet", f"{bucket}/data//a.parquet"]
    source = ParquetShardedSource(patterns, storage_options=s3_store.storage_options())
    assert sorted(_ids(source)) == list(range(200))
