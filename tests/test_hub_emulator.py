"""The Hub emulator (ops/hub_emulator.py) against the unmodified huggingface_hub and datasets.

The clients are imported here, after tests/conftest.py pointed HF_ENDPOINT at the ``hub``
fixture's port; the repos are shaped like real ones (ops/hub_repos.py).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ops.fault_proxy import FaultProxy
from ops.hub_emulator import HubEmulator, make_repo, repo_dir, write_files
from ops.hub_repos import (
    ShapedRepo,
    alpaca_like,
    c4_like,
    fineweb_like,
    parquet_bytes,
    the_stack_like,
)

ROWS = [{"id": i, "text": f"row {i}"} for i in range(20)]


@pytest.fixture(scope="module")
def shaped(hub: HubEmulator) -> dict[str, ShapedRepo]:
    """The four real-shaped repos, by short name."""
    makers = {
        "fineweb": fineweb_like,
        "the-stack": the_stack_like,
        "c4": c4_like,
        "alpaca": alpaca_like,
    }
    return {name: make(hub.root) for name, make in makers.items()}


def _stream(repo_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    return list(datasets.load_dataset(repo_id, streaming=True, **kwargs))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a plain GET (or HEAD when ``headers["method"]``)."""
    headers = dict(headers or {})
    method = headers.pop("method", "GET")
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_clients_use_the_emulator(hub: HubEmulator) -> None:
    assert hub.url == huggingface_hub.constants.ENDPOINT
    assert hub.url == datasets.config.HF_ENDPOINT


@pytest.mark.parametrize(
    ("name", "subset", "split"),
    [
        ("fineweb", "default", "train"),
        ("fineweb", "CC-MAIN-2024-10", "train"),
        ("the-stack", "python", "train"),
        ("the-stack", "default", "train"),
        ("c4", "en", "train"),
        ("c4", "en", "validation"),
        ("alpaca", "default", "train"),
    ],
)
def test_load_dataset_streams_each_subset(
    shaped: dict[str, ShapedRepo], name: str, subset: str, split: str
) -> None:
    repo = shaped[name]
    config = None if subset == "default" else subset
    assert _stream(repo.repo_id, name=config, split=split) == repo.rows[(subset, split)]


def test_load_dataset_with_a_data_dir(shaped: dict[str, ShapedRepo]) -> None:
    repo = shaped["the-stack"]
    assert (
        _stream(repo.repo_id, data_dir="data/rust", split="train") == repo.rows[("rust", "train")]
    )


def test_the_parquet_export_is_a_ref(hub: HubEmulator, shaped: dict[str, ShapedRepo]) -> None:
    repo = shaped["alpaca"]
    refs = HfApi().list_repo_refs(repo.repo_id, repo_type="dataset")
    assert [(b.name, b.target_commit) for b in refs.branches] == [
        ("main", hub.commit_sha(repo.repo_id))
    ]
    [export] = refs.converts
    assert (export.name, export.ref) == ("parquet", "refs/convert/parquet")
    assert export.target_commit == hub.commit_sha(repo.repo_id, "refs/convert/parquet")
    rows = _stream(repo.repo_id, revision="refs/convert/parquet", split="train")
    assert rows == repo.rows[("default", "train")]
    fs = HfFileSystem(skip_instance_cache=True)
    assert fs.ls(f"datasets/{repo.repo_id}@refs%2Fconvert%2Fparquet/default/train", detail=False)


def test_repo_info_has_sha_siblings_and_card(
    hub: HubEmulator, shaped: dict[str, ShapedRepo]
) -> None:
    repo = shaped["fineweb"]
    info = HfApi().dataset_info(repo.repo_id, files_metadata=True)
    assert info.sha == hub.commit_sha(repo.repo_id)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {
        ".gitattributes",
        "README.md",
        *(
            f"data/{d}/000_0000{i}.parquet"
            for d in ("CC-MAIN-2013-20", "CC-MAIN-2024-10")
            for i in (0, 1)
        ),
    }
    shard = siblings["data/CC-MAIN-2013-20/000_00000.parquet"]
    assert shard.lfs is not None and shard.lfs.size == shard.size
    assert siblings["README.md"].lfs is None
    assert [c["config_name"] for c in info.card_data.configs][:1] == ["default"]


def test_hf_file_system_lists_globs_and_reads_ranges(
    hub: HubEmulator, shaped: dict[str, ShapedRepo]
) -> None:
    repo_id = shaped["fineweb"].repo_id
    fs = HfFileSystem(skip_instance_cache=True)
    assert fs.ls(f"datasets/{repo_id}/data", detail=False) == [
        f"datasets/{repo_id}/data/CC-MAIN-2013-20",
        f"datasets/{repo_id}/data/CC-MAIN-2024-10",
    ]
    shards = fs.glob(f"datasets/{repo_id}/data/*/*.parquet")
    assert len(shards) == 4
    data = (repo_dir(hub.root, repo_id) / shards[0].split("/", 3)[3]).read_bytes()
    hub.reset_counters()
    with fs.open(shards[0], "rb", block_size=64) as f:
        f.seek(100)
        assert f.read(50) == data[100:150]
    assert {r.status for r in hub.log if r.endpoint == "resolve"} == {206}
    assert hub.count("tree") == hub.count("paths-info") == 0  # the glob's listing answered info
    with fs.open(shards[1], "rb") as f:
        table = pq.read_table(f, columns=["id"])
    assert table.column("id").to_pylist() == [
        row["id"] for row in shaped["fineweb"].rows[("CC-MAIN-2013-20", "train")][40:]
    ]


