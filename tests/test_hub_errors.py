"""HuggingFaceShardedSource when the Hub pushes back: a pinned commit that is gone (history
squashed: ``HubEmulator.delete_commit``) and 429 answers with ``Retry-After`` (the fault proxy in
front of the Hub emulator), which the one retry path obeys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from easydata_grain import (
    AsyncDataLoader,
    CommitNotFoundError,
    HuggingFaceShardedSource,
    RetryPolicy,
    ShardNotFoundError,
)
from ops.fault_proxy import FaultProxy
from ops.hub_emulator import HubEmulator, make_repo, write_files
from ops.hub_repos import ShapedRepo, c4_like, fineweb_like, parquet_bytes

ROWS = [{"id": i, "text": f"row {i}"} for i in range(40)]


def all_rows(source: HuggingFaceShardedSource) -> list[dict[str, Any]]:
    return [row for shard in source.shard_names for row in source.open_shard(shard)]


def squashed(hub: HubEmulator, repo_id: str) -> str:
    """Make a repo, then replace its history: returns the commit that is gone."""
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS, row_group_size=10)})
    return hub.commit_sha(repo_id)


def squash(hub: HubEmulator, repo_id: str, old: str) -> None:
    write_files(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS[:5])})
    hub.delete_commit(repo_id, old)


def check_gone(error: CommitNotFoundError, repo_id: str, commit: str) -> None:
    message = str(error)
    assert f"'{repo_id}'" in message and commit in message and "is gone" in message
    assert "restore the data at that commit" in message and "fresh state" in message
    assert isinstance(error, ShardNotFoundError) and error.path == repo_id


def test_a_source_built_before_the_commit_went_fails_clearly(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/gone-while-reading"
    old = squashed(hub, repo_id)
    source = HuggingFaceShardedSource(repo_id)
    loader = AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=0, seed=0)
    assert len(loader) == 10  # footers read at the commit
    squash(hub, repo_id, old)
    with pytest.raises(CommitNotFoundError) as caught:
        list(loader)  # the rows are read at the gone commit
    check_gone(caught.value, repo_id, old)
    assert "'data/train.parquet' cannot be read at it" in str(caught.value)


def test_a_revision_sha_that_is_gone(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/gone-revision"
    old = squashed(hub, repo_id)
    squash(hub, repo_id, old)
    with pytest.raises(CommitNotFoundError) as caught:
        HuggingFaceShardedSource(repo_id, revision=old)  # e.g. to resume a saved state
    check_gone(caught.value, repo_id, old)
    with pytest.raises(CommitNotFoundError):
        HuggingFaceShardedSource(repo_id, revision=old, streaming=False)


def test_a_cached_resolution_whose_commit_is_gone(hub: HubEmulator, tmp_path: Path) -> None:
    repo_id = "hub-emulator/gone-cached"
    old = squashed(hub, repo_id)
    HuggingFaceShardedSource(repo_id, cache_dir=tmp_path).row_counts()
    squash(hub, repo_id, old)
    source = HuggingFaceShardedSource(repo_id, cache_dir=tmp_path)  # no request: the cache
    assert source.files.commit == old and source.row_counts() == [len(ROWS)]
    with pytest.raises(CommitNotFoundError) as caught:
        all_rows(source)
    check_gone(caught.value, repo_id, old)
    assert "source.resolution_cache" in str(caught.value)


# -- 429 with Retry-After ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shaped(hub: HubEmulator) -> dict[str, ShapedRepo]:
    return {
        "HuggingFaceFW/fineweb": fineweb_like(hub.root, "HuggingFaceFW/fineweb"),
        "allenai/c4": c4_like(hub.root, "allenai/c4"),
    }


@pytest.mark.parametrize(
    ("repo_id", "subset"), [("HuggingFaceFW/fineweb", None), ("allenai/c4", "en")]
)
def test_retry_after_is_waited_and_the_stream_continues_at_the_same_row(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, repo_id: str, subset: str | None
) -> None:
    expected = shaped[repo_id].rows[(subset or "default", "train")]
    with FaultProxy(hub.url) as proxy:
        source = HuggingFaceShardedSource(
            repo_id,
            subset=subset,
            storage_options={"endpoint": proxy.url},
            retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05),  # far below Retry-After
        )
        source.row_counts()
        # A 429 on the 2nd range read of the rows (mid-stream: the first shard's rows are out).
        proxy.inject(
            "429", every=2, limit=1, methods="GET", path_contains="/resolve/", retry_after=1
        )
        rows = all_rows(source)
        log = proxy.log
    assert [row["text"] for row in rows] == [row["text"] for row in expected]  # nothing lost
    [fault] = [i for i, request in enumerate(log) if request.fault == "429"]
    retry = next(r for r in log[fault + 1 :] if r.path == log[fault].path)
    assert retry.fault is None and retry.time - log[fault].time >= 1.0
    assert source.stats.retries == 1


def test_retry_after_beyond_max_retry_after_is_cut(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    with FaultProxy(hub.url) as proxy:
        source = HuggingFaceShardedSource(
            "HuggingFaceFW/fineweb",
            storage_options={"endpoint": proxy.url},
            retry=RetryPolicy(initial_backoff=0.01, max_retry_after=0.3),
        )
        proxy.inject("429", limit=1, methods="GET", path_contains="/resolve/", retry_after=3600)
        counts = source.row_counts()  # the first footer read is answered 429, then read
        log = proxy.log
    assert counts == [40, 40, 40, 40]
    gap = log[1].time - log[0].time
    assert log[0].fault == "429" and 0.3 <= gap < 5
