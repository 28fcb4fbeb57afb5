"""How a pipeline dataset (and ``AsyncDataLoader``, and the commands) tells the format of its
files: extensions in any case, else the content (Parquet magic; JSON Lines or a JSON array
from the first byte); every option reaching the source whatever the spelling of
``data_files``; ``columns`` naming source columns for every format."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, Pipeline
from easydata_grain.commands.run import bench_config
from easydata_grain.commands.validate import validate_url
from easydata_grain.io.errors import CorruptShardError, UnsupportedFormatError
from easydata_grain.sources.metadata_sharing import default_sharing, set_default_sharing
from easydata_grain.sources.resolve import file_source, format_of, json_holds_lines
from ops.emulators import StoreEndpoint

ROWS = [{"id": i, "text": f"row {i}", "n": i * 0.5} for i in range(6)]


def _write(path: Path, rows: list[dict[str, Any]], layout: str) -> None:
    """``rows`` at ``path`` as ``parquet``, ``lines`` or ``array`` (gzip when it ends .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    if layout == "lines":
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = "\ufeff  [" + ",\n".join(json.dumps(r) for r in rows) + "]"
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.lower().endswith(".gz") else data)


def _ids(loader: Any) -> list[int]:
    return sorted(int(i) for batch in loader for i in batch["id"])


def _pipeline(data_files: str, **dataset: Any) -> Any:
    config = {
        "datasets": [{"data_files": data_files, **dataset}],
        "load": {"batch_size": 2, "shuffle_buffer_size": 0},
    }
    return Pipeline.from_config(config).build()


def test_extensions_count_in_any_case() -> None:
    assert format_of("a/B.PARQUET") == "parquet"
    assert format_of("a/b.JSONL.GZ") == "jsonl"
    assert format_of("a/b.Json") == "json"
    assert format_of("a/b.gz") is None and format_of("a/*") is None


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    layout=st.sampled_from(["parquet", "lines", "array"]),
    name=st.sampled_from(["part-0", "part-0.gz", "c4-train.00000-of-01024.json.gz", "UP.DATA"]),
    spelling=st.sampled_from(["dir", "dir/*", "file"]),
)
def test_any_name_reads_the_same_rows_by_content(
    tmp_path: Path, layout: str, name: str, spelling: str
) -> None:
    if layout == "parquet" and name.endswith(".gz"):
        name = "part-0.PQ"  # a Parquet file is neither gzipped whole nor named .json
    root = tmp_path / f"{layout}-{name}-{spelling.replace('/*', '-glob')}"
    _write(root / name, ROWS, layout)
    given_as = {"dir": str(root), "dir/*": f"{root}/*", "file": str(root / name)}[spelling]
    ids = list(range(len(ROWS)))
    assert _ids(AsyncDataLoader(given_as, batch_size=2)) == ids
    assert _ids(_pipeline(given_as, columns=["id"])) == ids


def test_json_lines_or_array_comes_from_the_content(tmp_path: Path) -> None:
    _write(tmp_path / "lines.json.gz", ROWS, "lines")
    _write(tmp_path / "array.jsonl", ROWS, "array")
    _write(tmp_path / "array.json", ROWS, "array")
    assert json_holds_lines(str(tmp_path / "lines.json.gz"))
    assert not json_holds_lines(str(tmp_path / "array.json"))
    ids = list(range(len(ROWS)))
    # the c4 layout: JSON Lines in .json.gz files, typed or not
    assert _ids(_pipeline(str(tmp_path / "lines.*.gz"))) == ids
    assert _ids(_pipeline(str(tmp_path / "lines.json.gz"), type="json")) == ids
    assert _ids(_pipeline(str(tmp_path / "array.json"), type="json")) == ids
    # type: json reads .jsonl files as what they hold (an explicit jsonl means lines)
    _write(tmp_path / "lines.jsonl", ROWS, "lines")
    assert _ids(_pipeline(str(tmp_path / "lines.jsonl"), type="json")) == ids


def test_unknown_content_and_mixed_formats_are_errors(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.txt").write_text("hello\n")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt.*set the dataset's type"):
        _pipeline(f"{tmp_path}/odd/*")
    _write(tmp_path / "mixed" / "a.parquet", ROWS, "parquet")
    _write(tmp_path / "mixed" / "b.jsonl", ROWS, "lines")
    with pytest.raises(UnsupportedFormatError, match="several formats") as raised:
        _pipeline(f"{tmp_path}/mixed/*")
    assert "a.parquet' (parquet)" in str(raised.value) and "b.jsonl' (json)" in str(raised.value)