def test_hf_hub_download_and_resolve_headers(
    hub: HubEmulator, shaped: dict[str, ShapedRepo]
) -> None:
    repo_id = shaped["alpaca"].repo_id
    path = "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet"
    hub.reset_counters()
    local = hf_hub_download(repo_id, path, repo_type="dataset")
    resolve = f"/datasets/{repo_id}/resolve/main/{path}"
    assert hub.requests == {("HEAD", resolve): 1, ("GET", resolve): 1}
    data = (repo_dir(hub.root, repo_id) / path).read_bytes()
    assert Path(local).read_bytes() == data
    url = f"{hub.url}/datasets/{repo_id}/resolve/main/{path}"
    status, headers, body = _get(url, {"method": "HEAD"})
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == hub.commit_sha(repo_id)
    assert headers["ETag"].startswith('"') and headers["X-Linked-Etag"] == headers["ETag"]
    assert headers["Content-Length"] == headers["X-Linked-Size"] == str(len(data))
    assert headers["Accept-Ranges"] == "bytes"
    assert not [name for name in headers if "xet" in name.lower()]
    status, headers, body = _get(url, {"Range": "bytes=-10"})
    assert (status, body, headers["Content-Range"]) == (
        206,
        data[-10:],
        f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}",
    )
    assert _get(url, {"Range": f"bytes={len(data)}-"})[0] == 416
    readme = _get(f"{hub.url}/datasets/{repo_id}/resolve/main/README.md", {"method": "HEAD"})[1]
    assert "X-Linked-Etag" not in readme


def test_tree_listing_paginates_with_quoted_paths(
    hub: HubEmulator, shaped: dict[str, ShapedRepo]
) -> None:
    repo_id = shaped["fineweb"].repo_id
    api = HfApi()
    whole = [e.path for e in api.list_repo_tree(repo_id, recursive=True, repo_type="dataset")]
    assert len(whole) == 9  # .gitattributes, README.md, data/, 2 dumps, 4 shards
    hub.reset_counters()
    with hub.pages_of(2):
        paged = [e.path for e in api.list_repo_tree(repo_id, recursive=True, repo_type="dataset")]
        found = HfFileSystem(skip_instance_cache=True).find(f"datasets/{repo_id}/data")
    assert paged == whole
    assert [r.path for r in hub.log][:5] == [f"/api/datasets/{repo_id}/tree/main"] * 5
    shards = [f"datasets/{repo_id}/{p}" for p in whole if p.endswith(".parquet")]
    assert found == sorted(shards) and len(found) == 4
    with hub.pages_of(1):
        dump = list(api.list_repo_tree(repo_id, "data/CC-MAIN-2024-10", repo_type="dataset"))
        tree_url = f"{hub.url}/api/datasets/{repo_id}/tree/main/data%2FCC-MAIN-2024-10"
        link = _get(f"{tree_url}?recursive=false")[1]["Link"]
    assert [e.path for e in dump] == [f"data/CC-MAIN-2024-10/000_0000{i}.parquet" for i in (0, 1)]
    assert link == f'<{tree_url}?recursive=false&cursor=1>; rel="next"'
    infos = api.get_paths_info(repo_id, ["data", "README.md", "nothing"], repo_type="dataset")
    assert [(type(i).__name__, i.path) for i in infos] == [
        ("RepoFolder", "data"),
        ("RepoFile", "README.md"),
    ]


def test_a_private_repo_needs_the_token(hub: HubEmulator) -> None:
    make_repo(
        hub.root, "hub-emulator/private", {"data/train.parquet": parquet_bytes(ROWS)}, private=True
    )
    for token in (None, "hf_wrong"):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).dataset_info("hub-emulator/private")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(
                "hub-emulator/private", "data/train.parquet", repo_type="dataset", token=token
            )
    with pytest.raises(datasets.exceptions.DatasetNotFoundError):
        _stream("hub-emulator/private", split="train")
    assert HfApi(token=hub.token).dataset_info("hub-emulator/private").private is True
    assert _stream("hub-emulator/private", split="train", token=hub.token) == ROWS
    assert hub.token not in repr(hub.log) + repr(hub)


