"""HuggingFaceShardedSource against the Hub emulator (ops/hub_emulator.py, the ``hub`` fixture)
and repos shaped like FineWeb, The Stack, C4 and Alpaca (ops/hub_repos.py), named as on the Hub.

The reference for every row is ``datasets.load_dataset(..., streaming=True)`` on the same
emulator: same rows, same order, shard by shard.
"""

from __future__ import annotations

import itertools
import json
import os
import urllib.error
from datetime import datetime
from typing import Any

import datasets
import pytest

from easydata_grain import (
    AccessDeniedError,
    AsyncDataLoader,
    DatasetsStreamSource,
    Hosts,
    HuggingFaceShardedSource,
    IndexedSource,
    InMemorySource,
    LoaderStateError,
    NoFilesMatchedError,
    RetriesExhaustedError,
    RetryPolicy,
    ShardNotFoundError,
)
from easydata_grain.io.retry import is_transient
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

SHAPES = {
    "HuggingFaceFW/fineweb": fineweb_like,
    "bigcode/the-stack": the_stack_like,
    "allenai/c4": c4_like,
    "tatsu-lab/alpaca": alpaca_like,
}
# (repo, subset, split): every subset the spec names, and a few more.
CASES = [
    ("HuggingFaceFW/fineweb", None, "train"),
    ("HuggingFaceFW/fineweb", "CC-MAIN-2024-10", "train"),
    ("bigcode/the-stack", "python", "train"),
    ("allenai/c4", "en", "train"),
    ("allenai/c4", "en", "validation"),
    ("tatsu-lab/alpaca", None, "train"),
]


@pytest.fixture(scope="module")
def shaped(hub: HubEmulator) -> dict[str, ShapedRepo]:
    """The four repos, under their Hub names."""
    return {repo_id: make(hub.root, repo_id) for repo_id, make in SHAPES.items()}


def reference(repo_id: str, subset: str | None, split: str, **kwargs: Any) -> list[dict[str, Any]]:
    """What ``datasets`` streams; C4's timestamps as the JSON text holds them (``datasets``'
    pyarrow JSON reader turns ISO-8601 text into datetimes, our JSON source keeps the text)."""
    rows = datasets.load_dataset(repo_id, subset, split=split, streaming=True, **kwargs)
    return [
        {
            k: v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, datetime) else v
            for k, v in r.items()
        }
        for r in rows
    ]


def all_rows(source: HuggingFaceShardedSource) -> list[dict[str, Any]]:
    return [row for shard in source.shard_names for row in source.open_shard(shard)]


def test_the_spec_fineweb_example(shaped: dict[str, ShapedRepo], tmp_path: Any) -> None:
    source = HuggingFaceShardedSource(
        dataset_name="HuggingFaceFW/fineweb",
        split="train",
        streaming=True,
        cache_dir=str(tmp_path / "hf_cache"),
    )
    first = list(source.open_shard(source.shard_names[0]))
    assert first == shaped["HuggingFaceFW/fineweb"].rows[("CC-MAIN-2013-20", "train")][:40]
    assert source.shard_names[0].startswith("hf://datasets/HuggingFaceFW/fineweb@")


def test_the_spec_alpaca_example_takes_the_name_positionally(
    shaped: dict[str, ShapedRepo],
) -> None:
    source = HuggingFaceShardedSource("tatsu-lab/alpaca", streaming=True)
    assert all_rows(source) == shaped["tatsu-lab/alpaca"].rows[("default", "train")]


def test_the_spec_subset_examples(shaped: dict[str, ShapedRepo]) -> None:
    # The Stack with specific language
    source = HuggingFaceShardedSource(
        dataset_name="bigcode/the-stack",
        split="train",
        subset="python",  # Only Python code
        streaming=True,
    )
    assert all_rows(source) == shaped["bigcode/the-stack"].rows[("python", "train")]
    assert [url.rsplit("/", 2)[1] for url in source.shard_names] == ["python", "python"]
    # C4 with specific configuration
    source = HuggingFaceShardedSource(
        dataset_name="allenai/c4",
        split="train",
        subset="en",  # English only
        streaming=True,
    )
    assert source.shard_names[0].endswith("/en/c4-train.00000-of-00002.json.gz")
    assert [row["text"] for row in all_rows(source)] == [
        row["text"] for row in shaped["allenai/c4"].rows[("en", "train")]
    ]


