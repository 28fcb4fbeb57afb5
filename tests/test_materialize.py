"""Materialization on local disk with the local engine: rows read back exactly and in the
loader's order, byte-identical output for 1 and 2 processes, resume after an interruption (a
raised error at a random unit, a killed process), existing output refused or overwritten,
corrupt shards and foreign pipelines detected, a read-only output refused, the cache lookup."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    CorruptShardError,
    HeadSource,
    InMemorySource,
    MalformedRowError,
    ParquetShardedSource,
    SchemaMismatchError,
    ShardNotFoundError,
    TokenizeTransform,
    UnsupportedFormatError,
)
from easydata_grain.materialize import (
    EpochRows,
    Manifest,
    find_materialized,
    materialize,
    materialized_path,
    open_materialized,
    read_manifest,
)
from easydata_grain.materialize.arrow_table import rows_table
from easydata_grain.materialize.settings import parse_size
from easydata_grain.synthetic import tiny_tokenizer
from easydata_grain.transforms.functions import FilterFunction
from tests.helpers import plain
from tests.materialize_rows import (
    NULL_LABEL_FIRST,
    FaultyRows,
    drop_multiples_of_three,
    keep_from_thousand,
    tokenized,
    write_source,
)

REPO = Path(__file__).resolve().parents[1]
PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """3 Parquet shards of 700 generated rows (ids 0..2099), row groups of 100."""
    return write_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rows(paths: list[str], tokenizer: Any) -> EpochRows:
    """The tokenize pipeline, shuffled as a loader with seed 7 and a 300-row window."""
    return tokenized(paths, tokenizer, shuffle=True, seed=7, window_size=300)


def files_of(directory: str | Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative names) with its bytes."""
    root = Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def read_back(output: str, fingerprint: Any = None, **options: Any) -> list[dict[str, Any]]:
    """The rows of a materialized output, in order, as plain values."""
    source = open_materialized(output, fingerprint, **options)
    return [plain(row) for name in source.shard_names for row in source.open_shard(name)]


def fresh(tmp_path: Path) -> str:
    """A new output directory name under ``tmp_path`` (hypothesis reuses ``tmp_path``)."""
    return str(tmp_path / f"out-{uuid.uuid4().hex[:8]}")


_IDS = st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8).map(
    lambda ids: np.array(ids, dtype=np.int32)
)
_ROW = st.fixed_dictionaries(
    {
        "input_ids": _IDS,
        "maybe_ids": st.none() | _IDS,
        "scores": st.lists(st.floats(allow_nan=False, width=32), max_size=4).map(
            lambda v: np.array(v, dtype=np.float32)
        ),
        "n": st.integers(-(2**62), 2**62),
        "text": st.none() | st.text(max_size=10),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_ROW, min_size=1, max_size=40))
def test_rows_become_a_table_with_their_values_and_types(rows: list[dict[str, Any]]) -> None:
    table = rows_table(rows, "the rows")
    assert table.to_pylist() == [plain(row) for row in rows]
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("scores").type == pa.list_(pa.float32())


def test_rows_that_cannot_form_a_table_are_named() -> None:
    with pytest.raises(MalformedRowError, match=r"Row 1 of the rows of positions 4\.\.5 has"):
        rows_table([{"a": 1}, {"b": 1}], "the rows of positions 4..5")
    flat_and_square = [{"a": np.zeros(2, np.int32)}, {"a": np.zeros((2, 2), np.int32)}]
    with pytest.raises(MalformedRowError, match="The field 'a' of the rows cannot be stored"):
        rows_table(flat_and_square, "the rows")


