"""HuggingFaceShardedSource with ``cache_dir``: the resolution and the footers/line indexes are
kept, so a second construction sends the Hub emulator no request at all (counted in its request
log); a branch stays at its cached commit; ``HF_HUB_OFFLINE`` and an unreachable Hub read from
the cache. Also: requests and bytes in ``source.stats`` against the emulator's own log, and
``describe()``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from easydata_grain import AsyncDataLoader, HuggingFaceShardedSource, OfflineError, RetryPolicy
from easydata_grain.sources.parquet import column_chunk_ranges
from ops.fault_proxy import FaultProxy
from ops.hub_emulator import HubEmulator, make_repo, write_files
from ops.hub_repos import ShapedRepo, c4_like, fineweb_like, parquet_bytes

ROWS = [{"id": i, "text": f"row {i}"} for i in range(30)]


@pytest.fixture(scope="module")
def shaped(hub: HubEmulator) -> dict[str, ShapedRepo]:
    return {
        "HuggingFaceFW/fineweb": fineweb_like(hub.root, "HuggingFaceFW/fineweb"),
        "allenai/c4": c4_like(hub.root, "allenai/c4"),
    }


def all_rows(source: HuggingFaceShardedSource) -> list[dict[str, Any]]:
    return [row for shard in source.shard_names for row in source.open_shard(shard)]


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, as huggingface_hub reads it (at import, into its constants)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# (repo, subset): Parquet footers in the cache entry, JSON line indexes in cache_dir/indexes.
CACHED = [("HuggingFaceFW/fineweb", None), ("allenai/c4", "en")]


@pytest.mark.parametrize(("repo_id", "subset"), CACHED)
def test_a_second_construction_sends_no_request(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, tmp_path: Path, repo_id: str, subset: str
) -> None:
    first = HuggingFaceShardedSource(repo_id, subset=subset, cache_dir=tmp_path)
    counts, rows = first.row_counts(), all_rows(first)
    assert first.cached_at is None and os.path.exists(first.resolution_cache)
    hub.reset_counters()
    again = HuggingFaceShardedSource(repo_id, subset=subset, cache_dir=tmp_path)
    assert again.row_counts() == counts  # footers / line indexes from the cache too
    assert hub.log == []  # no request at all: no listing, no repo info, no footer
    assert again.files == first.files and again.identities() == first.identities()
    assert again.cached_at is not None and "resolution cached at" in again.describe()
    assert all_rows(again) == rows
    assert {request.endpoint for request in hub.log} == {"resolve"}  # the rows' ranges only
    # Another projection: the same resolution, its own footers (its schema differs).
    projected = HuggingFaceShardedSource(
        repo_id, subset=subset, cache_dir=tmp_path, columns=["text"]
    )
    assert projected.cached_at is not None  # same request: the projection is read, not resolved
    assert all_rows(projected) == [{"text": row["text"]} for row in rows]


def test_a_cached_branch_stays_at_its_commit_and_the_loader_resumes(
    hub: HubEmulator, tmp_path: Path
) -> None:
    repo_id = "hub-emulator/cached-branch"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    old = hub.commit_sha(repo_id)

    def loader() -> AsyncDataLoader:
        source = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path)
        return AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=8, seed=2)

    whole = [list(b["text"]) for b in loader()]
    interrupted = loader()
    head = [list(b["text"]) for b in itertools.islice(interrupted, 3)]
    state = interrupted.get_state()
    write_files(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS[:6])})  # main moves
    hub.reset_counters()
    restarted = loader()  # the job restarts: same arguments, same cache_dir
    assert restarted.source.files.commit == old and hub.log == []
    restarted.set_state(state)  # same commit: the fingerprint agrees
    assert head + [list(b["text"]) for b in restarted] == whole
    assert "revision 'main'" in restarted.source.describe()
    # Deleting the entry resolves the branch again: the new commit.
    os.remove(restarted.source.resolution_cache)
    latest = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path)
    assert latest.files.commit == hub.commit_sha(repo_id) != old
    assert latest.cached_at is None and len(latest) == 6
    # A pinned revision is a request of its own, cached like any other.
    pinned = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path, revision=old)
    assert pinned.files.commit == old and all_rows(pinned) == ROWS


def test_offline_reads_from_the_cache(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = "hub-emulator/offline-cached"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    local = HuggingFaceShardedSource(repo_id, streaming=False, cache_dir=tmp_path / "local")
    streamed = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path / "stream")
    streamed.row_counts()
    offline(monkeypatch)
    hub.reset_counters()
    # Local copies: everything reads offline.
    again = HuggingFaceShardedSource(repo_id, streaming=False, cache_dir=tmp_path / "local")
    assert again.source.shard_names == local.source.shard_names
    assert all_rows(again) == ROWS
    # Streaming: the source is built and counted from the cache; its rows need the Hub.
    stream = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path / "stream")
    assert stream.row_counts() == [len(ROWS)]
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE is set") as caught:
        all_rows(stream)
    assert "streaming=False" in str(caught.value)
    assert hub.log == []


@pytest.mark.parametrize("cache_dir", [None, "empty"])
def test_offline_with_nothing_cached(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: str | None
) -> None:
    repo_id = "hub-emulator/offline-uncached"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    offline(monkeypatch)
    where = None if cache_dir is None else tmp_path / cache_dir
    with pytest.raises(OfflineError, match="nothing is cached") as caught:
        HuggingFaceShardedSource(repo_id, cache_dir=where)
    message = str(caught.value)
    assert f"'{repo_id}'" in message and "HF_HUB_OFFLINE is set" in message
    assert "Build the source once online" in message and caught.value.path == repo_id


def test_an_unreachable_hub_reads_the_cache_or_says_nothing_is_cached(
    hub: HubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id = "hub-emulator/unreachable"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    with FaultProxy(hub.url) as proxy:  # the Hub, at an address that goes away
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", proxy.url)
        cached = HuggingFaceShardedSource(repo_id, streaming=False, cache_dir=tmp_path)
        cached.row_counts()
    again = HuggingFaceShardedSource(repo_id, streaming=False, cache_dir=tmp_path)
    assert all_rows(again) == ROWS and again.files == cached.files
    with pytest.raises(OfflineError, match="cannot be reached") as caught:
        HuggingFaceShardedSource(repo_id, cache_dir=tmp_path / "other")
    assert f"'{repo_id}'" in str(caught.value) and "nothing is cached" in str(caught.value)


def test_a_damaged_cache_entry_is_ignored(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, tmp_path: Path
) -> None:
    first = HuggingFaceShardedSource("HuggingFaceFW/fineweb", cache_dir=tmp_path)
    first.row_counts()
    Path(first.resolution_cache).write_text('{"format": 1, "files": ')
    again = HuggingFaceShardedSource("HuggingFaceFW/fineweb", cache_dir=tmp_path)
    assert again.cached_at is None and again.files == first.files  # resolved again
    assert again.row_counts() == first.row_counts()


# -- requests and bytes in source.stats ----------------------------------------------------------


@pytest.mark.parametrize(("repo_id", "subset"), CACHED)
def test_stats_count_the_requests_and_bytes_the_hub_served(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, tmp_path: Path, repo_id: str, subset: str
) -> None:
    source = HuggingFaceShardedSource(repo_id, subset=subset, cache_dir=tmp_path)
    hub.reset_counters()
    loader = AsyncDataLoader(source, batch_size=8, shuffle_buffer_size=16, seed=1, num_epochs=1)
    rows = sum(len(batch["text"]) for batch in loader)
    stats = source.stats.snapshot()
    served = [r for r in hub.log if r.repo_id == repo_id]
    assert rows == len(source) > 0
    assert stats["requests"] == len(served) > 0
    assert stats["bytes_read"] == sum(r.body_bytes for r in served)
    assert stats["retries"] == 0


def test_blocks_read_over_hf_fetch_only_their_own_bytes(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    """Every row group of every shard read once, last first: one request per row group, for
    exactly its column chunks' bytes (no read-ahead into the row groups after it)."""
    source = HuggingFaceShardedSource("HuggingFaceFW/fineweb")
    source.row_counts()  # the footers
    before = source.stats.snapshot()
    shards = range(len(source.shard_names))
    blocks = [(s, b) for s in shards for b in range(len(source.block_starts(s)))]
    rows = [row for shard, block in reversed(blocks) for row in source.read_block(shard, block)]
    stats = source.stats.snapshot()
    footers = [source.source.shard_meta(s).index.metadata for s in shards]
    needed = sum(
        stop - start
        for shard, block in blocks
        for start, stop in column_chunk_ranges(footers[shard], block, None)
    )
    assert len(rows) == len(source) and len(blocks) > 2 * len(shards)
    assert stats["requests"] - before["requests"] == len(blocks)
    assert stats["bytes_read"] - before["bytes_read"] == needed < sum(source.files.sizes)


