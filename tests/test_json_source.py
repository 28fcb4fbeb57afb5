"""JsonShardedSource on local files: seeks, the index cache, bad rows and broken files."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import easydata_grain.sources.json as json_module
from easydata_grain import (
    AsyncDataLoader,
    CorruptShardError,
    JsonShardedSource,
    MalformedRowError,
    RetryPolicy,
    RowOutOfRangeError,
)
from easydata_grain.io.remote_file import RemoteFile
from easydata_grain.sources.json import SkippedRow
from easydata_grain.sources.protocol import IndexedSource

COMPRESSORS = {"": bytes, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
FAST_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.0)


class SmallBlocks(JsonShardedSource):
    """Tiny reads and close checkpoints, so that rows straddle blocks and seeks use checkpoints."""

    block_size = 5
    checkpoint_every = 3


def write(path: Path, data: bytes | str) -> str:
    """Write ``data`` (compressed by the path's extension) and return the path."""
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(COMPRESSORS[path.suffix if path.suffix in COMPRESSORS else ""](raw))
    return str(path)


def jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def plain(value: Any) -> Any:
    """A row value with numpy arrays turned into (dtype, list) for comparison."""
    if isinstance(value, np.ndarray):
        return (value.dtype.name, value.tolist())
    return value


def expected(value: Any) -> Any:
    """What the source makes of a top-level value that ``json.loads`` gives."""
    if type(value) is not list or not value:
        return value
    kinds = {type(item) for item in value}
    if kinds == {int} and all(-(2**63) <= item < 2**63 for item in value):
        return ("int64", value)
    if kinds <= {int, float} and kinds != {int}:
        return ("float64", [float(item) for item in value])
    return value


def rows_of(source: JsonShardedSource, row: int = 0, shard: int = 0) -> list[dict[str, Any]]:
    name = source.shard_names[shard]
    return [{k: plain(v) for k, v in r.items()} for r in source.open_shard_at_row(name, row)]


# -- the property: a seek equals reading from the start ----------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
scalars = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | st.booleans()
    | st.none()
)
values = (
    scalars
    | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6)
    | st.lists(st.integers(-5, 5) | st.floats(-1e9, 1e9), max_size=6)
    | st.lists(texts, max_size=3)
    | st.dictionaries(texts, scalars | st.lists(st.integers(0, 9), max_size=3), max_size=3)
)
objects = st.dictionaries(texts, values, max_size=4)


@st.composite
def files(draw: st.DrawFn) -> tuple[bool, bytes, list[Any]]:
    """(jsonl?, the file's bytes, its rows): JSON Lines with blank lines, or an indented array."""
    rows = draw(st.lists(objects, min_size=1, max_size=12))
    ascii_only = draw(st.booleans())
    if draw(st.booleans()):
        indent = draw(st.sampled_from([None, 1]))
        return False, json.dumps(rows, ensure_ascii=ascii_only, indent=indent).encode(), rows
    blanks = st.sampled_from(["", "\n", "\n\n", "  \n", "\r\n", " \t\n"])
    parts = [draw(blanks)]
    for row in rows:
        indent = draw(st.sampled_from(["", " ", "\t "]))
        end = draw(st.sampled_from(["\n", "\r\n", " \n"]))
        parts.append(indent + json.dumps(row, ensure_ascii=ascii_only) + end)
        parts.append(draw(blanks))
    text = "".join(parts)
    if draw(st.booleans()):
        text = text.rstrip("\n")
    return True, text.encode(), rows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    file=files(),
    suffix=st.sampled_from(list(COMPRESSORS)),
    small=st.booleans(),
    data=st.data(),
)
def test_seek_equals_reading_from_the_start(
    file: tuple[bool, bytes, list[Any]], suffix: str, small: bool, data: st.DataObject
) -> None:
    is_jsonl, content, rows = file
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / f"data.{'jsonl' if is_jsonl else 'json'}{suffix}", content)
        kind = SmallBlocks if small else JsonShardedSource
        source = kind(path, jsonl=is_jsonl, index_cache_dir=tmp)
        assert source.num_rows(path) == len(rows)
        everything = rows_of(source)
        assert everything == [{k: expected(v) for k, v in row.items()} for row in rows]
        if is_jsonl:
            lines = content.split(b"\n")
            numbers = [i + 1 for i, line in enumerate(lines) if line.strip(b" \t\r")]
            index = source.shard_meta(0).index
            assert [index.line_number(r) for r in range(len(rows))] == numbers
        for start in data.draw(st.lists(st.integers(0, len(rows)), min_size=1, max_size=3)):
            assert rows_of(source, start) == everything[start:]


