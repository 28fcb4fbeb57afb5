"""JsonShardedSource on input that is not what it claims: invalid UTF-8, files of another
format, and index cache entries that do not belong to the file."""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import CorruptShardError, JsonShardedSource, MalformedRowError
from easydata_grain.sources.line_index import scan_lines

ROWS = [{"i": i, "text": "x" * i} for i in range(5)]
INVALID_UTF8 = [
    b"\xed\xa0\x80",  # the lone surrogate U+D800, encoded
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xff",
    b"\xc3(",
    b"\xc0\xaf",  # an overlong "/"
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # cut short
]


class SmallBlocks(JsonShardedSource):
    """Tiny reads and close checkpoints: rows and characters straddle blocks."""

    block_size = 5
    checkpoint_every = 3


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def cache_entry(cache: Path) -> Path:
    """The one index cache entry under ``cache``."""
    (entry,) = (cache / "line_index").iterdir()
    return entry


# -- (a) invalid UTF-8 ------------------------------------------------------------------------


def test_an_encoded_surrogate_in_a_line_is_a_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"i": 0}\n\n{"i": 1, "s": "\xed\xa0\x80"}\n{"i": 2}\n')
    source = JsonShardedSource(str(path), index_cache_dir=tmp_path)
    with pytest.raises(
        MalformedRowError, match=r"bad\.jsonl.* line 3 \(row 1\) is not valid UTF-8"
    ) as info:
        list(source.open_shard(str(path)))
    assert info.value.path == str(path) and info.value.row == 1
    lenient = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    assert [r["i"] for r in lenient.open_shard(str(path))] == [0, 2]
    assert lenient.stats.skipped_rows == 1


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')),
    bad=st.sampled_from(INVALID_UTF8),
    small=st.booleans(),
)
def test_invalid_utf8_is_a_malformed_row_in_both_readers(
    prefix: str, bad: bytes, small: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        check_invalid_utf8(Path(directory), prefix.encode() + bad, small)


def check_invalid_utf8(tmp_path: Path, bad: bytes, small: bool) -> None:
    """Both readers refuse a string value holding ``bad`` as the row or element it is in."""
    kind = SmallBlocks if small else JsonShardedSource
    value = b'{"s": "' + bad + b'"}'
    lines = tmp_path / "bad.jsonl"
    lines.write_bytes(b'{"s": "a"}\n' + value + b'\n{"s": "b"}\n')
    with pytest.raises(MalformedRowError, match=r"line 2 \(row 1\) is not valid UTF-8") as info:
        list(kind(str(lines), index_cache_dir=tmp_path / "l").open_shard(str(lines)))
    assert info.value.path == str(lines) and info.value.row == 1
    lenient = kind(str(lines), on_bad_row="skip", index_cache_dir=tmp_path / "l")
    assert [r["s"] for r in lenient.open_shard(str(lines))] == ["a", "b"]

    array = tmp_path / "bad.json"
    array.write_bytes(b'[{"s": "a"}, {"s": "b"},\n ' + value + b', {"s": "c"}]')
    source = kind(str(array), jsonl=False, index_cache_dir=tmp_path / "a")
    with pytest.raises(MalformedRowError, match=r"element 2 is not valid UTF-8") as info:
        source.num_rows(str(array))
    assert info.value.path == str(array) and info.value.row == 2


def test_a_byte_order_mark_still_opens_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(ROWS))
    source = JsonShardedSource(str(path), index_cache_dir=tmp_path)
    assert [r["i"] for r in source.open_shard(str(path))] == [0, 1, 2, 3, 4]


# -- (b) files of another format --------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(ROWS, indent=2).encode(),
        json.dumps(ROWS).encode(),
        b"\xef\xbb\xbf \n\n" + json.dumps(ROWS, indent=1).encode(),
    ],
    ids=["pretty", "one-line", "bom-and-blank-lines"],
)
@pytest.mark.parametrize("on_bad_row", ["raise", "skip"])
def test_a_json_array_read_as_json_lines_is_refused_when_indexed(
    tmp_path: Path, content: bytes, on_bad_row: Any
) -> None:
    path = tmp_path / "rows.json"
    path.write_bytes(content)
    source = SmallBlocks(str(path), on_bad_row=on_bad_row, index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=r"rows\.json.* is a JSON array") as info:
        source.row_counts()
    assert info.value.path == str(path)
    assert "jsonl=False" in str(info.value) and "on_bad_row" not in str(info.value)
    array = JsonShardedSource(str(path), jsonl=False, index_cache_dir=tmp_path)
    assert [r["i"] for r in array.open_shard(str(path))] == [0, 1, 2, 3, 4]