def test_stats_count_failed_requests_and_retries(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    with FaultProxy(hub.url) as proxy:
        source = HuggingFaceShardedSource(
            "allenai/c4",
            subset="en",
            storage_options={"endpoint": proxy.url},
            retry=RetryPolicy(initial_backoff=0.01),
        )
        proxy.inject("503", every=2, methods="GET", path_contains="/resolve/")
        hub.reset_counters()
        all_rows(source)
        stats = source.stats.snapshot()
        assert stats["requests"] == proxy.request_count  # the failed ones too
        assert stats["retries"] == proxy.fault_count > 0
        assert stats["bytes_read"] == sum(r.body_bytes for r in hub.log)  # what was forwarded


# -- describe() ----------------------------------------------------------------------------------


def test_describe_names_the_hub_resolution(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, tmp_path: Path
) -> None:
    commit = hub.commit_sha("HuggingFaceFW/fineweb")
    source = HuggingFaceShardedSource("HuggingFaceFW/fineweb", cache_dir=tmp_path)
    text = AsyncDataLoader(source, batch_size=8).describe()
    for part in (
        f"Hub dataset HuggingFaceFW/fineweb at commit {commit} (revision 'main')",
        "resolved now, kept in",
        "subset 'default', split 'train'",
        "4 parquet shard(s) from its data files",
        "streamed over hf://",
    ):
        assert part in text, (part, text)
    again = HuggingFaceShardedSource("HuggingFaceFW/fineweb", cache_dir=tmp_path)
    assert "resolution cached at" in AsyncDataLoader(again, batch_size=8).describe()
    local = HuggingFaceShardedSource("HuggingFaceFW/fineweb", streaming=False, cache_dir=tmp_path)
    assert f"read from local copies in {tmp_path}" in local.describe()
    assert "resolution cached at" in repr(again)


def test_describe_says_why_the_parquet_export_is_read(hub: HubEmulator) -> None:
    csv = "".join(f"{r['id']},{r['text']}\n" for r in ROWS)
    make_repo(
        hub.root,
        "hub-emulator/csv-described",
        {"data/train.csv": f"id,text\n{csv}".encode()},
        parquet_export={"default/train/0000.parquet": parquet_bytes(ROWS)},
    )
    text = HuggingFaceShardedSource("hub-emulator/csv-described").describe()
    assert "its Parquet export (refs/convert/parquet; the repo holds csv files)" in text
    assert "resolved now, not cached (no cache_dir)" in text
