"""The Ray engine on a real local Ray (2 CPUs, started in the loopback environment): the same bytes as the local
engine, a killed worker retried, a task's error raised as it is, output on S3; the loopback
environment is applied to Ray's processes and undone in the driver."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from easydata_grain import (
    MalformedRowError,
    ParquetShardedSource,
    RetriesExhaustedError,
    TokenizeTransform,
)
from easydata_grain.materialize import (
    LOOPBACK_ENVIRONMENT,
    EpochRows,
    RayOptions,
    loopback_environment,
    materialize,
    open_materialized,
)
from easydata_grain.materialize.ray_engine import task_environment
from easydata_grain.synthetic import tiny_tokenizer
from ops.emulators import StoreEndpoint
from tests.helpers import plain, start_ray_for_tests
from tests.materialize_rows import NUMBERS_FROM_1500, FaultyRows, tokenized, write_source
from tests.test_materialize import files_of

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray of 2 CPUs for this module, its workers able to import ``tests``."""
    start_ray_for_tests()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def rows(paths: list[str]) -> EpochRows:
    return tokenized(paths, tiny_tokenizer(), shuffle=True, seed=3, window_size=250)


@pytest.fixture(scope="module")
def local_output(rows: EpochRows, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The local engine's output (one process), to compare with."""
    out = tmp_path_factory.mktemp("local") / "out"
    materialize(rows, str(out), workers=1, unit_rows=350, row_group_rows=100)
    return files_of(out)


@ray.remote
def _environment() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in LOOPBACK_ENVIRONMENT}


def test_rays_processes_start_in_the_loopback_environment(ray_cluster: None) -> None:
    assert ray.get(_environment.remote()) == dict(LOOPBACK_ENVIRONMENT)
    assert all(os.environ.get(name) != value for name, value in LOOPBACK_ENVIRONMENT.items())


def test_loopback_environment_sets_and_restores() -> None:
    environ = {"http_proxy": "http://proxy:3128", "PATH": "/bin"}
    with loopback_environment(environ):
        assert {k: environ[k] for k in LOOPBACK_ENVIRONMENT} == dict(LOOPBACK_ENVIRONMENT)
    assert environ == {"http_proxy": "http://proxy:3128", "PATH": "/bin"}


def test_tasks_get_the_drivers_storage_settings() -> None:
    environ = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AZURE_STORAGE_CONNECTION_STRING": "x",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9001",
        "MY_TOKEN": "t",
        "HOME": "/root",
        "https_proxy": "http://proxy:3128",
    }
    shared = task_environment(environ, ["MY_TOKEN"], local_cluster=False)
    assert shared == {k: environ[k] for k in environ if k not in ("HOME", "https_proxy")}
    local = task_environment(environ, (), local_cluster=True)
    assert local["https_proxy"] == "http://proxy:3128" and local["http_proxy"] == ""
    assert local["no_proxy"] == "" and "MY_TOKEN" not in local


def test_ray_writes_the_same_bytes_as_the_local_engine(
    ray_cluster: None, rows: EpochRows, local_output: dict[str, bytes], tmp_path: Path
) -> None:
    done = materialize(
        rows, str(tmp_path / "out"), engine="ray", workers=2, unit_rows=350, row_group_rows=100
    )
    assert done.written == tuple(f"part-{u:05d}.parquet" for u in range(6))
    assert files_of(tmp_path / "out") == local_output


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_output_is_identical(
    ray_cluster: None, rows: EpochRows, local_output: dict[str, bytes], tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    faulty = FaultyRows(rows, 700, "exit", str(marker))
    out = tmp_path / "out"
    materialize(faulty, str(out), engine="ray", workers=2, unit_rows=350, row_group_rows=100)
    assert marker.exists()  # a worker did die in the middle of a unit
    assert files_of(out) == local_output
    # Without retries, the death is an error naming the unit; the other shards are kept.
    marker.unlink()
    again = tmp_path / "again"
    with pytest.raises(RetriesExhaustedError, match=r"unit 2 \(positions 700\.\.1049\)"):
        materialize(
            faulty,
            str(again),
            engine="ray",
            workers=1,
            unit_rows=350,
            row_group_rows=100,
            ray=RayOptions(max_retries=0),
        )
    assert "manifest.json" not in files_of(again)
    done = materialize(rows, str(again), engine="ray", workers=2, unit_rows=350, row_group_rows=100)
    assert done.kept == ("part-00000.parquet", "part-00001.parquet")
    assert files_of(again) == local_output


def test_a_tasks_error_is_raised_as_it_is(
    ray_cluster: None, paths: list[str], tmp_path: Path
) -> None:
    source = ParquetShardedSource(paths, columns=["id", "text"])
    steps = [NUMBERS_FROM_1500, TokenizeTransform(tiny_tokenizer(), text_field="text")]
    rows = EpochRows(source, steps)  # the text of ids from 1500 on is a number
    with pytest.raises(MalformedRowError, match="TokenizeTransform tokenizes strings") as error:
        materialize(rows, str(tmp_path / "out"), engine="ray", workers=2, unit_rows=500)
    assert isinstance(error.value.__cause__, ray.exceptions.RayTaskError)  # raised in a task
    assert "manifest.json" not in files_of(tmp_path / "out")


def test_ray_writes_to_s3(
    ray_cluster: None,
    rows: EpochRows,
    local_output: dict[str, bytes],
    s3_store: StoreEndpoint,
) -> None:
    out = s3_store.new_bucket() + "/materialized"
    options = s3_store.storage_options()
    materialize(
        rows,
        out,
        engine="ray",
        workers=2,
        unit_rows=350,
        row_group_rows=100,
        storage_options=options,
    )
    fs = s3_store.filesystem()
    names = sorted(fs.ls(out, detail=False))
    assert [n.rsplit("/", 1)[1] for n in names] == sorted(local_output)
    for name in local_output:
        assert fs.cat_file(f"{out}/{name}") == local_output[name]
    source = open_materialized(out, rows.fingerprint(), storage_options=options)
    back = [plain(r) for n in source.shard_names for r in source.open_shard(n)]
    assert back == [plain(r) for r in rows.table(0, rows.num_positions()).to_pylist()]