def test_a_json_array_indexed_before_the_check_is_refused_at_its_first_row(
    tmp_path: Path,
) -> None:
    class Unchecked(JsonShardedSource):
        """Indexes lines without looking at the format, as before the check."""

        def _scan(self, path: str, size: int) -> Any:
            with open(path, "rb") as stream:
                return scan_lines([stream.read()])

    path = tmp_path / "rows.json"
    path.write_bytes(json.dumps(ROWS, indent=2).encode())
    assert Unchecked(str(path), index_cache_dir=tmp_path).num_rows(str(path)) > 1
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=r"rows\.json.* is a JSON array.*jsonl=False"):
        list(source.open_shard(str(path)))


@pytest.mark.parametrize("name", ["data.json", "data.jsonl", "data.parquet"])
@pytest.mark.parametrize("is_jsonl", [True, False])
def test_a_parquet_file_is_refused_naming_parquet_sharded_source(
    tmp_path: Path, name: str, is_jsonl: bool
) -> None:
    path = tmp_path / name
    pq.write_table(pa.table({"id": np.arange(1000), "text": ["a\nb"] * 1000}), path)
    source = JsonShardedSource(str(path), jsonl=is_jsonl, index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=r"is a Parquet file.*ParquetShardedSource") as info:
        source.row_counts()
    assert info.value.path == str(path) and name in str(info.value)


@pytest.mark.parametrize(
    "content",
    [gzip.compress(jsonl(ROWS)), jsonl(ROWS).decode().encode("utf-16")],
    ids=["gzip-without-extension", "utf-16"],
)
def test_binary_data_is_refused_not_skipped_line_by_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=r"data\.jsonl.* is not JSON Lines text") as info:
        source.row_counts()
    assert info.value.path == str(path) and "on_bad_row" not in str(info.value)


# -- (c) the index cache ----------------------------------------------------------------------


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offsets=st.lists(st.integers(0, 400), min_size=1, unique=True).map(sorted))
def test_a_cached_line_index_that_does_not_end_at_the_file_size_is_rebuilt(
    offsets: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        check_rebuilt(Path(directory), offsets, caplog)


def check_rebuilt(tmp_path: Path, offsets: list[int], caplog: pytest.LogCaptureFixture) -> None:
    """A line index made of ``offsets`` (moved off the file's end) is logged and rebuilt."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(ROWS))
    cache = tmp_path / "cache"
    assert JsonShardedSource(str(path), index_cache_dir=cache).num_rows(str(path)) == 5
    if offsets[-1] == path.stat().st_size:
        offsets[-1] += 1
    np.savez(
        cache_entry(cache), bounds=np.array(offsets, np.int64), blank_rows=np.zeros(0, np.int64)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        source = JsonShardedSource(str(path), index_cache_dir=cache)
        assert source.num_rows(str(path)) == 5
    assert "Ignoring the index cache" in caplog.text
    assert [r["i"] for r in source.open_shard_at_row(str(path), 3)] == [3, 4]
    stored = np.load(cache_entry(cache))["bounds"]
    assert stored[-1] == path.stat().st_size


FOREIGN_ENTRIES: list[tuple[str, dict[str, Any]]] = [
    ("a.jsonl", {"bounds": np.array([0, 9, 18], np.int64), "blank_rows": np.zeros(0, np.int64)}),
    ("a.jsonl", {"bounds": np.array([0, 9, 18], np.int64)}),
    ("a.jsonl", {"bounds": np.zeros((2, 3), np.int64), "blank_rows": np.zeros(0, np.int64)}),
    ("a.jsonl", {"bounds": np.array([0.0, 9.5]), "blank_rows": np.zeros(0, np.int64)}),
    ("a.jsonl.gz", {"bounds": np.array([9, 0, 60], np.int64), "blank_rows": np.zeros(0, np.int64)}),
    (
        "a.json",
        {
            "checkpoints": np.array([1, 10**6], np.int64),
            "num_rows": np.int64(2000),
            "every": np.int64(1024),
        },
    ),
    ("a.json", {"checkpoints": np.array([1], np.int64), "num_rows": np.int64(2)}),
]


@pytest.mark.parametrize(("name", "arrays"), FOREIGN_ENTRIES)
def test_a_foreign_or_tampered_cache_entry_is_not_trusted(
    tmp_path: Path, name: str, arrays: dict[str, Any]
) -> None:
    path = tmp_path / name
    content = json.dumps(ROWS).encode() if name == "a.json" else jsonl(ROWS)
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    cache = tmp_path / "cache"
    options = {"jsonl": name != "a.json", "index_cache_dir": cache}
    assert JsonShardedSource(str(path), **options).num_rows(str(path)) == 5
    np.savez(cache_entry(cache), **arrays)
    source = JsonShardedSource(str(path), **options)
    assert source.num_rows(str(path)) == 5
    assert [r["i"] for r in source.open_shard_at_row(str(path), 2)] == [2, 3, 4]