def test_validate_lists_bad_lines_of_an_extensionless_glob(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    good = "".join(json.dumps(r) + "\n" for r in ROWS)
    (tmp_path / "j" / "part-0.gz").write_bytes(gzip.compress((good + "{oops\n").encode()))
    report = validate_url(f"{tmp_path}/j/*.gz")
    assert report.shards == 1
    assert [p.kind for p in report.problems] == ["row"]
    assert "part-0.gz" in report.problems[0].shard


def test_columns_name_source_columns_for_every_format(tmp_path: Path) -> None:
    _write(tmp_path / "d.jsonl", ROWS, "lines")
    _write(tmp_path / "d.parquet", ROWS, "parquet")
    for path in ("d.jsonl", "d.parquet"):
        batch = next(iter(_pipeline(str(tmp_path / path), columns=["id"])))
        assert sorted(batch) == ["id"]  # type not set: projected all the same
        renamed = _pipeline(
            str(tmp_path / path), columns=["id", "text"], format_fields={"text": "body"}
        )
        assert sorted(next(iter(renamed))) == ["body", "id"]  # projected, then renamed


def test_streaming_false_projects_before_holding_rows(tmp_path: Path) -> None:
    rows = [{"id": i, **({"extra": [i]} if i % 2 else {"other": "x"})} for i in range(6)]
    _write(tmp_path / "uneven.jsonl", rows, "lines")
    config = {
        "datasets": [{"data_files": str(tmp_path / "uneven.jsonl"), "columns": ["id"]}],
        "streaming": False,
        "load": {"batch_size": 2, "shuffle_buffer_size": 0},
    }
    loader = Pipeline.from_config(config).build()
    assert type(loader.source).__name__ == "InMemorySource"
    assert _ids(loader) == list(range(6))


def test_every_option_reaches_a_directory_on_a_store(
    s3_store: StoreEndpoint, tmp_path: Path
) -> None:
    bucket = s3_store.new_bucket("formats")
    _write(tmp_path / "0.parquet", ROWS, "parquet")
    _write(tmp_path / "1", ROWS, "lines")
    s3_store.upload(str(tmp_path / "0.parquet"), f"{bucket}/data/0.parquet")
    s3_store.upload(str(tmp_path / "1"), f"{bucket}/json/1")
    options = s3_store.storage_options()
    for data_files in (f"{bucket}/data/", f"{bucket}/data/*", f"{bucket}/json/"):
        config = {
            "datasets": [{"data_files": data_files, "columns": ["id"]}],
            "source": {
                "dask_storage_options": options,
                "cloud_max_retries": 7,
                "metadata_cache_dir": str(tmp_path / "meta"),
            },
            "load": {"batch_size": 2, "shuffle_buffer_size": 0},
        }
        pipeline = Pipeline.from_config(config)
        source = pipeline.sources()["dataset_0"]
        inner = getattr(source, "source", source)  # JSON: the projection over the file source
        assert inner.retry.max_retries == 7, data_files
        assert inner.storage_options == options, data_files
        cache_dir = getattr(inner, "index_cache_dir", None) or inner.metadata_cache.directory
        assert os.fspath(cache_dir) == str(tmp_path / "meta"), data_files
        batch = next(iter(pipeline.build()))
        assert sorted(batch) == ["id"], data_files


def test_bench_compares_a_json_dataset_without_type(tmp_path: Path) -> None:
    _write(tmp_path / "d.jsonl", ROWS, "lines")
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {"datasets": [{"data_files": str(tmp_path / "d.jsonl")}], "load": {"batch_size": 2}}
        )
    )
    assert "no Parquet dataset" in bench_config(str(config), steps=2)


def test_file_source_takes_one_kind(tmp_path: Path) -> None:
    _write(tmp_path / "d.parquet", ROWS, "parquet")
    with pytest.raises(ValueError, match="kind must be"):
        file_source(str(tmp_path / "d.parquet"), "csv")


def test_a_jsonl_type_over_an_array_names_the_config_field(tmp_path: Path) -> None:
    _write(tmp_path / "array.json", ROWS, "array")
    with pytest.raises(CorruptShardError, match=r"JSON array.*type: json"):
        list(_pipeline(str(tmp_path / "array.json"), type="jsonl"))


class _Recording:
    """A ``MetadataSharing`` that computes here and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def share(self, compute: Any, *, what: str, key: str) -> Any:
        self.asked.append(what)
        return compute()


def test_the_listing_that_decides_a_format_is_shared_by_the_slice(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "part-0", ROWS, "lines")
    recording, previous = _Recording(), default_sharing()
    set_default_sharing(recording)
    try:
        source = file_source(f"{tmp_path}/d/*")
    finally:
        set_default_sharing(previous)
    assert recording.asked[0].startswith("the format of")  # listed and sniffed on host 0
    assert source.row_counts() == [len(ROWS)]