def test_a_data_dir_picks_files_as_datasets_does(shaped: dict[str, ShapedRepo]) -> None:
    source = HuggingFaceShardedSource("bigcode/the-stack", data_dir="data/rust")
    assert all_rows(source) == reference("bigcode/the-stack", None, "train", data_dir="data/rust")
    assert all_rows(source) == shaped["bigcode/the-stack"].rows[("rust", "train")]
    files = {"train": "data/python/train-00001-of-00002.parquet"}
    source = HuggingFaceShardedSource("bigcode/the-stack", data_files=files)
    assert all_rows(source) == shaped["bigcode/the-stack"].rows[("python", "train")][30:]


def test_columns_project_parquet_and_json(shaped: dict[str, ShapedRepo]) -> None:
    parquet = HuggingFaceShardedSource("HuggingFaceFW/fineweb", columns=["id", "text"])
    assert parquet.schema.names == ["id", "text"]
    rows = shaped["HuggingFaceFW/fineweb"].rows[("default", "train")]
    assert all_rows(parquet) == [{"id": r["id"], "text": r["text"]} for r in rows]
    lines = HuggingFaceShardedSource("allenai/c4", subset="en", columns=["url"])
    assert all_rows(lines) == [
        {"url": r["url"]} for r in shaped["allenai/c4"].rows[("en", "train")]
    ]
    assert lines.read_block(0, 0)[:2] == [{"url": r["url"]} for r in lines.open_shard(0)][:2]


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_rows_equal_datasets_streaming(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    source = HuggingFaceShardedSource(repo_id, split, subset)
    builder = datasets.load_dataset_builder(repo_id, subset)
    assert source.shard_names == list(builder.config.data_files[split])
    assert source.row_counts() == [
        sum(1 for _ in source.open_shard(shard)) for shard in source.shard_names
    ]
    assert all_rows(source) == reference(repo_id, subset, split)


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_a_seek_is_the_suffix_of_a_full_read(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    source = HuggingFaceShardedSource(repo_id, split, subset)
    for shard, count in zip(source.shard_names, source.row_counts(), strict=True):
        full = list(source.open_shard(shard))
        for row in sorted({0, 1, 15, 16, 17, count // 2, count - 1, count}):
            assert list(source.open_shard_at_row(shard, row)) == full[row:], (shard, row)


def _column(loader: AsyncDataLoader, name: str, batches: int) -> list[list[Any]]:
    return [list(batch[name]) for batch in itertools.islice(loader, batches)]


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_loader_resume_is_exact(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    text = "content" if repo_id == "bigcode/the-stack" else "text"

    def make() -> AsyncDataLoader:
        source = HuggingFaceShardedSource(repo_id, split, subset, columns=[text])
        loader = AsyncDataLoader(source, batch_size=8, shuffle_buffer_size=32, seed=5)
        assert "indexed" in loader.describe()
        return loader

    whole = _column(make(), text, 10)
    interrupted = make()
    assert _column(interrupted, text, 4) == whole[:4]
    state = interrupted.get_state()
    resumed = make()
    resumed.set_state(state)
    assert _column(resumed, text, 6) == whole[4:]


def test_json_array_files_like_many_sft_sets(hub: HubEmulator) -> None:
    files = {
        "data/train.json": json.dumps(ROWS[:12], indent=1).encode(),
        "data/train-2.json": json.dumps(ROWS[12:]).encode(),
    }
    make_repo(hub.root, "hub-emulator/json-arrays", files)
    source = HuggingFaceShardedSource("hub-emulator/json-arrays")
    assert source.files.kind == "json"
    assert all_rows(source) == reference("hub-emulator/json-arrays", None, "train")
    assert sorted(all_rows(source), key=lambda row: row["id"]) == ROWS


def test_two_hosts_split_the_shards_disjointly_and_completely(
    shaped: dict[str, ShapedRepo],
) -> None:
    ids = []
    for host in range(2):
        source = HuggingFaceShardedSource("HuggingFaceFW/fineweb", columns=["id"])
        loader = AsyncDataLoader(
            source, global_batch_size=8, shuffle_buffer_size=16, seed=3, hosts=Hosts(host, 2)
        )
        ids.append([i for batch in loader for i in batch["id"]])
    assert not set(ids[0]) & set(ids[1])
    expected = [row["id"] for row in shaped["HuggingFaceFW/fineweb"].rows[("default", "train")]]
    assert sorted(ids[0] + ids[1]) == sorted(expected)


def test_a_local_directory_laid_out_like_a_repo(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    folder = repo_dir(hub.root, "bigcode/the-stack")
    source = HuggingFaceShardedSource(str(folder), subset="python")
    assert source.files.commit is None
    assert source.shard_names == [
        str(folder / "data" / "python" / f"train-0000{i}-of-00002.parquet") for i in (0, 1)
    ]
    assert all_rows(source) == shaped["bigcode/the-stack"].rows[("python", "train")]
    assert source.identities() == source.source.identities()  # size and mtime: no commit


# -- errors: each names the repo and what to do -------------------------------------------------

ROWS = [{"id": i, "text": f"row {i}"} for i in range(20)]


@pytest.fixture(scope="module")
def locked(hub: HubEmulator) -> dict[str, str]:
    """A private and a gated repo (opened by ``hub.token``), by kind."""
    repos = {"private": "hub-emulator/private-source", "gated": "hub-emulator/gated-source"}
    for kind, repo_id in repos.items():
        files = {"data/train.parquet": parquet_bytes(ROWS)}
        make_repo(hub.root, repo_id, files, **{kind: True})
    return repos


def test_an_unknown_repo(hub: HubEmulator) -> None:
    with pytest.raises(ShardNotFoundError, match="'nobody/nothing' was not found") as caught:
        HuggingFaceShardedSource("nobody/nothing")
    assert "huggingface-cli login" in str(caught.value)
    assert caught.value.path == "nobody/nothing"


def test_an_unknown_subset_lists_the_subsets(shaped: dict[str, ShapedRepo]) -> None:
    with pytest.raises(ShardNotFoundError, match="no subset 'cobol'") as caught:
        HuggingFaceShardedSource("bigcode/the-stack", subset="cobol")
    assert "['default', 'python', 'rust']" in str(caught.value)
    assert "'bigcode/the-stack'" in str(caught.value)


def test_a_missing_subset_lists_the_subsets(hub: HubEmulator) -> None:
    configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": f"{name}/*"}]}
        for name in ("a", "b")
    ]
    files = {f"{name}/train.parquet": parquet_bytes(ROWS) for name in ("a", "b")}
    make_repo(hub.root, "hub-emulator/two-subsets", files, readme_yaml={"configs": configs})
    with pytest.raises(
        ShardNotFoundError, match=r"has no default subset; its subsets are \['a', 'b'\]"
    ):
        HuggingFaceShardedSource("hub-emulator/two-subsets")
    assert all_rows(HuggingFaceShardedSource("hub-emulator/two-subsets", subset="b")) == ROWS


def test_an_unknown_split_lists_the_splits(shaped: dict[str, ShapedRepo]) -> None:
    with pytest.raises(ShardNotFoundError, match="no split 'test'") as caught:
        HuggingFaceShardedSource("allenai/c4", "test", "en")
    assert "['train', 'validation']" in str(caught.value) and "split=" in str(caught.value)


def test_an_unknown_revision(shaped: dict[str, ShapedRepo]) -> None:
    with pytest.raises(ShardNotFoundError, match="has no revision 'v9'") as caught:
        HuggingFaceShardedSource("tatsu-lab/alpaca", revision="v9")
    assert "'tatsu-lab/alpaca'" in str(caught.value)


def test_data_files_that_match_nothing(shaped: dict[str, ShapedRepo]) -> None:
    # (A missing data_dir raises the same, after datasets lists it once per default pattern.)
    with pytest.raises(NoFilesMatchedError, match="data_files='data/cobol/\\*'"):
        HuggingFaceShardedSource("bigcode/the-stack", data_files="data/cobol/*")


@pytest.mark.parametrize("token", [None, "hf_wrong_token_123"])
def test_a_private_repo_without_its_token(
    hub: HubEmulator, locked: dict[str, str], token: str | None
) -> None:
    with pytest.raises(ShardNotFoundError, match="or it is private") as caught:
        HuggingFaceShardedSource(locked["private"], token=token)
    assert "huggingface-cli login" in str(caught.value) and "token=" in str(caught.value)
    assert token is None or token not in str(caught.value)


@pytest.mark.parametrize("token", [None, "hf_wrong_token_123"])
def test_a_gated_repo_without_its_token(
    hub: HubEmulator, locked: dict[str, str], token: str | None
) -> None:
    with pytest.raises(AccessDeniedError, match="is gated") as caught:
        HuggingFaceShardedSource(locked["gated"], token=token)
    assert "huggingface-cli login" in str(caught.value)
    assert token is None or token not in str(caught.value)


@pytest.mark.parametrize("kind", ["private", "gated"])
@pytest.mark.parametrize("streaming", [True, False])
def test_the_token_opens_a_locked_repo(
    hub: HubEmulator, locked: dict[str, str], kind: str, streaming: bool, tmp_path: Any
) -> None:
    source = HuggingFaceShardedSource(
        locked[kind], token=hub.token, streaming=streaming, cache_dir=tmp_path
    )
    assert all_rows(source) == ROWS
    assert hub.token not in repr(source) + repr(source.files) + str(source.identities())


def test_csv_files_are_read_from_the_parquet_export(hub: HubEmulator) -> None:
    csv = "".join(f"{r['id']},{r['text']}\n" for r in ROWS)
    make_repo(
        hub.root,
        "hub-emulator/csv-exported",
        {"data/train.csv": f"id,text\n{csv}".encode()},
        parquet_export={"default/train/0000.parquet": parquet_bytes(ROWS)},
    )
    source = HuggingFaceShardedSource("hub-emulator/csv-exported")
    assert all_rows(source) == ROWS == reference("hub-emulator/csv-exported", None, "train")
    export = hub.commit_sha("hub-emulator/csv-exported", "refs/convert/parquet")
    assert source.shard_names == [
        f"hf://datasets/hub-emulator/csv-exported@{export}/default/train/0000.parquet"
    ]
    assert "Parquet export" in repr(source)


def test_csv_files_without_an_export_are_streamed_by_datasets(hub: HubEmulator) -> None:
    make_repo(hub.root, "hub-emulator/csv-only", {"data/train.csv": b"id,text\n1,a\n"})
    source = HuggingFaceShardedSource("hub-emulator/csv-only")
    assert isinstance(source, DatasetsStreamSource) and not isinstance(source, IndexedSource)
    assert all_rows(source) == [{"id": 1, "text": "a"}]
    assert all_rows(source) == reference("hub-emulator/csv-only", None, "train")
    assert "no Parquet export" in repr(source) and "streaming mode" in repr(source)


def test_the_stream_source_reuses_the_resolution_s_commit_and_builder(hub: HubEmulator) -> None:
    """Once the resolution finds no Parquet export (its last request, the refs), the returned
    DatasetsStreamSource asks the Hub nothing more: no second commit lookup, no second builder."""
    make_repo(hub.root, "hub-emulator/csv-once", {"data/train.csv": b"id,text\n1,a\n2,b\n"})
    hub.reset_counters()
    source = HuggingFaceShardedSource("hub-emulator/csv-once")
    assert isinstance(source, DatasetsStreamSource)
    assert hub.log[-1].endpoint == "refs" and hub.count("refs") == 1
    assert source.commit == hub.commit_sha("hub-emulator/csv-once")
    assert all_rows(source) == [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]
    with pytest.raises(ValueError, match="commit sha"):
        DatasetsStreamSource("hub-emulator/csv-once", revision="main", builder=object())


def test_export_file_sizes_come_from_the_export_s_own_listing(hub: HubEmulator) -> None:
    """The sizes and content ids of the export's files are those datasets listed while
    resolving the export: no paths-info, and no repo info asked after that listing."""
    repo_id = "hub-emulator/csv-sized"
    data = parquet_bytes(ROWS)
    make_repo(
        hub.root,
        repo_id,
        {"data/train.csv": b"id,text\n1,a\n"},
        parquet_export={"default/train/0000.parquet": data},
    )
    export = hub.commit_sha(repo_id, "refs/convert/parquet")
    hub.reset_counters()
    source = HuggingFaceShardedSource(repo_id)
    asked = [r.endpoint for r in hub.log if r.revision == export]
    listed = max(i for i, endpoint in enumerate(asked) if endpoint == "tree")
    assert "paths-info" not in asked and "info" not in asked[listed:]
    assert source.files.sizes == (len(data),) and all_rows(source) == ROWS


def test_fluent_map_on_a_hub_source_stays_indexed(shaped: dict[str, ShapedRepo]) -> None:
    """``HuggingFaceShardedSource(...).map(...)`` (TransformableSource) is an indexed source of
    the mapped rows, seeks included, and the loader reads them in indexed mode."""
    source = HuggingFaceShardedSource("HuggingFaceFW/fineweb", columns=["id", "text"])
    mapped = source.map(lambda row: {**row, "chars": len(row["text"])})
    assert isinstance(mapped, IndexedSource) and mapped.row_counts() == source.row_counts()
    last = source.shard_names[-1]
    want = [{**row, "chars": len(row["text"])} for row in source.open_shard_at_row(last, 5)]
    assert list(mapped.open_shard_at_row(last, 5)) == want
    loader = AsyncDataLoader(mapped, batch_size=8, shuffle_buffer_size=16, seed=4, num_epochs=1)
    assert len(loader) == -(-len(source) // 8)
    got = sorted((i, n) for b in loader for i, n in zip(b["id"], b["chars"], strict=True))
    assert got == sorted((row["id"], len(row["text"])) for row in all_rows(source))


# -- pinning -------------------------------------------------------------------------------------


def test_a_source_keeps_its_commit_after_the_repo_is_updated(hub: HubEmulator) -> None:
    repo_id = "hub-emulator/pinned-source"
    make_repo(hub.root, repo_id, {"data/train.parquet": parquet_bytes(ROWS)})
    old = hub.commit_sha(repo_id)

    def make(**kwargs: Any) -> AsyncDataLoader:
        source = HuggingFaceShardedSource(repo_id, **kwargs)
        return AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=8, seed=1)

    loader = make()
    before = _column(loader, "text", 2)
    state = loader.get_state()
    new_rows = [{"id": i, "text": f"new {i}"} for i in range(12)]
    write_files(hub.root, repo_id, {"data/train.parquet": parquet_bytes(new_rows)})
    new = hub.commit_sha(repo_id)
    assert new != old
    rest = _column(loader, "text", 10)  # the loader built before the update reads on at `old`
    assert sorted(text for batch in before + rest for text in batch) == sorted(
        row["text"] for row in ROWS
    )
    latest = HuggingFaceShardedSource(repo_id)
    assert latest.files.commit == new and all_rows(latest) == new_rows
    assert latest.shard_names == [f"hf://datasets/{repo_id}@{new}/data/train.parquet"]
    with pytest.raises(LoaderStateError, match="sources: saved"):
        make().set_state(state)  # another commit: other data
    pinned = make(revision=old)  # the commit the state was saved at
    pinned.set_state(state)
    assert _column(pinned, "text", 10) == rest


# -- streaming=False and datasets objects --------------------------------------------------------


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_downloaded_files_give_the_same_rows(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str, tmp_path: Any
) -> None:
    streamed = HuggingFaceShardedSource(repo_id, split, subset)
    local = HuggingFaceShardedSource(repo_id, split, subset, streaming=False, cache_dir=tmp_path)
    assert local.shard_names == streamed.shard_names
    assert all_rows(local) == all_rows(streamed)
    assert local.identities() == streamed.identities()  # one fingerprint: states move across
    commit = local.files.commit
    folder = tmp_path / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / commit
    assert [p.startswith(str(folder)) for p in local.source.shard_names] == [True] * len(
        local.shard_names
    )


def test_downloads_go_to_hf_home_and_are_reused(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    source = HuggingFaceShardedSource("tatsu-lab/alpaca", streaming=False)
    [path] = source.source.shard_names
    assert path.startswith(
        os.path.join(os.environ["HF_HOME"], "hub", "datasets--tatsu-lab--alpaca")
    )
    hub.reset_counters()
    again = HuggingFaceShardedSource("tatsu-lab/alpaca", streaming=False)
    assert again.source.shard_names == [path]
    assert hub.count("resolve", method="GET", repo_id="tatsu-lab/alpaca") == 0


def test_from_dataset(shaped: dict[str, ShapedRepo]) -> None:
    rows = shaped["tatsu-lab/alpaca"].rows[("default", "train")]
    table = datasets.Dataset.from_list(rows)
    source = HuggingFaceShardedSource.from_dataset(table)
    assert isinstance(source, InMemorySource) and list(source.open_shard(0)) == rows
    stream = datasets.load_dataset("tatsu-lab/alpaca", split="train", streaming=True)
    assert HuggingFaceShardedSource.from_dataset(stream) is stream
    with pytest.raises(TypeError, match="pick a split"):
        HuggingFaceShardedSource.from_dataset(datasets.DatasetDict({"train": table}))


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "drop", "truncate"])
def test_faults_are_retried_by_the_policy(
    shaped: dict[str, ShapedRepo], hub: HubEmulator, fault: str
) -> None:
    expected = shaped["allenai/c4"].rows[("en", "train")]
    with FaultProxy(hub.url) as proxy:
        proxy.inject(fault, every=2, methods="GET", path_contains="/resolve/")
        source = HuggingFaceShardedSource(
            "allenai/c4",
            subset="en",
            storage_options={"endpoint": proxy.url},
            retry=RetryPolicy(initial_backoff=0.01),
        )
        assert [row["url"] for row in all_rows(source)] == [row["url"] for row in expected]
        assert proxy.fault_count > 0
        assert source.stats.retries == proxy.fault_count


def test_a_persistent_fault_exhausts_the_retries(
    shaped: dict[str, ShapedRepo], hub: HubEmulator
) -> None:
    with FaultProxy(hub.url) as proxy:
        proxy.inject("503", methods="GET", path_contains="/resolve/")
        source = HuggingFaceShardedSource(
            "tatsu-lab/alpaca",
            storage_options={"endpoint": proxy.url},
            retry=RetryPolicy(max_retries=2, initial_backoff=0.01),
        )
        with pytest.raises(RetriesExhaustedError, match="3 attempts") as caught:
            source.row_counts()
    assert caught.value.path == source.shard_names[0]


def test_hub_answers_429_and_5xx_are_transient() -> None:
    # What the hf:// files raise for an error answer (io/filesystem.py), classified by its code.
    url = "http://hub/datasets/org/name/resolve/sha/data.parquet"
    for status, transient in ((429, True), (500, True), (503, True), (401, False), (404, False)):
        answer = urllib.error.HTTPError(url, status, "from the Hub", None, None)
        assert is_transient(answer) is transient