def test_rows_read_back_exactly_in_the_loaders_order(rows: EpochRows, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    done = materialize(rows, out, workers=1, unit_rows=500, row_group_rows=128)
    assert done.manifest.rows == 2100 and done.manifest.num_units == 5
    assert done.written == tuple(f"part-{u:05d}.parquet" for u in range(5)) and done.kept == ()
    back = read_back(out, rows.fingerprint())
    loader = AsyncDataLoader(
        rows.source,
        batch_size=100,
        shuffle_buffer_size=300,
        seed=7,
        prefetch_enabled=False,
        pad=True,
    )
    expected = []
    for batch in loader:
        expected += [
            {"id": int(i), "text": t, "input_ids": ids[mask].tolist()}
            for i, t, ids, mask in zip(
                batch["id"],
                batch["text"],
                batch["input_ids"],
                batch["input_ids_mask"],
                strict=True,
            )
        ]
    assert back == expected
    assert sorted(r["id"] for r in back) == list(range(2100))
    assert [r["id"] for r in back] != list(range(2100))  # shuffled
    # The globs a reader would use see the shards only.
    source = ParquetShardedSource(out + "/part-*.parquet")
    assert [plain(r) for n in source.shard_names for r in source.open_shard(n)] == back


@pytest.mark.slow
def test_one_and_two_processes_write_identical_bytes(rows: EpochRows, tmp_path: Path) -> None:
    one = materialize(rows, str(tmp_path / "one"), workers=1, unit_rows=400, row_group_rows=64)
    two = materialize(rows, str(tmp_path / "two"), workers=2, unit_rows=400, row_group_rows=64)
    assert one.manifest == two.manifest
    files = files_of(tmp_path / "one")
    assert files == files_of(tmp_path / "two")
    assert sorted(files) == ["manifest.json", *(f"part-{u:05d}.parquet" for u in range(6))]
    document = json.loads(files["manifest.json"])
    assert document["fingerprint"] == json.loads(json.dumps(rows.fingerprint()))
    assert document["rows"] == 2100
    assert [s["rows"] for s in document["shards"]] == [400] * 5 + [100]
    for shard in document["shards"]:
        data = files[shard["name"]]
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        metadata = pq.read_metadata(pa.BufferReader(data))
        assert all(metadata.row_group(g).num_rows <= 64 for g in range(metadata.num_row_groups))


def test_rows_that_cannot_reach_worker_processes_are_a_clear_error(tmp_path: Path) -> None:
    source = InMemorySource.from_rows([{"id": i} for i in range(10)])
    rows = EpochRows(source.map(lambda r: {**r, "x": 1}))
    with pytest.raises(TypeError, match=r"workers=2 sends the pipeline .* or workers=1"):
        materialize(rows, str(tmp_path / "out"), workers=2, unit_rows=5)
    assert not (tmp_path / "out" / "manifest.json").exists()


@PROPERTY
@given(
    num_rows=st.integers(1, 2100),
    unit_rows=st.integers(1, 900),
    row_group_rows=st.integers(16, 512),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32),
    window=st.integers(1, 700),
    filtered=st.booleans(),
)
def test_output_holds_exactly_the_rows_in_order(
    paths: list[str],
    tokenizer: Any,
    tmp_path: Path,
    num_rows: int,
    unit_rows: int,
    row_group_rows: int,
    shuffle: bool,
    seed: int,
    window: int,
    filtered: bool,
) -> None:
    source = HeadSource(ParquetShardedSource(paths, columns=["id", "text"]), num_rows)
    steps: list[Any] = [TokenizeTransform(tokenizer, text_field="text")]
    if filtered:
        steps.insert(0, FilterFunction(drop_multiples_of_three))
    rows = EpochRows(source, steps, shuffle=shuffle, seed=seed, window_size=window)
    expected = [plain(r) for r in rows.table(0, num_rows).to_pylist()]
    if not expected:
        return  # every row filtered: there is no schema to take (tested below)
    out = fresh(tmp_path)
    done = materialize(rows, out, workers=1, unit_rows=unit_rows, row_group_rows=row_group_rows)
    assert read_back(out, rows.fingerprint()) == expected
    manifest = done.manifest
    assert manifest.num_units == -(-num_rows // unit_rows) == len(manifest.shards)
    assert [s.first_position for s in manifest.shards] == list(range(0, num_rows, unit_rows))
    assert sum(s.positions for s in manifest.shards) == num_rows
    assert manifest.rows == len(expected)
    if filtered:
        assert all(r["id"] % 3 for r in expected)


@PROPERTY
@given(unit_rows=st.integers(150, 700), data=st.data())
def test_an_interrupted_run_resumes_keeping_its_finished_shards(
    rows: EpochRows, tmp_path: Path, unit_rows: int, data: st.DataObject
) -> None:
    units = -(-2100 // unit_rows)
    stop = data.draw(st.integers(1, units - 1), label="failing unit")
    out = fresh(tmp_path)
    with pytest.raises(RuntimeError, match="injected failure"):
        materialize(
            FaultyRows(rows, stop * unit_rows, "raise"), out, workers=1, unit_rows=unit_rows
        )
    left = files_of(out)
    assert "manifest.json" not in left  # nothing looks complete
    names = [f"part-{u:05d}.parquet" for u in range(units)]
    assert sorted(n for n in left if n.startswith("part-")) == names[:stop]
    done = materialize(rows, out, workers=1, unit_rows=unit_rows)
    assert done.kept == tuple(names[:stop]) and done.written == tuple(names[stop:])
    reference = fresh(tmp_path)
    materialize(rows, reference, workers=1, unit_rows=unit_rows)
    assert files_of(out) == files_of(reference)


_KILLED_RUN = """
import sys
from pathlib import Path
from easydata_grain.materialize import materialize
from tests.materialize_rows import FaultyRows, tokenized
paths, out = sys.argv[1].split(","), sys.argv[2]
rows = FaultyRows(tokenized(paths, shuffle=True, seed=7, window_size=300), 1200, "hang")
materialize(rows, out, workers=1, unit_rows=300)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_and_rewrites_what_does_not_verify(
    rows: EpochRows, paths: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, ",".join(paths), str(out)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 120
        last = out / "_materializing" / "part-00003.parquet.json"  # units 0-3 finished
        while not last.exists():
            assert process.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert "manifest.json" not in files_of(out)
    # A shard damaged since (same size), one whose record was never written (a kill between
    # the move and the record), and a temporary file of a write that was cut short.
    damaged = out / "part-00001.parquet"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (out / "_materializing" / "part-00002.parquet.json").unlink()
    (out / ".part-00004.parquet.0123abcd.tmp").write_bytes(b"half a shard")
    done = materialize(rows, str(out), workers=1, unit_rows=300)
    names = [f"part-{u:05d}.parquet" for u in range(7)]
    assert done.kept == (names[0], names[3])
    assert done.written == (names[1], names[2], *names[4:])
    materialize(rows, str(tmp_path / "reference"), workers=1, unit_rows=300)
    assert files_of(out) == files_of(tmp_path / "reference")


def test_existing_output_is_refused_and_overwrite_removes_stale_shards(
    rows: EpochRows, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    materialize(rows, out, workers=1, unit_rows=300)
    before = files_of(out)
    with pytest.raises(FileExistsError, match=r"manifest\.json exists") as error:
        materialize(rows, out, workers=1, unit_rows=300)
    assert "overwrite=True" in str(error.value)
    assert files_of(out) == before
    (tmp_path / "out" / "notes.txt").write_text("mine")
    done = materialize(rows, out, workers=1, unit_rows=1000, overwrite=True)
    assert done.written == ("part-00000.parquet", "part-00001.parquet", "part-00002.parquet")
    assert sorted(files_of(out)) == ["manifest.json", "notes.txt", *done.written]
    assert [r["id"] for r in read_back(out)] == [r["id"] for r in read_back_rows(rows)]


def read_back_rows(rows: EpochRows) -> list[dict[str, Any]]:
    return [plain(r) for r in rows.table(0, rows.num_positions()).to_pylist()]


def test_shards_without_a_run_or_of_another_pipeline_are_refused(
    rows: EpochRows, paths: list[str], tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "part-00000.parquet").write_bytes(Path(paths[0]).read_bytes())
    with pytest.raises(FileExistsError, match="no manifest and no record of a run"):
        materialize(rows, str(foreign), workers=1)
    materialize(rows, str(foreign), workers=1, overwrite=True)

    partial = str(tmp_path / "partial")
    with pytest.raises(RuntimeError):
        materialize(FaultyRows(rows, 600, "raise"), partial, workers=1, unit_rows=300)
    other = tokenized(paths, tiny_tokenizer(vocab_size=300), shuffle=True, seed=7, window_size=300)
    with pytest.raises(ValueError, match="unfinished run of another pipeline") as error:
        materialize(other, partial, workers=1, unit_rows=300)
    assert "fingerprint" in str(error.value)
    with pytest.raises(ValueError, match="unit_rows: 300 there, 200 here"):
        materialize(rows, partial, workers=1, unit_rows=200)
    done = materialize(other, partial, workers=1, unit_rows=300, overwrite=True)
    assert done.kept == ()


def test_a_corrupt_truncated_or_missing_shard_is_named(rows: EpochRows, tmp_path: Path) -> None:
    out = tmp_path / "out"
    materialize(rows, str(out), workers=1, unit_rows=700)
    shard = out / "part-00001.parquet"
    good = shard.read_bytes()
    flipped = bytearray(good)
    flipped[100] ^= 0x01
    shard.write_bytes(bytes(flipped))
    with pytest.raises(CorruptShardError, match=r"part-00001\.parquet does not match its checksum"):
        open_materialized(str(out))
    shard.write_bytes(good[:-10])
    with pytest.raises(CorruptShardError, match=r"part-00001\.parquet is \d+ bytes, but the"):
        open_materialized(str(out), verify="size")
    shard.unlink()
    with pytest.raises(ShardNotFoundError, match=r"part-00001\.parquet is missing"):
        open_materialized(str(out))
    shard.write_bytes(good)
    assert read_back(str(out)) == read_back_rows(rows)
    (out / "part-00007.parquet").write_bytes(good)
    with pytest.raises(CorruptShardError, match=r"does not list: part-00007\.parquet"):
        open_materialized(str(out))


def test_another_pipelines_output_and_the_cache_lookup(
    rows: EpochRows, paths: list[str], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    fingerprint = rows.fingerprint()
    assert find_materialized(cache, fingerprint) is None
    path = materialized_path(cache, fingerprint)
    materialize(rows, path, workers=1)
    assert find_materialized(cache, fingerprint) == path
    assert read_back(path, fingerprint) == read_back_rows(rows)
    # A changed tokenizer, transform, order or source data misses the cache.
    changed = [
        tokenized(paths, tiny_tokenizer(vocab_size=300), shuffle=True, seed=7, window_size=300),
        tokenized(paths, shuffle=True, seed=8, window_size=300),
        EpochRows(
            ParquetShardedSource(paths, columns=["id", "text"]),
            [FilterFunction(drop_multiples_of_three), TokenizeTransform(tiny_tokenizer())],
            shuffle=True,
            seed=7,
            window_size=300,
        ),
        tokenized(paths[:2], shuffle=True, seed=7, window_size=300),
    ]
    for other in changed:
        assert materialized_path(cache, other.fingerprint()) != path
        assert find_materialized(cache, other.fingerprint()) is None
    with pytest.raises(ValueError, match="another pipeline: tokenizers") as error:
        open_materialized(path, changed[0].fingerprint())
    assert "transforms" in str(error.value)


def test_filtered_rows_leave_their_positions_and_empty_units(
    paths: list[str], tmp_path: Path
) -> None:
    rows = EpochRows(
        ParquetShardedSource(paths, columns=["id", "text"]), FilterFunction(keep_from_thousand)
    )
    out = str(tmp_path / "out")
    done = materialize(rows, out, workers=1, unit_rows=500)
    assert [s.rows for s in done.manifest.shards] == [0, 0, 500, 500, 100]
    assert [r["id"] for r in read_back(out)] == list(range(1000, 2100))
    nothing = EpochRows(
        HeadSource(ParquetShardedSource(paths), 900), FilterFunction(keep_from_thousand)
    )
    with pytest.raises(ValueError, match="pass schema="):
        materialize(nothing, str(tmp_path / "nothing"), workers=1)
    schema = pa.schema(
        [("id", pa.int64()), ("input_ids", pa.list_(pa.int32())), ("text", pa.string())]
    )
    done = materialize(nothing, str(tmp_path / "nothing"), workers=1, schema=schema)
    assert done.manifest.rows == 0 and read_back(str(tmp_path / "nothing")) == []


def test_a_unit_that_cannot_take_the_schema_is_named(paths: list[str], tmp_path: Path) -> None:
    rows = EpochRows(ParquetShardedSource(paths, columns=["id"]), NULL_LABEL_FIRST)
    with pytest.raises(SchemaMismatchError, match=r"unit 2 \(positions 1400\.\.2099\)") as error:
        materialize(rows, str(tmp_path / "out"), workers=1, unit_rows=700)
    assert "pass schema=" in str(error.value)
    assert not (tmp_path / "out" / "manifest.json").exists()
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    with pytest.raises(ValueError, match=re.escape("schema: {id: int64, label: null} there")):
        materialize(rows, str(tmp_path / "out"), workers=1, unit_rows=700, schema=schema)
    materialize(
        rows, str(tmp_path / "out"), workers=1, unit_rows=700, schema=schema, overwrite=True
    )
    back = read_back(str(tmp_path / "out"))
    assert back[0] == {"id": 0, "label": None} and back[-1] == {"id": 2099, "label": "l2099"}


def test_shards_aim_at_max_shard_size(rows: EpochRows, tmp_path: Path) -> None:
    done = materialize(
        rows, str(tmp_path / "out"), workers=1, max_shard_size="8KB", row_group_rows=64
    )
    manifest = done.manifest
    assert manifest.unit_rows % 64 == 0 and manifest.max_shard_size == 8000
    assert len(manifest.shards) > 3
    assert all(4000 < s.bytes < 12000 for s in manifest.shards[:-1])


_READ_ONLY_RUN = """
import sys
from easydata_grain import InMemorySource
from easydata_grain.materialize import EpochRows, materialize
try:
    materialize(EpochRows(InMemorySource.from_rows([{"a": 1}, {"a": 2}])), sys.argv[1], workers=1)
except Exception as error:
    print(type(error).__name__, error)
"""


def test_a_read_only_output_is_a_clear_error(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="read-only-"))
    try:
        base.chmod(0o755)
        out = base / "out"
        out.mkdir()
        out.chmod(0o555)
        as_nobody = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None  # root writes anyway
        result = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_RUN, str(out)],
            cwd=base,
            env={**os.environ, "HOME": str(base)},
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=as_nobody,
        )
        assert result.stdout.startswith("AccessDeniedError"), result.stdout + result.stderr
        assert str(out) in result.stdout and "can be written" in result.stdout
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


class _Stream:
    """A source that can only be read in order (no row counts)."""

    shard_names = ("only",)

    def open_shard(self, shard: str) -> Any:
        return iter([{"a": 1}])

    def open_shard_at_row(self, shard: str, row: int) -> Any:
        return iter([{"a": 1}][row:])


def test_bad_arguments_are_errors(rows: EpochRows, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="compression: expected one of"):
        materialize(rows, out, compression="zip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers: must be >= 1"):
        materialize(rows, out, workers=0)
    with pytest.raises(ValueError, match="max_shard_size: expected bytes or a size"):
        materialize(rows, out, max_shard_size="lots")
    with pytest.raises(TypeError, match="overwrite: expected bool"):
        materialize(rows, out, overwrite="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rows must be MaterializableRows"):
        materialize([{"a": 1}], out)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EpochRows needs an indexed source"):
        EpochRows(_Stream())
    with pytest.raises(ValueError, match="no rows to materialize"):
        materialize(EpochRows(InMemorySource(pa.table({"a": pa.array([], pa.int64())}))), out)
    assert not Path(out).exists()
    assert parse_size("500MB") == 500 * 10**6 and parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234 and parse_size("1.5 kb") == 1500


def test_a_manifest_that_is_not_ours_is_refused(rows: EpochRows, tmp_path: Path) -> None:
    out = tmp_path / "out"
    materialize(rows, str(out), workers=1)
    manifest = out / "manifest.json"
    document = json.loads(manifest.read_text())
    assert Manifest.from_json(manifest.read_bytes(), "m") == read_manifest(str(out))
    for broken, message in [
        (b"{not json", "is damaged: it is not JSON"),
        (json.dumps({**document, "format": "other"}).encode(), "not an easydata-grain manifest"),
        (json.dumps({**document, "writer_version": 99}).encode(), "layout version 99"),
        (json.dumps({**document, "shards": [{"name": 1}]}).encode(), "shard record"),
        (json.dumps({**document, "positions": "many"}).encode(), "field 'positions'"),
    ]:
        manifest.write_bytes(broken)
        with pytest.raises((CorruptShardError, UnsupportedFormatError), match=message):
            open_materialized(str(out))
    manifest.unlink()
    with pytest.raises(ShardNotFoundError, match=r"has no manifest\.json"):
        open_materialized(str(out))


def test_shard_names_sort_in_unit_order(rows: EpochRows, tmp_path: Path) -> None:
    header = materialize(rows, str(tmp_path / "out"), workers=1).manifest.header()
    wide = dataclasses.replace(header, positions=100_001, unit_rows=1)
    assert [wide.shard_name(u) for u in (0, 99_999, 100_000)] == [
        "part-000000.parquet",
        "part-099999.parquet",
        "part-100000.parquet",
    ]
    narrow = dataclasses.replace(header, positions=100_000, unit_rows=1)
    assert narrow.shard_name(99_999) == "part-99999.parquet"


def test_epoch_rows_of_a_mixture_points_to_mixture_rows() -> None:
    from easydata_grain import MixedShardedSource

    parts = {name: InMemorySource.from_rows([{"x": 1}] * 3) for name in ("a", "b")}
    with pytest.raises(TypeError, match="a mixture's rows are MixtureRows"):
        EpochRows(MixedShardedSource(parts))
    with pytest.raises(TypeError, match="a mixture's rows are MixtureRows"):
        EpochRows(MixedShardedSource(parts).map(lambda row: row))
