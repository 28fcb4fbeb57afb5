"""DatasetsStreamSource: Hub splits in formats our indexed sources cannot read (CSV, text,
Arrow, JSON under a ``field``) and without a Parquet export, streamed by ``datasets`` one shard
per file, against the Hub emulator (the ``hub`` fixture). The reference for every row is
``datasets.load_dataset(..., streaming=True)`` on the same emulator.
"""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import datasets
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    DatasetsStreamSource,
    Hosts,
    HuggingFaceShardedSource,
    LoaderStateError,
    MissingColumnError,
    ShardNotFoundError,
    UnsupportedFormatError,
)
from easydata_grain.sources.protocol import IndexedSource, ShardedSource
from easydata_grain.sources.transformed import TransformedShardedSource
from ops.hub_emulator import HubEmulator, make_repo, repo_dir, write_files
from tests.helpers import plain

datasets.logging.set_verbosity_error()
datasets.disable_progress_bars()

_seek_settings = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CSV_SIZES = (30, 25, 41)
TYPED_FEATURES = [
    {"name": "id", "dtype": "int32"},
    {"name": "text", "dtype": "string"},
    {"name": "score", "dtype": "float32"},
]


def _csv(first: int, count: int, sep: str = ",") -> bytes:
    """CSV rows with ids ``first..``, quoted text holding the separator every 7th row."""
    lines = [sep.join(["id", "text", "score"])]
    for i in range(first, first + count):
        text = f'"row {i}{sep} quoted"' if i % 7 == 0 else f"row {i}"
        lines.append(sep.join([str(i), text, str(i * 0.5)]))
    return ("\n".join(lines) + "\n").encode()