def test_a_gated_repo_shows_its_files_but_serves_them_with_the_token(hub: HubEmulator) -> None:
    make_repo(
        hub.root, "hub-emulator/gated", {"data/train.parquet": parquet_bytes(ROWS)}, gated=True
    )
    info = HfApi().dataset_info("hub-emulator/gated")
    assert info.gated == "auto"
    for token, status in ((None, 401), ("hf_wrong", 403)):
        with pytest.raises(GatedRepoError) as caught:
            hf_hub_download(
                "hub-emulator/gated", "data/train.parquet", repo_type="dataset", token=token
            )
        assert caught.value.response.status_code == status
    path = hf_hub_download(
        "hub-emulator/gated", "data/train.parquet", repo_type="dataset", token=hub.token
    )
    assert pq.read_table(path).to_pylist() == ROWS


def test_unknown_revisions_files_and_namespaces(
    hub: HubEmulator, shaped: dict[str, ShapedRepo]
) -> None:
    repo_id = shaped["alpaca"].repo_id
    with pytest.raises(RevisionNotFoundError):
        HfApi().dataset_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "README.md", repo_type="dataset", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", repo_type="dataset")
    status, headers, _ = _get(f"{hub.url}/api/datasets/hub-emulator")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")


def test_a_commit_sha_keeps_its_files_after_an_update(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/updated"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    old = hub.commit_sha(repo_id)
    assert _stream(repo_id, revision=old, split="train") == ROWS
    write_files(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS[:5])})
    new = hub.commit_sha(repo_id)
    assert new != old
    assert _stream(repo_id, split="train") == ROWS[:5]
    fs = HfFileSystem(skip_instance_cache=True)
    with fs.open(f"datasets/{repo_id}@{old}/data/train.parquet", "rb") as f:
        assert pq.read_table(f).to_pylist() == ROWS
    write_files(hub.root, repo_id, {"data/extra.parquet": parquet_bytes(ROWS)})
    assert hub.commit_sha(repo_id) not in (old, new)


def test_a_get_through_the_fault_proxy(hub: HubEmulator, shaped: dict[str, ShapedRepo]) -> None:
    repo_id = shaped["c4"].repo_id
    path = "en/c4-validation.00000-of-00001.json.gz"
    data = (repo_dir(hub.root, repo_id) / path).read_bytes()
    with FaultProxy(hub.url) as proxy:
        url = f"{proxy.url}/datasets/{repo_id}/resolve/main/{path}"
        status, headers, body = _get(url, {"Range": "bytes=10-19"})
        assert (status, body) == (206, data[10:20])
        assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        fs = HfFileSystem(endpoint=proxy.url, skip_instance_cache=True)
        with hub.pages_of(1):  # the next pages' links lead through the proxy too
            assert len(fs.ls(f"datasets/{repo_id}/en", detail=False)) == 3
        with fs.open(f"datasets/{repo_id}/{path}", "rb", block_size=16) as f:
            f.seek(len(data) - 8)
            assert f.read() == data[-8:]
    assert sum("/tree/main/en" in r.path for r in proxy.log) == 3
    assert sum(f"/resolve/main/{path}" in r.path for r in proxy.log) >= 2


def test_a_branch_is_a_folder_beside_the_repo(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/branched"
    make_repo(hub.root, repo_id, {"a.txt": b"main"})
    write_files(hub.root, repo_id, {"a.txt": b"dev", ".gitattributes": b""}, revision="dev")
    assert repo_dir(hub.root, repo_id, "dev").name == "branched@dev"
    api = HfApi()
    branches = api.list_repo_refs(repo_id, repo_type="dataset").branches
    assert {(b.name, b.ref) for b in branches} == {
        ("main", "refs/heads/main"),
        ("dev", "refs/heads/dev"),
    }
    path = hf_hub_download(repo_id, "a.txt", repo_type="dataset", revision="dev")
    assert Path(path).read_bytes() == b"dev"
    [entry] = [
        e
        for e in api.list_repo_tree(repo_id, repo_type="dataset", expand=True)
        if e.path == "a.txt"
    ]
    assert entry.last_commit is not None and entry.last_commit.oid == hub.commit_sha(repo_id)


def test_a_deleted_commit_is_an_unknown_revision(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/squashed"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    old = hub.commit_sha(repo_id)
    with pytest.raises(ValueError, match="still point at"):
        hub.delete_commit(repo_id, old)  # main is at it
    write_files(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS[:5])})
    hub.delete_commit(repo_id, old)  # as squashing the history would
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "data/train.parquet", repo_type="dataset", revision=old)
    with pytest.raises(RevisionNotFoundError):
        HfApi().dataset_info(repo_id, revision=old)
    assert HfApi().dataset_info(repo_id).sha == hub.commit_sha(repo_id) != old


def test_the_log_counts_body_bytes(hub: HubEmulator, shaped: dict[str, ShapedRepo]) -> None:
    repo_id = shaped["c4"].repo_id
    path = "en/c4-validation.00000-of-00001.json.gz"
    hub.reset_counters()
    url = f"{hub.url}/datasets/{repo_id}/resolve/main/{path}"
    assert _get(url, {"Range": "bytes=10-19"})[0] == 206
    assert _get(url, {"method": "HEAD"})[0] == 200
    assert [(r.method, r.body_bytes) for r in hub.log] == [("GET", 10), ("HEAD", 0)]
