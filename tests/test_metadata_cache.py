"""ParquetShardedSource(metadata_cache_dir=...): a warm start reads no footer (counted on disk
and at the S3 emulator), a rewritten file is read again, a bad entry is ignored and rewritten,
entries are JSON (no pickle) and never mix between files; cold starts read footers and line
indexes concurrently, with a bounded number in flight."""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    JsonShardedSource,
    MissingColumnError,
    ParquetShardedSource,
)
from easydata_grain.sources.file_source import FileShardedSource, ShardMeta
from easydata_grain.sources.metadata_cache import decode_footer
from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy


class CountingParquet(ParquetShardedSource):
    """A Parquet source that records every file it opens (footer reads and row reads)."""

    def _open(self, path: str, size: int) -> IO[bytes]:
        self.__dict__.setdefault("opened", []).append(path)
        return super()._open(path, size)


def opened(source: ParquetShardedSource) -> list[str]:
    return source.__dict__.get("opened", [])


def write_ids(path: Path, ids: range) -> str:
    pq.write_table(pa.table({"id": list(ids), "text": [f"row {i}" for i in ids]}), path)
    return str(path)


def cache_entries(directory: Path) -> list[Path]:
    return sorted((directory / "parquet_footer").glob("*"))


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    return write_parquet_dataset(
        tmp_path / "data", num_shards=4, rows_per_shard=300, row_group_size=100, max_tokens=8
    )


# -- a warm start reads no footer ---------------------------------------------------------------