def _arrow(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _csv_files(sizes: tuple[int, ...] = CSV_SIZES, sep: str = ",") -> dict[str, bytes]:
    starts = list(itertools.accumulate((0, *sizes)))
    return {f"data/train-{i}.csv": _csv(starts[i], n, sep) for i, n in enumerate(sizes)}


REPOS: dict[str, dict[str, Any]] = {
    # three CSV files, no Parquet export
    "stream-fallback/csv": {"files": _csv_files()},
    # ';'-separated CSV with declared features (datasets then iterates Arrow tables, typed)
    "stream-fallback/csv-typed": {
        "files": _csv_files((12, 20), sep=";"),
        "readme_yaml": {
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": "train", "path": "data/*.csv"}],
                    "sep": ";",
                }
            ],
            "dataset_info": {"features": TYPED_FEATURES},
        },
    },
    # text files: one row per line, blank lines included
    "stream-fallback/text": {
        "files": {
            "data/train-a.txt": "".join(f"line {i}\n" for i in range(23)).encode(),
            "data/train-b.txt": b"x\n\ny \xc3\xa9\nz\n",
        }
    },
    # Arrow stream files
    "stream-fallback/arrow": {
        "files": {
            "data/train-0.arrow": _arrow([{"a": i, "b": [i] * (i % 3)} for i in range(9)]),
            "data/train-1.arrow": _arrow([{"a": i, "b": [i] * (i % 3)} for i in range(9, 13)]),
        }
    },
    # JSON whose rows sit under a field (SQuAD-like)
    "stream-fallback/json-field": {
        "files": {
            f"data/train-{k}.json": json.dumps(
                {"version": 1, "data": [{"q": i, "tags": ["t"] * (i % 2)} for i in rows]}
            ).encode()
            for k, rows in enumerate((range(6), range(6, 10)))
        },
        "readme_yaml": {
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": "train", "path": "data/*.json"}],
                    "field": "data",
                }
            ]
        },
    },
}


@pytest.fixture(scope="module")
def repos(hub: HubEmulator) -> dict[str, DatasetsStreamSource]:
    """The repos on the emulator, and a source for each (built once: they are read-only)."""
    for repo_id, spec in REPOS.items():
        make_repo(hub.root, repo_id, spec["files"], readme_yaml=spec.get("readme_yaml"))
    return {repo_id: DatasetsStreamSource(repo_id) for repo_id in REPOS}


def reference(repo_id: str, split: str = "train", **kwargs: Any) -> list[dict[str, Any]]:
    return list(datasets.load_dataset(repo_id, split=split, streaming=True, **kwargs))


def shard_rows(source: DatasetsStreamSource) -> list[list[dict[str, Any]]]:
    return [list(source.open_shard(name)) for name in source.shard_names]


@pytest.mark.parametrize("repo_id", list(REPOS))
def test_rows_equal_datasets_streaming_shard_by_shard(
    repos: dict[str, DatasetsStreamSource], hub: HubEmulator, repo_id: str
) -> None:
    source = repos[repo_id]
    commit = hub.commit_sha(repo_id)
    files = sorted(path for path in REPOS[repo_id]["files"])
    assert source.commit == commit
    assert source.shard_names == [f"hf://datasets/{repo_id}@{commit}/{path}" for path in files]
    shards = shard_rows(source)
    assert all(shards)
    assert [row for rows in shards for row in rows] == reference(repo_id, revision=commit)
    # each shard is that file's rows: datasets streaming the one file under the same config
    for path, rows in zip(files, shards, strict=True):
        alone = reference(repo_id, revision=commit, data_files={"train": [path]})
        assert rows == alone


def test_csv_rows_are_the_written_rows(repos: dict[str, DatasetsStreamSource]) -> None:
    shards = shard_rows(repos["stream-fallback/csv"])
    assert [len(rows) for rows in shards] == list(CSV_SIZES)
    ids = [row["id"] for rows in shards for row in rows]
    assert ids == list(range(sum(CSV_SIZES)))
    assert shards[0][7]["text"] == "row 7, quoted"
    typed = shard_rows(repos["stream-fallback/csv-typed"])
    assert typed[0][7] == {"id": 7, "text": "row 7; quoted", "score": 3.5}


def test_a_streaming_source_not_an_indexed_one(repos: dict[str, DatasetsStreamSource]) -> None:
    source = repos["stream-fallback/csv"]
    assert isinstance(source, ShardedSource)
    assert not isinstance(source, IndexedSource)
    assert not hasattr(source, "row_counts")
    text = repr(source)
    assert "streaming mode over datasets.load_dataset(streaming=True)" in text
    assert "one shard per file" in text and "3 csv shard(s)" in text
    loader = AsyncDataLoader(source, batch_size=4)
    assert "mode      streaming" in loader.describe()
    assert "DatasetsStreamSource: 3 shard(s)" in loader.describe()


@pytest.mark.parametrize("repo_id", ["stream-fallback/csv", "stream-fallback/csv-typed"])
@_seek_settings
@given(data=st.data())
def test_seek_is_the_suffix_of_a_full_read(
    repos: dict[str, DatasetsStreamSource], repo_id: str, data: st.DataObject
) -> None:
    source = repos[repo_id]
    full = _full_shards(repo_id, source)
    shard = data.draw(st.integers(0, len(full) - 1), label="shard")
    row = data.draw(st.integers(0, len(full[shard]) + 2), label="row")
    by_name = source.open_shard_at_row(source.shard_names[shard], row)
    assert list(by_name) == full[shard][row:]


_FULL: dict[str, list[list[dict[str, Any]]]] = {}


def _full_shards(repo_id: str, source: DatasetsStreamSource) -> list[list[dict[str, Any]]]:
    if repo_id not in _FULL:
        _FULL[repo_id] = shard_rows(source)
    return _FULL[repo_id]


def test_seek_by_position_and_bad_shards(repos: dict[str, DatasetsStreamSource]) -> None:
    source = repos["stream-fallback/text"]
    full = shard_rows(source)
    assert list(source.open_shard_at_row(1, 2)) == full[1][2:]
    for shard in (2, -1, "hf://datasets/stream-fallback/text@0/none.txt"):
        with pytest.raises(ShardNotFoundError):
            source.open_shard_at_row(shard, 0)
    with pytest.raises(ValueError, match="row must be"):
        source.open_shard_at_row(0, -1)


def _ids(loader: AsyncDataLoader, batches: int | None = None) -> list[list[int]]:
    return [plain(batch["id"]) for batch in itertools.islice(loader, batches)]


@pytest.mark.parametrize("steps", [1, 6, 13, 20])
def test_loader_resume_equals_the_uninterrupted_run(
    repos: dict[str, DatasetsStreamSource], steps: int
) -> None:
    source = repos["stream-fallback/csv"]

    def make() -> AsyncDataLoader:
        return AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=16, seed=7)

    whole = _ids(make())
    assert sorted(itertools.chain.from_iterable(whole)) == list(range(sum(CSV_SIZES)))
    interrupted = make()
    assert _ids(interrupted, steps) == whole[:steps]
    state = json.loads(json.dumps(interrupted.get_state()))
    resumed = make()
    resumed.set_state(state)
    assert _ids(resumed, 3) == whole[steps : steps + 3]
    again = make()  # a second interruption, from the resumed loader's state
    again.set_state(resumed.get_state())
    assert _ids(again) == whole[steps + 3 :]


def test_a_second_loop_reads_the_stream_again(repos: dict[str, DatasetsStreamSource]) -> None:
    loader = AsyncDataLoader(repos["stream-fallback/csv"], batch_size=32, shuffle_buffer_size=8)
    first, second = _ids(loader), _ids(loader)
    assert sorted(itertools.chain(*first)) == sorted(itertools.chain(*second))


def test_two_hosts_split_disjointly_and_completely(
    repos: dict[str, DatasetsStreamSource],
) -> None:
    source = repos["stream-fallback/csv"]
    ids, steps = [], []
    for host in range(2):
        loader = AsyncDataLoader(
            source, global_batch_size=8, shuffle_buffer_size=16, seed=3, hosts=Hosts(host, 2)
        )
        batches = list(loader)
        steps.append(len(batches))
        ids.append(
            [i for b in batches for i, real in zip(b["id"], b["sample_mask"], strict=True) if real]
        )
    assert steps[0] == steps[1]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(sum(CSV_SIZES)))


def test_the_commit_is_pinned_and_in_the_fingerprint(hub: HubEmulator) -> None:
    repo_id = "stream-fallback/csv-updated"
    make_repo(hub.root, repo_id, {"data/train.csv": _csv(0, 10)})
    old = hub.commit_sha(repo_id)
    source = DatasetsStreamSource(repo_id)
    before = AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=4, seed=1)
    first = _ids(before, 1)
    state = before.get_state()
    write_files(hub.root, repo_id, {"data/train.csv": _csv(100, 6)})
    new = hub.commit_sha(repo_id)
    assert new != old and source.commit == old
    rest = _ids(before)  # the loader built before the update reads on at `old`
    assert sorted(i for batch in first + rest for i in batch) == list(range(10))
    latest = DatasetsStreamSource(repo_id)
    assert latest.commit == new and latest.identities() != source.identities()
    assert [row["id"] for row in latest.open_shard(0)] == list(range(100, 106))
    changed = AsyncDataLoader(latest, batch_size=4, shuffle_buffer_size=4, seed=1)
    assert changed.fingerprint() != before.fingerprint()
    with pytest.raises(LoaderStateError, match="different pipeline"):
        changed.set_state(state)
    pinned = AsyncDataLoader(
        DatasetsStreamSource(repo_id, revision=old), batch_size=4, shuffle_buffer_size=4, seed=1
    )
    pinned.set_state(state)
    assert _ids(pinned) == rest


def test_fluent_map_and_filter_stream_through_the_loader(
    repos: dict[str, DatasetsStreamSource],
) -> None:
    """``source.map(...).filter(...)`` (the TransformableSource methods) is a streaming source
    whose rows are the stream's, mapped and filtered, shard by shard and through the loader."""
    source = repos["stream-fallback/csv"]
    made = source.map(lambda row: {**row, "twice": row["id"] * 2}).filter(
        lambda row: row["id"] % 3 == 0
    )
    assert isinstance(made, TransformedShardedSource) and not isinstance(made, IndexedSource)
    assert made.source is source and len(made.transform.steps) == 2
    expected = [
        {**row, "twice": row["id"] * 2}
        for row in reference("stream-fallback/csv")
        if row["id"] % 3 == 0
    ]
    assert [row for shard in made.shard_names for row in made.open_shard(shard)] == expected
    loader = AsyncDataLoader(made, batch_size=4, shuffle_buffer_size=8, seed=2, num_epochs=1)
    batches = list(loader)
    pairs = sorted(
        (i, t) for b in batches for i, t in zip(plain(b["id"]), plain(b["twice"]), strict=True)
    )
    assert pairs == sorted((row["id"], row["twice"]) for row in expected)


def test_columns_are_projected(repos: dict[str, DatasetsStreamSource]) -> None:
    source = DatasetsStreamSource("stream-fallback/csv", columns=["text"])
    rows = [row for shard in source.shard_names for row in source.open_shard(shard)]
    assert rows == [{"text": row["text"]} for row in reference("stream-fallback/csv")]
    wrong = DatasetsStreamSource("stream-fallback/csv", columns=["Text"])
    with pytest.raises(MissingColumnError, match="Text"):
        next(wrong.open_shard(0))


def test_a_transient_fault_reopens_the_shard_at_the_next_row(
    repos: dict[str, DatasetsStreamSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = DatasetsStreamSource("stream-fallback/csv")
    expected = shard_rows(repos["stream-fallback/csv"])[2]
    opened: list[int] = []
    stream = source._stream

    def flaky(index: int, row: int) -> Any:
        opened.append(row)
        rows = iter(stream(index, row))
        if len(opened) == 1:  # the first open drops the connection after 5 rows
            return itertools.chain(itertools.islice(rows, 5), _raise(ConnectionError("reset")))
        return rows

    monkeypatch.setattr(source, "_stream", flaky)
    assert list(source.open_shard_at_row(2, 3)) == expected[3:]
    assert opened == [3, 8] and source.stats.retries == 1


def _raise(exc: Exception) -> Any:
    raise exc
    yield


def test_a_local_directory_reads_as_the_repo(
    repos: dict[str, DatasetsStreamSource], hub: HubEmulator
) -> None:
    folder = repo_dir(hub.root, "stream-fallback/text")
    source = DatasetsStreamSource(str(folder))
    assert source.commit is None
    assert shard_rows(source) == shard_rows(repos["stream-fallback/text"])
    assert all(identity.count("|") == 2 for identity in source.identities())


def test_loading_scripts_are_not_run(hub: HubEmulator) -> None:
    make_repo(
        hub.root,
        "stream-fallback/scripted",
        {"scripted.py": b"raise SystemExit\n", "data/train.csv": b"a\n1\n"},
    )
    with pytest.raises(UnsupportedFormatError, match="loading script"):
        DatasetsStreamSource("stream-fallback/scripted")
    with pytest.raises(UnsupportedFormatError, match="loading script"):
        HuggingFaceShardedSource("stream-fallback/scripted")


# -- through HuggingFaceShardedSource: it returns a DatasetsStreamSource for such repos --------


def test_hugging_face_sharded_source_falls_back_to_streaming(
    repos: dict[str, DatasetsStreamSource], hub: HubEmulator
) -> None:
    repo_id = "stream-fallback/csv"
    source = HuggingFaceShardedSource(repo_id)
    assert isinstance(source, DatasetsStreamSource)
    assert not isinstance(source, IndexedSource)
    assert source.shard_names == repos[repo_id].shard_names
    assert [row for rows in shard_rows(source) for row in rows] == reference(repo_id)
    assert "no Parquet export" in repr(source)
    loader = AsyncDataLoader(source, batch_size=4, shuffle_buffer_size=8, seed=2)
    assert "mode      streaming" in loader.describe()
    assert "no Parquet export" in loader.describe()  # why it streams
    whole = _ids(loader)
    interrupted = AsyncDataLoader(
        HuggingFaceShardedSource(repo_id), batch_size=4, shuffle_buffer_size=8, seed=2
    )
    assert _ids(interrupted, 5) == whole[:5]
    resumed = AsyncDataLoader(
        HuggingFaceShardedSource(repo_id), batch_size=4, shuffle_buffer_size=8, seed=2
    )
    resumed.set_state(interrupted.get_state())
    assert _ids(resumed) == whole[5:]
    typed = HuggingFaceShardedSource("stream-fallback/text", columns=["text"])
    assert isinstance(typed, DatasetsStreamSource) and typed.columns == ["text"]