# -- the index cache --------------------------------------------------------------------------


def counting_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every line scan (the index build) in the returned list."""
    calls: list[str] = []
    original = json_module.scan_lines

    def scan(blocks: Any) -> Any:
        calls.append("scan")
        return original(blocks)

    monkeypatch.setattr(json_module, "scan_lines", scan)
    return calls


def test_the_index_is_cached_and_rebuilt_for_a_rewritten_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = counting_scans(monkeypatch)
    path = write(tmp_path / "a.jsonl", jsonl([{"i": i} for i in range(5)]))
    cache = tmp_path / "cache"
    assert JsonShardedSource(path, index_cache_dir=cache).num_rows(path) == 5
    entries = list((cache / "line_index").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"
    assert JsonShardedSource(path, index_cache_dir=cache).num_rows(path) == 5
    assert len(scans) == 1

    write(tmp_path / "a.jsonl", jsonl([{"i": i} for i in range(7)]))
    source = JsonShardedSource(path, index_cache_dir=cache)
    assert source.num_rows(path) == 7
    assert [r["i"] for r in source.open_shard_at_row(path, 5)] == [5, 6]
    assert len(scans) == 2
    assert len(list((cache / "line_index").iterdir())) == 2


def test_the_default_cache_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASYDATA_GRAIN_CACHE", str(tmp_path / "env-cache"))
    path = write(tmp_path / "a.jsonl", jsonl([{"i": 1}]))
    assert JsonShardedSource(path).num_rows(path) == 1
    assert len(list((tmp_path / "env-cache" / "line_index").iterdir())) == 1


def test_an_unreadable_cache_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = counting_scans(monkeypatch)
    path = write(tmp_path / "a.jsonl", jsonl([{"i": i} for i in range(3)]))
    assert JsonShardedSource(path, index_cache_dir=tmp_path).num_rows(path) == 3
    (entry,) = (tmp_path / "line_index").iterdir()
    entry.write_bytes(b"not an npz file")
    assert JsonShardedSource(path, index_cache_dir=tmp_path).num_rows(path) == 3
    assert len(scans) == 2


def test_a_source_pickles_with_its_index(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", jsonl([{"i": i} for i in range(4)]))
    source = JsonShardedSource(path, index_cache_dir=tmp_path)
    assert source.num_rows(path) == 4
    copy = pickle.loads(pickle.dumps(source))
    assert [r["i"] for r in copy.open_shard_at_row(path, 2)] == [2, 3]


# -- bad rows ---------------------------------------------------------------------------------

BAD_LINES = '{"i": 0}\n\n{"i": 1,,}\n{"i": 2}\n[1, 2]\n{"i": 5}\n'
"""Rows 0..4 on lines 1, 3, 4, 5, 6: row 1 is not JSON, row 3 not an object."""


def test_a_malformed_line_names_file_line_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", BAD_LINES)
    source = JsonShardedSource(path, index_cache_dir=tmp_path)
    with pytest.raises(
        MalformedRowError, match=r"bad\.jsonl.* line 3 \(row 1\).*not valid JSON"
    ) as info:
        list(source.open_shard(path))
    assert info.value.path == path and info.value.row == 1
    assert 'i": 1,,' in str(info.value) and 'on_bad_row="skip"' in str(info.value)
    with pytest.raises(
        MalformedRowError, match=r"line 5 \(row 3\) is not a JSON object but an array"
    ):
        list(source.open_shard_at_row(path, 2))


def test_skipped_rows_keep_their_numbers_and_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", BAD_LINES)
    source = JsonShardedSource(path, on_bad_row="skip", index_cache_dir=tmp_path)
    assert source.num_rows(path) == 5
    assert [r["i"] for r in source.open_shard(path)] == [0, 2, 5]
    assert source.stats.skipped_rows == 2
    assert list(source.skipped) == [SkippedRow(path, 1, 3), SkippedRow(path, 3, 5)]
    for row, rest in [(1, [2, 5]), (2, [2, 5]), (3, [5]), (4, [5]), (5, [])]:
        assert [r["i"] for r in source.open_shard_at_row(path, row)] == rest


def test_invalid_utf8_is_a_malformed_row(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", b'{"i": 0}\n{"s": "\xff\xfe"}\n')
    with pytest.raises(MalformedRowError, match=r"line 2 \(row 1\)"):
        list(JsonShardedSource(path, index_cache_dir=tmp_path).open_shard(path))


class FlakyFile:
    """A file whose reads fail with a dropped connection at the given call numbers."""

    def __init__(self, raw: Any, calls: list[int], fail_at: set[int]):
        self._raw, self._calls, self._fail_at = raw, calls, fail_at

    def read(self, size: int = -1) -> bytes:
        self._calls.append(size)
        if len(self._calls) in self._fail_at:
            raise ConnectionResetError("connection reset by peer")
        return self._raw.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> FlakyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def flaky_source(path: str, tmp_path: Path, fail_at: set[int], **kwargs: Any) -> JsonShardedSource:
    calls: list[int] = []

    class Flaky(SmallBlocks):
        block_size = 16

        def _open(self, path: str, size: int) -> Any:
            return FlakyFile(super()._open(path, size), calls, fail_at)

    return Flaky(path, index_cache_dir=tmp_path, retry=FAST_RETRY, batch_size=2, **kwargs)


def test_skipping_stays_exact_across_a_transient_fault(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", BAD_LINES)
    clean = JsonShardedSource(path, on_bad_row="skip", index_cache_dir=tmp_path)
    assert clean.num_rows(path) == 5  # the flaky sources below find the index in the cache
    for fail_at in ({2}, {3}, {4}, {2, 4}):
        source = flaky_source(path, tmp_path, fail_at, on_bad_row="skip")
        assert list(source.open_shard(path)) == list(clean.open_shard(path))
        assert source.stats.retries == len(fail_at)
        assert source.stats.skipped_rows == 2


def test_a_transient_fault_while_indexing_is_retried(tmp_path: Path) -> None:
    rows = [{"i": i, "text": "x" * i} for i in range(20)]
    for name, content in [("a.jsonl", jsonl(rows)), ("a.json", json.dumps(rows))]:
        path = write(tmp_path / name, content)
        source = flaky_source(path, tmp_path / name, {2}, jsonl=name.endswith("l"))
        assert source.num_rows(path) == 20
        assert source.stats.retries == 1
        assert [r["i"] for r in source.open_shard_at_row(path, 7)] == list(range(7, 20))


def test_a_non_object_element_of_an_array_is_a_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", '[{"i": 0}, 7, {"i": 2}]')
    with pytest.raises(
        MalformedRowError, match=r"a\.json.* element 1 is not a JSON object but a number"
    ):
        list(JsonShardedSource(path, jsonl=False, index_cache_dir=tmp_path).open_shard(path))
    source = JsonShardedSource(path, jsonl=False, on_bad_row="skip", index_cache_dir=tmp_path)
    assert [r["i"] for r in source.open_shard(path)] == [0, 2]
    assert list(source.skipped) == [SkippedRow(path, 1, None)]


# -- broken files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", r"empty\.jsonl.* is empty \(0 bytes\)"),
        ("blank.jsonl", "\n  \n\r\n", r"blank\.jsonl.* holds no rows \(only blank lines\)"),
        ("blank.jsonl.gz", "\n\n", r"blank\.jsonl\.gz.* holds no rows"),
        ("empty.json", "", r"empty\.json.* is empty"),
        ("none.json", " [ ]\n", r"none\.json.* holds no rows \(an empty array\)"),
        ("object.json", '{"i": 1}', r"object\.json.* is not a JSON array: it starts with '\{"),
        ("space.json", "  \n", r"space\.json.* is not a JSON array"),
        (
            "cut.json",
            '[{"i": 1}, {"i": "ab',
            r"cut\.json.* ends inside the JSON array, at element 1",
        ),
        ("comma.json", '[{"i": 1},\n', r"comma\.json.* ends inside the JSON array, at element 1"),
        (
            "syntax.json",
            '[{"i": 1}, {"i": tru}, {"i": 3}]',
            r"syntax\.json.*invalid JSON in element 1",
        ),
        ("sep.json", '[{"i": 1} {"i": 2}]', r"sep\.json.*expected ',' or '\]' after element 0"),
        ("extra.json", '[{"i": 1}] [', r"extra\.json.*unexpected data after the end"),
    ],
)
def test_broken_files_raise_errors_naming_them(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    raw = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    source = JsonShardedSource(str(path), jsonl=".jsonl" in name, index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=message) as info:
        source.num_rows(str(path))
    assert info.value.path == str(path)


def test_a_truncated_compressed_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl([{"i": i} for i in range(1000)]).encode())[:-40])
    source = JsonShardedSource(str(path), index_cache_dir=tmp_path)
    with pytest.raises(CorruptShardError, match=r"cut\.jsonl\.gz.* is not a valid gzip file"):
        source.num_rows(str(path))


def test_compressed_remote_reads_are_buffered_into_blocks(tmp_path: Path) -> None:
    rows = [{"i": i, "hex": os.urandom(100).hex()} for i in range(2000)]
    path = write(tmp_path / "a.jsonl.gz", jsonl(rows))
    block = 1 << 16
    sizes: list[int] = []

    class Recording(RemoteFile):
        def read(self, size: int = -1) -> bytes:
            sizes.append(size)
            return super().read(size)

    class Remote(JsonShardedSource):
        """Reads as on an object store, where every read() of the file is one request."""

        block_size = block

        def _open(self, path: str, size: int) -> Any:
            return Recording(lambda: open(path, "rb"), size, policy=self.retry, stats=self.stats)

    source = Remote(path, index_cache_dir=tmp_path)
    assert [r["i"] for r in source.open_shard_at_row(path, 1500)] == list(range(1500, 2000))
    assert set(sizes) == {block}


@pytest.mark.skipif("zstd" in json_module.fsspec.compression.compr, reason="zstandard installed")
def test_zstd_files_need_zstandard(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl.zst", b"(not really zstd)")
    with pytest.raises(ImportError, match=r"a\.jsonl\.zst.*pip install zstandard"):
        JsonShardedSource(path, index_cache_dir=tmp_path)


def test_a_row_past_the_end_is_out_of_range(tmp_path: Path) -> None:
    for name, content in [
        ("a.jsonl", jsonl([{"i": 0}, {"i": 1}])),
        ("a.json", '[{"i": 0}, {"i": 1}]'),
    ]:
        path = write(tmp_path / name, content)
        source = JsonShardedSource(path, jsonl=name.endswith("l"), index_cache_dir=tmp_path)
        assert list(source.open_shard_at_row(path, 2)) == []
        with pytest.raises(RowOutOfRangeError, match=r"Row 3 is out of range"):
            source.open_shard_at_row(path, 3)


# -- paths and arguments ----------------------------------------------------------------------


def test_a_directory_lists_json_files_of_every_compression(tmp_path: Path) -> None:
    for name in ["a.jsonl", "b.ndjson.gz", "c.json.bz2", "d.jsonl.xz"]:
        write(tmp_path / name, jsonl([{"name": name}]))
    write(tmp_path / "notes.txt", "not data")
    source = JsonShardedSource(str(tmp_path), index_cache_dir=tmp_path / "cache")
    assert [os.path.basename(s) for s in source.shard_names] == [
        "a.jsonl",
        "b.ndjson.gz",
        "c.json.bz2",
        "d.jsonl.xz",
    ]
    assert len(source) == 4
    assert [next(iter(source.open_shard(s)))["name"] for s in source.shard_names] == [
        os.path.basename(s) for s in source.shard_names
    ]
    assert source.schema is None


def test_numeric_lists_can_stay_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", jsonl([{"ids": [1, 2], "xs": [0.5, 1], "e": []}]))
    (row,) = JsonShardedSource(path, index_cache_dir=tmp_path).open_shard(path)
    assert row["ids"].dtype == np.int64 and row["xs"].dtype == np.float64 and row["e"] == []
    (row,) = JsonShardedSource(path, index_cache_dir=tmp_path, numpy_lists=False).open_shard(path)
    assert row == {"ids": [1, 2], "xs": [0.5, 1], "e": []}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"jsonl": "yes"}, TypeError),
        ({"on_bad_row": "ignore"}, ValueError),
        ({"batch_size": 0}, ValueError),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, Any], error: type) -> None:
    path = write(tmp_path / "a.jsonl", jsonl([{"i": 0}]))
    with pytest.raises(error):
        JsonShardedSource(path, index_cache_dir=tmp_path, **kwargs)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=3), st.data())
def test_fluent_map_and_filter_keep_addresses_and_seek(
    tmp_path: Path, sizes: list[int], data: st.DataObject
) -> None:
    """``source.map(...)`` (TransformableSource) is an indexed source of the mapped rows and
    ``.filter(...)`` keeps every row's address: a seek to any row of any shard equals the mapped,
    filtered suffix of that shard, and the loader reads the mapped rows once each."""
    paths = []
    for shard, size in enumerate(sizes):
        rows = [{"i": 100 * shard + k, "ids": list(range(k % 4 + 1))} for k in range(size)]
        paths.append(write(tmp_path / f"fluent-{len(sizes)}-{shard}.jsonl", jsonl(rows)))
    source = JsonShardedSource(paths, index_cache_dir=tmp_path / "cache", batch_size=4)
    mapped = source.map(lambda row: {**row, "n": len(row["ids"])})
    kept = mapped.filter(lambda row: row["i"] % 2 == 0)
    assert isinstance(mapped, IndexedSource) and mapped.row_counts() == sizes
    shard = data.draw(st.integers(0, len(sizes) - 1))
    row = data.draw(st.integers(0, sizes[shard]))
    name = source.shard_names[shard]
    want = [{**r, "n": len(r["ids"])} for r in source.open_shard_at_row(name, row)]
    assert [plain_row(r) for r in mapped.open_shard_at_row(name, row)] == [
        plain_row(r) for r in want
    ]
    assert [r["i"] for r in kept.open_shard_at_row(name, row)] == [
        r["i"] for r in want if r["i"] % 2 == 0
    ]
    loader = AsyncDataLoader(mapped, batch_size=1, shuffle_buffer_size=8, seed=1, num_epochs=1)
    seen = sorted((int(b["i"][0]), int(b["n"][0])) for b in loader)
    assert len(loader) == sum(sizes)
    assert seen == sorted((r["i"], len(r["ids"])) for p in paths for r in source.open_shard(p))


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in row.items()}
