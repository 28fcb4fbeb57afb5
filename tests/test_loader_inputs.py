"""What users pass to AsyncDataLoader, the way they pass it: every kind of source, settings that
could be silently ignored, tampered states, a loop over the loader run twice, and resumability
said at construction."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    AsyncDataLoader,
    JsonShardedSource,
    LoaderStateError,
    ParquetShardedSource,
    SchemaMismatchError,
)
from easydata_grain.distributed import Hosts
from easydata_grain.sources.in_memory import InMemorySource


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """a.parquet (ids 0..9), b.parquet (10..19), c.jsonl (20..24), arr.json (JSON array 30..33)."""
    pq.write_table(pa.table({"id": list(range(10))}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": list(range(10, 20))}), tmp_path / "b.parquet")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(20, 25)))
    (tmp_path / "arr.json").write_text(json.dumps([{"id": i} for i in range(30, 34)]))
    return tmp_path


def ids(loader: AsyncDataLoader) -> list[int]:
    return [i for batch in loader for i in batch["id"].tolist()]


# -- #11: the kind of source -------------------------------------------------------------------


def test_paths_build_the_file_source_their_extension_names(files: Path) -> None:
    cases: list[tuple[Any, type, list[int]]] = [
        (str(files / "*.parquet"), ParquetShardedSource, list(range(20))),
        (files / "a.parquet", ParquetShardedSource, list(range(10))),
        ([files / "a.parquet", str(files / "b.parquet")], ParquetShardedSource, list(range(20))),
        (str(files / "c.jsonl"), JsonShardedSource, list(range(20, 25))),
        (files / "arr.json", JsonShardedSource, list(range(30, 34))),
    ]
    mixed = AsyncDataLoader([files / "a.parquet", files / "c.jsonl"], batch_size=4)
    assert sorted(ids(mixed)) == [*range(10), *range(20, 25)]  # one source per format
    for given, kind, expected in cases:
        loader = AsyncDataLoader(given, batch_size=4)
        assert isinstance(loader.source, kind) and loader.mode == "indexed", given
        assert ids(loader) == expected, given


def test_in_memory_data_runs_in_indexed_mode(files: Path) -> None:
    rows = [{"id": i, "tokens": [i, i + 1]} for i in range(10)]
    for given in (
        rows,
        {"id": list(range(10)), "tokens": [[i, i + 1] for i in range(10)]},
        pa.Table.from_pylist(rows),
    ):
        loader = AsyncDataLoader(given, batch_size=4, shuffle_buffer_size=5, seed=1)
        assert isinstance(loader.source, InMemorySource) and loader.mode == "indexed"
        got = [b for b in loader]
        assert sorted(i for b in got for i in b["id"].tolist()) == list(range(10))
        assert all(b["tokens"].shape[1] == 2 for b in got)
        assert loader.resumable


def test_a_map_style_datasets_dataset_runs_in_indexed_mode_and_resumes() -> None:
    from datasets import Dataset

    dataset = Dataset.from_dict({"id": list(range(50)), "text": [f"t{i}" for i in range(50)]})
    loader = AsyncDataLoader(dataset, batch_size=8, shuffle_buffer_size=16, seed=2)
    assert loader.mode == "indexed" and loader.resumable
    expected = [b["id"].tolist() for b in loader]
    assert sorted(i for b in expected for i in b) == list(range(50))
    first = AsyncDataLoader(dataset, batch_size=8, shuffle_buffer_size=16, seed=2)
    next(first), next(first)
    resumed = AsyncDataLoader(dataset, batch_size=8, shuffle_buffer_size=16, seed=2)
    resumed.set_state(json.loads(json.dumps(first.get_state())))
    assert [b["id"].tolist() for b in resumed] == expected[2:]
    # A shuffled or selected dataset reads through its indices.
    picked = dataset.select([5, 3, 1])
    assert ids(AsyncDataLoader(picked, batch_size=8)) == [5, 3, 1]


@pytest.mark.parametrize(
    "given",
    [42, None, 3.5, [1, 2], np.arange(4), {"id": 3}, b"data/*.parquet", [[{"id": 1}]]],
    ids=["int", "None", "float", "list-of-ints", "ndarray", "dict-of-scalar", "bytes", "nested"],
)
def test_anything_else_is_a_type_error_that_says_what_to_pass(given: Any) -> None:
    with pytest.raises(TypeError, match="Pass a source"):
        AsyncDataLoader(given)


def test_rows_with_different_fields_are_refused() -> None:
    with pytest.raises(SchemaMismatchError, match="Row 1"):
        AsyncDataLoader([{"id": 1}, {"idx": 2}])


# -- #12: sources in a list are checked against each other -----------------------------------------


def test_sources_in_a_list_must_give_the_same_fields_and_types(files: Path) -> None:
    parquet = ParquetShardedSource(str(files / "a.parquet"))
    (files / "other.jsonl").write_text('{"id": "x", "extra": 1}\n')
    (files / "texts.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(SchemaMismatchError, match=r"extra fields \['extra'\]") as info:
        AsyncDataLoader([parquet, JsonShardedSource(str(files / "other.jsonl"))])
    assert "a.parquet" in str(info.value) and "other.jsonl" in str(info.value)
    with pytest.raises(SchemaMismatchError, match=r"id \(int vs str\)"):
        AsyncDataLoader([parquet, JsonShardedSource(str(files / "texts.jsonl"))])
    # Matching sources read together, with the same keys and dtypes in every batch.
    loader = AsyncDataLoader([parquet, JsonShardedSource(str(files / "c.jsonl"))], batch_size=3)
    batches = list(loader)
    assert {(tuple(b), b["id"].dtype) for b in batches} == {(("id",), np.dtype(np.int64))}
    assert sorted(i for b in batches for i in b["id"].tolist()) == [*range(10), *range(20, 25)]


# -- #13: settings that were silently ignored or overridden -------------------------------------


def test_batch_size_and_global_batch_size_must_agree(files: Path) -> None:
    path = str(files / "a.parquet")
    with pytest.raises(ValueError, match="disagree"):
        AsyncDataLoader(path, batch_size=16, global_batch_size=32)
    with pytest.raises(ValueError, match="disagree"):
        AsyncDataLoader(path, batch_size=8, global_batch_size=32, hosts=Hosts(0, 2))
    assert (
        AsyncDataLoader(path, batch_size=16, global_batch_size=32, hosts=Hosts(1, 2)).batch_size
        == 16
    )
    assert AsyncDataLoader(path, global_batch_size=4).batch_size == 4
    assert AsyncDataLoader(path).batch_size == 8


@pytest.mark.parametrize("shuffle", [0, 4])
def test_a_second_loop_runs_the_next_epoch_exactly_resumable(files: Path, shuffle: int) -> None:
    def make() -> AsyncDataLoader:
        return AsyncDataLoader(
            str(files / "*.parquet"), batch_size=3, shuffle_buffer_size=shuffle, seed=5
        )

    loader = make()
    epochs = [ids(loader) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(20))
    if shuffle:
        assert epochs[0] != epochs[1] != epochs[2]
    # A state saved after the first loop resumes into the second.
    first = make()
    ids(first)
    after = json.loads(json.dumps(first.get_state()))
    resumed = make()
    resumed.set_state(after)
    assert ids(resumed) == epochs[1]
    # A state saved in the middle of the second loop resumes there.
    middle = make()
    ids(middle)
    with pytest.raises(StopIteration):  # an ended loop's iterator stays ended ...
        next(middle)
    second = iter(middle)  # ... and the next loop (iter) starts the next pass
    head = [i for _ in range(2) for i in next(second)["id"].tolist()]
    state = json.loads(json.dumps(middle.get_state()))
    resumed = make()
    resumed.set_state(state)
    assert head + ids(resumed) == epochs[1]
    assert ids(resumed) == epochs[2]


def test_a_second_loop_over_a_stream_reads_it_again() -> None:
    from datasets import IterableDataset

    def rows() -> Any:
        yield from ({"id": i} for i in range(7))

    loader = AsyncDataLoader(IterableDataset.from_generator(rows), batch_size=2)
    assert ids(loader) == list(range(7)) and ids(loader) == list(range(7))
    with pytest.warns(UserWarning, match="cannot be checkpointed"):
        one_shot = AsyncDataLoader(iter([{"id": i} for i in range(3)]), batch_size=2)
    assert ids(one_shot) == [0, 1, 2]
    with pytest.raises(ValueError, match="one-shot iterator"):
        ids(one_shot)


# -- #14: resumability is known at construction ---------------------------------------------------


def test_resumability_is_said_at_construction(files: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = AsyncDataLoader(str(files / "a.parquet"))
    assert loader.resumable and loader.not_resumable_reason is None
    with pytest.warns(UserWarning, match="cannot be checkpointed"):
        stream = AsyncDataLoader(iter([{"id": 1}]))
    assert not stream.resumable and "state_dict" in stream.not_resumable_reason


# -- #9: every field of a state is validated ------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("global_position", 80.0, "global_position is 80.0"),
        ("global_position", True, "global_position is True"),
        ("global_position", "80", "global_position is '80'"),
        ("global_position", -7, "global_position is -7"),
        ("global_position", 6, "not a multiple"),
        ("hosts", 0, "hosts is 0"),
        ("hosts", True, "hosts is True"),
        ("hosts", 2.0, "hosts is 2.0"),
        ("batches", -1, "batches is -1"),
        ("pass", 0.5, "pass is 0.5"),
        ("version", True, "version True"),
        ("surprise", 1, r"unknown fields \['surprise'\]"),
    ],
)
def test_a_tampered_state_is_refused_at_set_state(
    files: Path, field: str, value: Any, message: str
) -> None:
    path = str(files / "*.parquet")
    saver = AsyncDataLoader(path, global_batch_size=4, hosts=Hosts(0, 2))
    next(saver)
    state = saver.get_state()
    assert state["global_position"] == 4
    state[field] = value
    restorer = AsyncDataLoader(path, global_batch_size=4, hosts=Hosts(0, 1))
    with pytest.raises(LoaderStateError, match=message):
        restorer.set_state(state)