def test_a_warm_start_reads_no_footer_on_disk(shards: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = CountingParquet(shards, metadata_cache_dir=cache)
    assert cold.row_counts() == [300] * 4
    assert sorted(opened(cold)) == sorted(shards)  # each footer read once
    assert (cold.metadata_cache.hits, cold.metadata_cache.misses) == (0, 4)
    assert len(cache_entries(cache)) == 4

    warm = CountingParquet(shards, metadata_cache_dir=cache)
    assert warm.row_counts() == [300] * 4
    assert warm.schema == cold.schema
    assert opened(warm) == []  # no footer read
    assert (warm.metadata_cache.hits, warm.metadata_cache.misses) == (4, 0)
    for shard in (0, 3):  # the rows read through cached footers are the file's rows
        assert [r["id"] for r in warm.open_shard_at_row(shards[shard], 150)] == [
            r["id"] for r in cold.open_shard_at_row(shards[shard], 150)
        ]


def test_a_footer_whose_chunks_start_with_a_dictionary_page_is_trusted(tmp_path: Path) -> None:
    """A column chunk starts at its dictionary page, before its first data page."""
    path = tmp_path / "dict.parquet"
    words = [f"{i:040d}" for i in range(2000)]
    pq.write_table(pa.table({"text": words * 2}), path, use_dictionary=True)
    chunk = pq.read_metadata(path).row_group(0).column(0)
    assert chunk.has_dictionary_page
    assert chunk.data_page_offset + chunk.total_compressed_size > os.path.getsize(path)
    CountingParquet([str(path)], metadata_cache_dir=tmp_path / "cache").row_counts()
    warm = CountingParquet([str(path)], metadata_cache_dir=tmp_path / "cache")
    assert warm.row_counts() == [4000] and opened(warm) == []


def test_without_a_cache_dir_every_source_reads_the_footers(shards: list[str]) -> None:
    for _ in range(2):
        source = CountingParquet(shards)
        source.row_counts()
        assert source.metadata_cache is None
        assert sorted(opened(source)) == sorted(shards)


def test_the_loader_over_a_warm_source_gives_the_same_batches(
    shards: list[str], tmp_path: Path
) -> None:
    def first_batches(source: ParquetShardedSource) -> list[np.ndarray]:
        loader = AsyncDataLoader(source, batch_size=32, shuffle_buffer_size=100, seed=3, pad=True)
        return [next(loader)["id"] for _ in range(3)]

    cache = tmp_path / "cache"
    cold = first_batches(CountingParquet(shards, metadata_cache_dir=cache))
    warm_source = CountingParquet(shards, metadata_cache_dir=cache)
    warm = first_batches(warm_source)
    assert warm_source.metadata_cache.misses == 0
    assert all(np.array_equal(a, b) for a, b in zip(cold, warm, strict=True))


def test_projections_share_the_cached_footers(shards: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    CountingParquet(shards, metadata_cache_dir=cache).row_counts()
    projected = CountingParquet(shards, columns=["id"], metadata_cache_dir=cache)
    assert projected.column_names == ["id"] and opened(projected) == []
    assert [r["id"] for r in projected.open_shard(shards[1])] == list(range(300, 600))
    with pytest.raises(MissingColumnError, match="no column"):  # checked on cached footers too
        CountingParquet(shards, columns=["nope"], metadata_cache_dir=cache).row_counts()


def test_a_source_with_a_cache_pickles(shards: list[str], tmp_path: Path) -> None:
    source = ParquetShardedSource(shards, metadata_cache_dir=tmp_path / "cache")
    source.row_counts()
    copy = pickle.loads(pickle.dumps(source))
    assert copy.metadata_cache.directory == str(tmp_path / "cache")
    assert copy.metadata_cache.misses == 4
    again = ParquetShardedSource(shards, metadata_cache_dir=tmp_path / "cache")
    assert again.row_counts() == copy.row_counts()


def test_a_warm_start_sends_no_footer_request_to_s3(
    s3_store: StoreEndpoint,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    shards: list[str],
    tmp_path: Path,
) -> None:
    bucket = s3_store.new_bucket("meta")
    for path in shards:
        s3_store.upload(path, f"{bucket}/data/{Path(path).name}")
    proxy = fault_proxy(s3_store)

    def source() -> ParquetShardedSource:
        return ParquetShardedSource(
            f"{bucket}/data/*.parquet",
            storage_options=s3_store.storage_options(proxy.url),
            metadata_cache_dir=tmp_path / "cache",
        )

    cold = source()
    assert cold.row_counts() == [300] * 4
    assert proxy.requests == {"GET": 1 + 4}  # the listing, then one tail read per footer
    proxy.reset_counters()
    warm = source()
    assert warm.row_counts() == [300] * 4
    assert proxy.requests == {"GET": 1}  # the listing alone
    assert warm.stats.requests == 1
    proxy.reset_counters()
    assert [r["id"] for r in warm.open_shard_at_row(warm.shard_names[2], 250)] == list(
        range(850, 900)
    )
    assert proxy.requests == {"GET": 1}  # the rows: one request, pinned to the listed etag


# -- a changed file is read again ---------------------------------------------------------------


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    paths = [write_ids(tmp_path / f"{name}.parquet", range(100)) for name in "ab"]
    assert CountingParquet(paths, metadata_cache_dir=cache).row_counts() == [100, 100]

    write_ids(Path(paths[1]), range(1000, 1040))  # another size
    warm = CountingParquet(paths, metadata_cache_dir=cache)
    assert warm.row_counts() == [100, 40]
    assert opened(warm) == [paths[1]]
    assert [r["id"] for r in warm.open_shard(paths[1])] == list(range(1000, 1040))

    stat = os.stat(paths[0])  # the same bytes, another mtime: another version
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    again = CountingParquet(paths, metadata_cache_dir=cache)
    assert again.row_counts() == [100, 40]
    assert opened(again) == [paths[0]]


def test_a_rewritten_object_is_read_again_on_s3(
    s3_store: StoreEndpoint,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    tmp_path: Path,
) -> None:
    bucket = s3_store.new_bucket("meta")
    for name in "ab":
        s3_store.upload(write_ids(tmp_path / "x.parquet", range(100)), f"{bucket}/d/{name}.parquet")
    proxy = fault_proxy(s3_store)

    def source() -> ParquetShardedSource:
        return ParquetShardedSource(
            f"{bucket}/d/*.parquet",
            storage_options=s3_store.storage_options(proxy.url),
            metadata_cache_dir=tmp_path / "cache",
        )

    assert source().row_counts() == [100, 100]
    s3_store.upload(write_ids(tmp_path / "x.parquet", range(7, 57)), f"{bucket}/d/b.parquet")
    proxy.reset_counters()
    warm = source()
    assert warm.row_counts() == [100, 50]
    # The listing, then the changed object's footer alone.
    assert [r.path for r in proxy.log][1:] == [f"/{bucket.split('://')[1]}/d/b.parquet"]
    assert proxy.requests == {"GET": 2}
    assert [r["id"] for r in warm.open_shard(warm.shard_names[1])] == list(range(7, 57))


# -- bad entries ----------------------------------------------------------------------------------


def _other_file(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "url": entry["url"] + ".other"}


def _bad_base64(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "footer": "%%%" + entry["footer"]}


def _not_a_footer(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "footer": "UEFSMQ=="}  # b"PAR1"


def _another_format(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "format": "pickle"}


def _missing_footer(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "footer"}


def _edited(edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[bytes], bytes]:
    """A damage that edits the entry's JSON."""
    return lambda data: json.dumps(edit(json.loads(data))).encode()


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda data: b"\x80\x04garbage",
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "a list": lambda data: b"[1, 2]",
    **{
        edit.__name__[1:]: _edited(edit)
        for edit in (_other_file, _bad_base64, _not_a_footer, _another_format, _missing_footer)
    },
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_bad_entry_is_ignored_and_rewritten(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    paths = [write_ids(tmp_path / f"{name}.parquet", range(10 * n)) for n, name in ((3, "a"),)]
    CountingParquet(paths, metadata_cache_dir=cache).row_counts()
    [entry] = cache_entries(cache)
    good = entry.read_bytes()
    entry.write_bytes(DAMAGE[damage](good))

    with caplog.at_level(logging.WARNING, logger="easydata_grain.sources.metadata_cache"):
        warm = CountingParquet(paths, metadata_cache_dir=cache)
        assert warm.row_counts() == [30]
    assert opened(warm) == paths  # read again
    assert "Ignoring the cached footer" in caplog.text and paths[0] in caplog.text
    assert entry.read_bytes() == good  # and rewritten
    again = CountingParquet(paths, metadata_cache_dir=cache)
    assert again.row_counts() == [30] and opened(again) == []


def test_a_footer_of_a_smaller_file_is_not_trusted(tmp_path: Path) -> None:
    """An entry holding another file's footer, under this file's name and version."""
    cache = tmp_path / "cache"
    small = write_ids(tmp_path / "small.parquet", range(5))
    large = write_ids(tmp_path / "large.parquet", range(5000))
    CountingParquet([small, large], metadata_cache_dir=cache).row_counts()
    entries = {json.loads(p.read_text())["url"]: p for p in cache_entries(cache)}
    small_entry, large_entry = (entries[f"file://{path}"] for path in (small, large))
    footer = json.loads(large_entry.read_text())["footer"]
    small_entry.write_text(json.dumps({**json.loads(small_entry.read_text()), "footer": footer}))
    source = CountingParquet([small], metadata_cache_dir=cache)
    assert source.row_counts() == [5] and opened(source) == [small]


def test_an_unwritable_cache_only_costs_the_reads(
    shards: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="easydata_grain.sources.metadata_cache"):
        for _ in range(2):
            source = CountingParquet(shards, metadata_cache_dir=blocker)
            assert source.row_counts() == [300] * 4 and len(opened(source)) == 4
    assert "Could not write the cache file" in caplog.text


# -- what the cache holds -------------------------------------------------------------------------


def test_the_cache_holds_json_and_footers_only(shards: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ParquetShardedSource(shards, metadata_cache_dir=cache).row_counts()
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) == 4 and all(p.suffix == ".json" for p in files)
    for path in files:
        entry = json.loads(path.read_text())  # JSON, never a pickle
        assert set(entry) == {"format", "url", "identity", "footer"}
        assert Path(entry["url"].removeprefix("file://")) in {Path(s) for s in shards}
        assert decode_footer(entry["footer"]).num_rows == 300


@settings(max_examples=12, deadline=None)
@given(counts=st.lists(st.integers(1, 60), min_size=2, max_size=5), swap=st.data())
def test_entries_of_different_files_never_mix(
    tmp_path_factory: pytest.TempPathFactory, counts: list[int], swap: st.DataObject
) -> None:
    """Each file gets its own footer from a warm cache, even after entries are swapped around
    (an entry names its file and version, and is refused under another name)."""
    root = tmp_path_factory.mktemp("mix")
    paths, first = [], 0
    for i, count in enumerate(counts):
        paths.append(write_ids(root / f"s{i}.parquet", range(first, first + count)))
        first += count
    cache = root / "cache"
    assert CountingParquet(paths, metadata_cache_dir=cache).row_counts() == counts
    entries = cache_entries(cache)
    order = swap.draw(st.permutations(range(len(entries))))
    contents = [entries[i].read_bytes() for i in order]
    for entry, content in zip(entries, contents, strict=True):
        entry.write_bytes(content)
    warm = CountingParquet(paths, metadata_cache_dir=cache)
    assert warm.row_counts() == counts
    moved = sum(i != j for i, j in enumerate(order))
    assert len(opened(warm)) == moved  # every moved entry refused and its footer read
    assert [r["id"] for r in warm.open_shard(paths[-1])] == list(range(first - counts[-1], first))


# -- concurrent cold starts -----------------------------------------------------------------------


class InFlight:
    """Counts metadata reads in flight (each held a little, so that the pool's threads overlap)."""

    def __init__(self) -> None:
        self.now = self.most = self.total = 0
        self.lock = threading.Lock()

    def around(self, read: Callable[[], ShardMeta]) -> ShardMeta:
        with self.lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.02)
            return read()
        finally:
            with self.lock:
                self.now -= 1


def bounded(base: type[FileShardedSource]) -> type[FileShardedSource]:
    """``base`` with 4 metadata threads, counting the metadata reads in flight."""

    class Bounded(base):  # type: ignore[misc,valid-type]
        metadata_threads: ClassVar[int] = 4
        in_flight: ClassVar[InFlight]

        def _read_meta(self, path: str) -> ShardMeta:
            return self.in_flight.around(lambda: super(Bounded, self)._read_meta(path))

    Bounded.in_flight = InFlight()
    return Bounded


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_cold_start_reads_metadata_concurrently_and_bounded(fmt: str, tmp_path: Path) -> None:
    paths = []
    for i in range(24):
        if fmt == "parquet":
            paths.append(write_ids(tmp_path / f"s{i:02}.parquet", range(i + 1)))
        else:
            path = tmp_path / f"s{i:02}.jsonl"
            path.write_text("".join(json.dumps({"id": j}) + "\n" for j in range(i + 1)))
            paths.append(str(path))
    if fmt == "parquet":
        source = bounded(ParquetShardedSource)(paths, metadata_cache_dir=tmp_path / "cache")
    else:
        source = bounded(JsonShardedSource)(paths, index_cache_dir=tmp_path / "cache")
    assert source.row_counts() == list(range(1, 25))
    counter = type(source).in_flight
    assert counter.total == 24
    assert 2 <= counter.most <= 4  # concurrent, never more than metadata_threads


# -- on several hosts -------------------------------------------------------------------------------


class FirstComputes:
    """Two sources in one process standing for two hosts of a slice: the first to ask computes
    (host 0), the other receives its result, as ``SliceMetadata`` sends it."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], Any] = {}

    def share(self, compute: Callable[[], Any], *, what: str, key: str) -> Any:
        if (key, what) not in self.results:
            self.results[key, what] = json.loads(json.dumps(compute()))  # sent as JSON
        return self.results[key, what]


@pytest.mark.parametrize("state", ["cold", "warm"])
def test_host_0_consults_the_cache_and_the_others_read_nothing(
    state: str, shards: list[str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    if state == "warm":
        ParquetShardedSource(shards, metadata_cache_dir=cache).row_counts()
    sharing = FirstComputes()
    host_0 = CountingParquet(shards, metadata_cache_dir=cache, metadata_sharing=sharing)
    host_1 = CountingParquet(shards, metadata_cache_dir=cache, metadata_sharing=sharing)
    assert host_0.row_counts() == host_1.row_counts() == [300] * 4
    assert len(opened(host_0)) == (4 if state == "cold" else 0)
    assert opened(host_1) == [] and host_1.metadata_cache.hits == host_1.metadata_cache.misses == 0
    assert [r["id"] for r in host_1.open_shard_at_row(shards[1], 290)] == list(range(590, 600))
