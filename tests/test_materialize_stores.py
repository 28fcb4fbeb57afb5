"""Materialization on the S3, GCS and Azure emulators: the same bytes as on local disk, read
back exactly, an existing output refused, an interrupted run resumed, a corrupt shard named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from easydata_grain import CorruptShardError
from easydata_grain.materialize import EpochRows, materialize, open_materialized
from easydata_grain.synthetic import tiny_tokenizer
from ops.emulators import StoreEndpoint
from tests.helpers import plain
from tests.materialize_rows import FaultyRows, tokenized, write_source
from tests.test_materialize import files_of


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> EpochRows:
    paths = write_source(tmp_path_factory.mktemp("source"))
    return tokenized(paths, tiny_tokenizer(), shuffle=True, seed=5, window_size=400)


@pytest.fixture(scope="module")
def local_output(rows: EpochRows, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local") / "out"
    materialize(rows, str(out), workers=1, unit_rows=700)
    return files_of(out)


def stored_files(store: StoreEndpoint, url: str) -> dict[str, bytes]:
    """Every object under ``url`` (names relative to it) with its bytes."""
    fs = store.filesystem()
    root = url.split("://", 1)[1].rstrip("/") + "/"
    return {path[len(root) :]: fs.cat_file(path) for path in fs.find(url)}


def test_materialize_on_a_store(
    store: StoreEndpoint, rows: EpochRows, local_output: dict[str, bytes]
) -> None:
    options: dict[str, Any] = store.storage_options()
    bucket = store.new_bucket()
    out = f"{bucket}/tokenized"
    done = materialize(rows, out, workers=1, unit_rows=700, storage_options=options)
    assert done.written == ("part-00000.parquet", "part-00001.parquet", "part-00002.parquet")
    assert stored_files(store, out) == local_output  # no temporary object or record is left
    source = open_materialized(out, rows.fingerprint(), storage_options=options)
    back = [plain(r) for name in source.shard_names for r in source.open_shard(name)]
    assert back == [plain(r) for r in rows.table(0, 2100).to_pylist()]
    with pytest.raises(FileExistsError, match="already holds a materialized output"):
        materialize(rows, out, workers=1, unit_rows=700, storage_options=options)

    resumed = f"{bucket}/resumed"
    with pytest.raises(RuntimeError, match="injected failure"):
        materialize(
            FaultyRows(rows, 1400, "raise"),
            resumed,
            workers=1,
            unit_rows=700,
            storage_options=options,
        )
    assert "manifest.json" not in stored_files(store, resumed)
    done = materialize(rows, resumed, workers=1, unit_rows=700, storage_options=options)
    assert done.kept == ("part-00000.parquet", "part-00001.parquet")
    assert done.written == ("part-00002.parquet",)
    assert stored_files(store, resumed) == local_output

    damaged = bytearray(local_output["part-00001.parquet"])
    damaged[-100] ^= 0x01
    store.upload(bytes(damaged), f"{out}/part-00001.parquet")
    with pytest.raises(CorruptShardError, match=r"tokenized/part-00001\.parquet does not match"):
        open_materialized(out, storage_options=options)
    materialize(rows, out, workers=1, unit_rows=700, storage_options=options, overwrite=True)
    assert stored_files(store, out) == local_output


def test_reading_a_missing_output_on_a_store(store: StoreEndpoint, tmp_path: Path) -> None:
    out = f"{store.new_bucket()}/nothing"
    with pytest.raises(FileNotFoundError, match=r"has no manifest\.json"):
        open_materialized(out, storage_options=store.storage_options())
