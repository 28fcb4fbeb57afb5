"""A shard rewritten while a source or loader reads it raises ShardChangedError, on disk and on
every store: its new bytes are never read through the old footer or line index."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    JsonShardedSource,
    ParquetShardedSource,
    ShardChangedError,
)
from easydata_grain.sources.file_source import _encode
from ops.emulators import StoreEndpoint

GROUP = 8
"""Rows per Parquet row group (and per block of the loader)."""
FIRST = 1
"""The generation of the original data; a rewrite writes generation 2."""


def _ids(shard: int, rows: int, generation: int) -> list[int]:
    """Row ids of one shard: the same width in every generation (7 digits)."""
    return [generation * 1_000_000 + shard * 10_000 + i for i in range(rows)]


def parquet_bytes(shard: int, rows: int, generation: int) -> bytes:
    """A Parquet shard whose row groups have the same byte layout in every generation (plain
    encoding, no compression or statistics), so old offsets land on new values."""
    ids = _ids(shard, rows, generation)
    table = pa.table({"id": ids, "text": [f"row-{i}" for i in ids]})
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=GROUP,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
    )
    return sink.getvalue().to_pybytes()


def jsonl_bytes(shard: int, rows: int, generation: int) -> bytes:
    """A JSON Lines shard whose lines have the same width in every generation."""
    return b"".join(
        json.dumps({"id": i, "text": f"row-{i}"}).encode() + b"\n"
        for i in _ids(shard, rows, generation)
    )


FORMATS: dict[str, Callable[[int, int, int], bytes]] = {
    "parquet": parquet_bytes,
    "jsonl": jsonl_bytes,
}


def make_source(kind: str, paths: list[str], cache: Path, options: dict | None = None) -> Any:
    if kind == "parquet":
        return ParquetShardedSource(paths, storage_options=options, batch_size=3)
    return JsonShardedSource(paths, storage_options=options, index_cache_dir=cache, batch_size=3)


def generation_of(row_id: int) -> int:
    return row_id // 1_000_000


class LocalData:
    """Shards on local disk, rewritten in place (same file, more rows, new values)."""

    def __init__(self, root: Path, kind: str, sizes: list[int]):
        self.kind = kind
        self.sizes = sizes
        self.paths = [str(root / f"s{i}.{kind}") for i in range(len(sizes))]
        for shard, rows in enumerate(sizes):
            Path(self.paths[shard]).write_bytes(FORMATS[kind](shard, rows, FIRST))
        self.cache = root / "cache"

    def rewrite(self, shard: int, extra: int) -> None:
        rows = self.sizes[shard] + extra
        with open(self.paths[shard], "r+b") as handle:  # in place: same inode
            handle.truncate(0)
            handle.write(FORMATS[self.kind](shard, rows, FIRST + 1))

    def source(self) -> Any:
        return make_source(self.kind, self.paths, self.cache)

    def all_ids(self) -> list[int]:
        return sorted(i for shard, n in enumerate(self.sizes) for i in _ids(shard, n, FIRST))


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    shards = draw(st.integers(2, 4))
    return {
        "sizes": [GROUP * draw(st.integers(1, 4)) for _ in range(shards)],
        "rewritten": draw(st.sets(st.integers(0, shards - 1), min_size=1)),
        "extra": draw(st.integers(1, 2 * GROUP)),
    }


_settings = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def rows_until_error(rows: Any) -> tuple[list[int], bool]:
    """The ids of the rows an iterator gives before it raises ShardChangedError, and whether
    it raised."""
    got: list[int] = []
    try:
        for row in rows:
            got.append(int(row["id"]))
    except ShardChangedError:
        return got, True
    return got, False


@pytest.mark.parametrize("kind", FORMATS)
@_settings
@given(layout=layouts(), data=st.data())
def test_source_never_reads_a_rewritten_shard_through_old_metadata(
    tmp_path_factory: pytest.TempPathFactory, kind: str, layout: dict[str, Any], data: Any
) -> None:
    local = LocalData(tmp_path_factory.mktemp(kind), kind, layout["sizes"])
    source = local.source()
    assert source.row_counts() == layout["sizes"]
    # Some streams are open, part-read, when the shards are rewritten.
    streams = {}
    for shard in sorted(layout["rewritten"]):
        start = data.draw(st.integers(0, layout["sizes"][shard] - 1), label=f"start {shard}")
        taken = data.draw(st.integers(0, 4), label=f"taken {shard}")
        rows = source.open_shard_at_row(source.shard_names[shard], start)
        first = [int(r["id"]) for r in itertools.islice(rows, taken)]
        assert first == _ids(shard, layout["sizes"][shard], FIRST)[start : start + taken]
        streams[shard] = (start, first, rows)
    for shard in layout["rewritten"]:
        local.rewrite(shard, layout["extra"])

    for shard, (start, first, rows) in streams.items():
        expected = _ids(shard, layout["sizes"][shard], FIRST)[start:]
        rest, raised = rows_until_error(rows)
        got = first + rest
        # Rows already read before the change may still come; never a new one.
        assert got == expected[: len(got)]
        assert raised or got == expected
    for shard, rows in enumerate(layout["sizes"]):
        name = source.shard_names[shard]
        if shard not in layout["rewritten"]:
            assert [int(r["id"]) for r in source.open_shard(name)] == _ids(shard, rows, FIRST)
            continue
        row = data.draw(st.integers(0, rows - 1), label=f"seek {shard}")
        with pytest.raises(ShardChangedError, match=rf"s{shard}\.{kind}.*changed under the job"):
            list(source.open_shard_at_row(name, row))
        for block in range(len(source.block_starts(shard))):
            with pytest.raises(ShardChangedError):
                source.read_block(shard, block)
            if kind == "parquet":
                with pytest.raises(ShardChangedError):
                    source.read_block_table(shard, block)


@pytest.mark.parametrize("kind", FORMATS)
@_settings
@given(
    layout=layouts(),
    batch_size=st.integers(1, 12),
    window=st.sampled_from([0, 5, 64]),
    saved_after=st.integers(0, 3),
    changed_after=st.integers(0, 3),
    resume=st.booleans(),
    prefetch=st.booleans(),
)
def test_loader_never_reads_a_rewritten_shard_through_old_metadata(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    layout: dict[str, Any],
    batch_size: int,
    window: int,
    saved_after: int,
    changed_after: int,
    resume: bool,
    prefetch: bool,
) -> None:
    """Continuing, or after ``set_state`` of a state saved before the rewrite, the loader
    gives only original rows: it either raises ShardChangedError or completes the pass
    exactly (rows it had read and cached before the change)."""
    local = LocalData(tmp_path_factory.mktemp(kind), kind, layout["sizes"])
    loader = AsyncDataLoader(
        local.source(),
        batch_size=batch_size,
        shuffle_buffer_size=window,
        seed=3,
        prefetch_enabled=prefetch,
    )
    before: list[int] = []
    state = loader.get_state()
    state_at = 0
    for n in range(1, max(saved_after, changed_after) + 1):
        batch = next(loader, None)
        if batch is None:
            break
        before += batch["id"].tolist()
        if n == saved_after:
            state, state_at = loader.get_state(), len(before)
    for shard in layout["rewritten"]:
        local.rewrite(shard, layout["extra"])
    if resume:
        loader.set_state(state)
        before = before[:state_at]
    after: list[int] = []
    raised = False
    try:
        for batch in loader:
            after += batch["id"].tolist()
    except ShardChangedError:
        raised = True
    event("raised" if raised else "completed (rows read before the change)")
    delivered = before + after
    assert all(generation_of(i) == FIRST for i in delivered), "a new row came through"
    assert len(set(delivered)) == len(delivered)
    if not raised:
        assert sorted(delivered) == local.all_ids()
    if not before and not resume:
        assert raised  # nothing was read before the change: every block is read after it
    # A new loader reads the new metadata: the old state is refused, a new pass works.
    fresh = AsyncDataLoader(local.source(), batch_size=batch_size, shuffle_buffer_size=window)
    with pytest.raises(Exception, match="different pipeline"):
        fresh.set_state(state)
    assert all(generation_of(i) in (FIRST, FIRST + 1) for b in fresh for i in b["id"].tolist())


@pytest.mark.parametrize("kind", FORMATS)
def test_rewritten_object_on_a_store(store: StoreEndpoint, tmp_path: Path, kind: str) -> None:
    bucket = store.new_bucket("chg")
    urls = [f"{bucket}/data/s{shard}.{kind}" for shard in range(2)]
    for shard, url in enumerate(urls):
        store.upload(FORMATS[kind](shard, 2 * GROUP, FIRST), url)
    source = make_source(kind, urls, tmp_path, store.storage_options())
    assert source.row_counts() == [2 * GROUP, 2 * GROUP]
    rows = source.open_shard(source.shard_names[0])
    assert int(next(rows)["id"]) == _ids(0, 1, FIRST)[0]

    store.upload(FORMATS[kind](0, 3 * GROUP, FIRST + 1), urls[0])
    got, raised = rows_until_error(rows)
    rest = _ids(0, 2 * GROUP, FIRST)[1:]
    assert got == rest[: len(got)]
    # JSON reads the small file in one request, before the change; Parquet a group at a time.
    assert raised if kind == "parquet" else raised or got == rest
    for row in (0, GROUP + 1):
        with pytest.raises(ShardChangedError, match=r"s0\.\w+.*changed under the job"):
            list(source.open_shard_at_row(source.shard_names[0], row))
    with pytest.raises(ShardChangedError):
        source.read_block(0, 0)
    if kind == "parquet":
        with pytest.raises(ShardChangedError):
            source.read_block_table(0, 1)
    # The other shard is unchanged and reads as before; a new source reads the new object.
    assert [int(r["id"]) for r in source.open_shard(source.shard_names[1])] == _ids(
        1, 2 * GROUP, FIRST
    )
    fresh = make_source(kind, urls, tmp_path, store.storage_options())
    assert [int(r["id"]) for r in fresh.open_shard(fresh.shard_names[0])] == _ids(
        0, 3 * GROUP, FIRST + 1
    )


def test_metadata_from_host_0_is_pinned_to_this_hosts_copy(tmp_path: Path) -> None:
    """On several hosts, host 0 reads the metadata; a local shard is this host's own copy,
    whose mtime differs: reads are pinned to that copy, and a copy of another size fails."""
    local = LocalData(tmp_path, "parquet", [GROUP, GROUP])
    host0 = local.source()
    blobs = [_encode(meta) for meta in host0.all_meta()]
    for shard, path in enumerate(local.paths):  # this host's copies: other mtimes
        rows = local.sizes[shard] + (GROUP if shard else 0)
        Path(path).write_bytes(parquet_bytes(shard, rows, FIRST))
        os.utime(path, (1e9, 1e9 + shard))
    here = local.source()
    here._shared = lambda compute, what: blobs if "metadata" in what else compute()
    here.all_meta()
    assert [int(r["id"]) for r in here.open_shard(local.paths[0])] == _ids(0, GROUP, FIRST)
    with pytest.raises(ShardChangedError, match=r"s1\.parquet"):
        list(here.open_shard(local.paths[1]))
