"""AsyncDataLoader behaviour: batch types, collation and padding, stats, and every bad input."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    AsyncDataLoader,
    CollateError,
    LoaderStateError,
    ParquetShardedSource,
    RetryPolicy,
)
from easydata_grain.fingerprint import differences
from easydata_grain.synthetic import synthetic_table, write_parquet_dataset
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy
from tests.resume_worker import KeepNotDivisible, upper_text

LENGTHS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]


@pytest.fixture(scope="module")
def ragged_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One shard of 12 rows: ``id``, ``input_ids`` of lengths ``LENGTHS`` (values id*100+j),
    ``text``, ``score`` (float) and ``pair`` (fixed-size lists of 2)."""
    path = tmp_path_factory.mktemp("ragged") / "ragged.parquet"
    table = pa.table(
        {
            "id": pa.array(range(len(LENGTHS)), pa.int64()),
            "input_ids": pa.array(
                [[i * 100 + j for j in range(n)] for i, n in enumerate(LENGTHS)],
                pa.list_(pa.int32()),
            ),
            "text": [f"row {i} ünïcode" for i in range(len(LENGTHS))],
            "score": pa.array([i / 4 for i in range(len(LENGTHS))], pa.float32()),
            "pair": pa.array([[i, -i] for i in range(len(LENGTHS))], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, path, row_group_size=5)
    return str(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_parquet_dataset(
        tmp_path_factory.mktemp("data"), num_shards=3, rows_per_shard=20, row_group_size=6
    )


def loader_for(paths: str | list[str], **kwargs: Any) -> AsyncDataLoader:
    columns = kwargs.pop("columns", None)
    return AsyncDataLoader(ParquetShardedSource(paths, columns=columns), **kwargs)


# -- batches ------------------------------------------------------------------------------------


def test_batches_are_dicts_of_numpy_arrays_and_text_is_str(ragged_path: str) -> None:
    loader = loader_for(ragged_path, batch_size=5, columns=["id", "text", "score", "pair"])
    batches = list(loader)
    assert [len(b["id"]) for b in batches] == [5, 5, 2]
    first = batches[0]
    assert set(first) == {"id", "text", "score", "pair"}
    assert isinstance(first["id"], np.ndarray) and first["id"].dtype == np.int64
    assert first["id"].tolist() == [0, 1, 2, 3, 4]
    # Scalar columns pass through Python numbers: a float32 column batches as float64.
    assert first["score"].dtype.kind == "f" and first["score"].tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert first["pair"].shape == (5, 2) and first["pair"][3].tolist() == [3, -3]
    assert type(first["text"]) is list
    assert all(type(t) is str for t in first["text"])
    assert first["text"][1] == "row 1 ünïcode"


def test_ragged_token_lists_raise_naming_the_field(ragged_path: str) -> None:
    loader = loader_for(ragged_path, batch_size=4)
    with pytest.raises(CollateError, match=r"Field 'input_ids' is ragged.*pad=True"):
        next(loader)


def test_a_batch_of_equal_lengths_needs_no_padding(ragged_path: str) -> None:
    # A batch of one row is never ragged: it stacks as it is, without a mask.
    batch = next(loader_for(ragged_path, batch_size=1, columns=["input_ids"]))
    assert batch["input_ids"].tolist() == [[0, 1, 2]] and "input_ids_mask" not in batch


@pytest.mark.parametrize("pad_value", [0, -1])
def test_pad_true_pads_to_the_longest_in_the_batch_with_a_mask(
    ragged_path: str, pad_value: int
) -> None:
    batches = list(loader_for(ragged_path, batch_size=5, pad=True, pad_value=pad_value))
    assert [b["input_ids"].shape for b in batches] == [(5, 5), (5, 9), (2, 8)]
    for b, batch in enumerate(batches):
        ids, mask = batch["input_ids"], batch["input_ids_mask"]
        assert ids.dtype == np.int32 and mask.dtype == np.bool_ and mask.shape == ids.shape
        for r, row_id in enumerate(batch["id"].tolist()):
            n = LENGTHS[row_id]
            assert row_id == b * 5 + r
            assert ids[r, :n].tolist() == [row_id * 100 + j for j in range(n)]
            assert (ids[r, n:] == pad_value).all()
            assert mask[r].tolist() == [True] * n + [False] * (ids.shape[1] - n)
        assert isinstance(batch["text"], list)


def test_pad_to_a_fixed_length(ragged_path: str) -> None:
    loader = loader_for(ragged_path, batch_size=4, pad={"input_ids": 9})
    batches = list(loader)
    assert all(b["input_ids"].shape == (len(b["id"]), 9) for b in batches)
    assert batches[2]["input_ids_mask"].sum(axis=1).tolist() == LENGTHS[8:12]
    short = loader_for(ragged_path, batch_size=4, pad={"input_ids": 8})
    next(short)
    with pytest.raises(CollateError, match=r"'input_ids' has a row of length 9.*pad length 8"):
        next(short)


# -- a state from another pipeline --------------------------------------------------------------

BASE = {"batch_size": 4, "shuffle_buffer_size": 8, "seed": 0, "num_epochs": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 1}, r"seed: saved 0, now 1"),
        ({"batch_size": 5}, r"global_batch_size: saved 4, now 5"),
        ({"shuffle_buffer_size": 9}, r"shuffle_buffer_size: saved 8, now 9"),
        ({"shuffle_buffer_size": None}, r"shuffle_buffer_size: saved 8, now 0"),
        ({"num_epochs": 2}, r"num_epochs: saved 1, now 2"),
        ({"drop_remainder": True}, r"drop_remainder: saved False, now True"),
        ({"pad": True}, r"pad: saved .*'pad': False.*now .*'pad': True"),
        ({"transforms": [KeepNotDivisible(3)]}, r"transforms: saved \[\], now \[.*KeepNot"),
        ({"transforms": [upper_text]}, r"transforms: saved \[\], now \[.*upper_text"),
        ({"worker_processes": 2}, r"worker_processes: saved 0, now 2"),
    ],
)
def test_a_state_from_another_pipeline_names_what_differs(
    dataset: list[str], change: dict[str, Any], message: str
) -> None:
    saver = loader_for(dataset, columns=["id", "text"], **BASE)
    next(saver)
    state = saver.get_state()
    restorer = loader_for(dataset, columns=["id", "text"], **{**BASE, **change})
    with pytest.raises(LoaderStateError, match=r"different pipeline.*" + message) as info:
        restorer.set_state(state)
    # Only what was changed is named.
    assert str(info.value).count(", now ") == 1
    # Refused before any iteration: nothing was started (no worker processes spawned).
    assert restorer._iterator == []


def test_a_transform_with_other_parameters_is_another_pipeline(dataset: list[str]) -> None:
    saver = loader_for(dataset, columns=["id"], transforms=[KeepNotDivisible(3)])
    next(saver)
    restorer = loader_for(dataset, columns=["id"], transforms=[KeepNotDivisible(4)])
    with pytest.raises(LoaderStateError, match=r"transforms: saved .*'divisor': 3.*'divisor': 4"):
        restorer.set_state(saver.get_state())


def test_a_state_from_other_data_is_refused(dataset: list[str], tmp_path: Path) -> None:
    other = write_parquet_dataset(tmp_path / "other", num_shards=2, rows_per_shard=20, seed=1)
    saver = loader_for(dataset, columns=["id"])
    next(saver)
    with pytest.raises(
        LoaderStateError, match=r"rows_per_epoch: saved 60, now 40.*shards: saved 3"
    ):
        loader_for(other, columns=["id"]).set_state(saver.get_state())


def test_data_rewritten_in_place_is_another_pipeline(tmp_path: Path) -> None:
    paths = write_parquet_dataset(tmp_path, num_shards=2, rows_per_shard=20)
    saver = loader_for(paths, columns=["id"])
    next(saver)
    state = saver.get_state()
    pq.write_table(synthetic_table(20, first_id=20, seed=7), paths[1])  # Same rows, new content.
    stat = os.stat(paths[1])
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    with pytest.raises(LoaderStateError, match=r"sources: saved '[0-9a-f]+', now '[0-9a-f]+'"):
        loader_for(paths, columns=["id"]).set_state(state)
    # Rewritten identically (same bytes, same mtime) it is the same data.
    loader_for(paths, columns=["id"]).set_state(loader_for(paths, columns=["id"]).get_state())


def test_worker_count_change_is_refused_without_spawning(dataset: list[str]) -> None:
    """Grain silently changes the stream when the worker count changes: the fingerprint holds it."""
    two = loader_for(dataset, columns=["id"], worker_processes=2)
    three = loader_for(dataset, columns=["id"], worker_processes=3)
    assert differences(two.fingerprint(), three.fingerprint()) == [
        "worker_processes: saved 2, now 3"
    ]
    in_process = loader_for(dataset, columns=["id"])
    state = {**in_process.get_state(), "fingerprint": two.fingerprint()}
    with pytest.raises(LoaderStateError, match="worker_processes: saved 2, now 3"):
        three.set_state(state)
    with pytest.raises(LoaderStateError, match="worker_processes: saved 2, now 0"):
        in_process.set_state(state)
    assert three._iterator == []


# -- a corrupted state --------------------------------------------------------------------------


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda state: {**state, key: value}


def _without(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda state: {k: v for k, v in state.items() if k != key}


CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "garbage JSON": (lambda s: '{"version": 1, "fingerprint": {', r"not valid JSON"),
    "JSON of a list": (lambda s: "[1, 2]", r"not an easydata-grain loader state.*got list"),
    "a number": (lambda s: 42, r"not an easydata-grain loader state.*got int"),
    "a grain state": (lambda s: s["iterator"], r"expected keys.*got \['next_index'\]"),
    "no iterator": (_without("iterator"), r"expected keys version, fingerprint, iterator"),
    "no fingerprint": (_without("fingerprint"), r"expected keys version, fingerprint, iterator"),
    "no version": (_without("version"), r"expected keys version, fingerprint, iterator"),
    "other version": (_set("version", 99), r"version 99 is not 5: it was saved by another version"),
    "version 4 (functions by name)": (_set("version", 4), r"version 4 is not 5"),
    "fingerprint missing keys": (_set("fingerprint", {"seed": 0}), r"different pipeline"),
    "empty iterator": (_set("iterator", {}), r"corrupted: KeyError: 'next_index'"),
    "iterator is null": (_set("iterator", None), r"corrupted: TypeError"),
    "iterator is a list": (_set("iterator", [3]), r"corrupted: TypeError"),
    "index is text": (_set("iterator", {"next_index": "abc"}), r"corrupted: TypeError"),
    "index negative": (_set("iterator", {"next_index": -4}), r"corrupted.*-4 is out of range"),
    "index past the end": (
        _set("iterator", {"next_index": 10**6}),
        r"corrupted.*1000000 is out of range",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_state_is_refused(dataset: list[str], name: str) -> None:
    corrupt, message = CORRUPTIONS[name]
    saver = loader_for(dataset, columns=["id"], batch_size=4)
    next(saver)
    state = saver.get_state()
    with pytest.raises(LoaderStateError, match=message):
        loader_for(dataset, columns=["id"], batch_size=4).set_state(corrupt(state))


def test_a_fingerprint_that_is_not_a_dict_is_refused(dataset: list[str]) -> None:
    state = loader_for(dataset, columns=["id"]).get_state()
    with pytest.raises(LoaderStateError):
        loader_for(dataset, columns=["id"]).set_state({**state, "fingerprint": "abc"})


@pytest.mark.parametrize("prefetch_enabled", [True, False])
def test_a_non_integer_position_is_refused_at_set_state(
    dataset: list[str], prefetch_enabled: bool
) -> None:
    state = loader_for(dataset, columns=["id"]).get_state()
    loader = loader_for(dataset, columns=["id"], prefetch_enabled=prefetch_enabled)
    with pytest.raises(LoaderStateError, match="corrupted"):
        loader.set_state({**state, "iterator": {"next_index": 2.5}})
        next(loader)


def test_a_state_is_accepted_as_json_text(dataset: list[str]) -> None:
    saver = loader_for(dataset, columns=["id"], batch_size=7, shuffle_buffer_size=5)
    next(saver)
    state = json.dumps(saver.get_state())
    expected = next(saver)["id"].tolist()
    restorer = loader_for(dataset, columns=["id"], batch_size=7, shuffle_buffer_size=5)
    restorer.set_state(state)
    assert next(restorer)["id"].tolist() == expected


@pytest.mark.parametrize("prefetch_enabled", [True, False])
def test_set_state_rolls_a_running_loader_back(dataset: list[str], prefetch_enabled: bool) -> None:
    kwargs = {"batch_size": 4, "shuffle_buffer_size": 10, "num_epochs": 2, "columns": ["id"]}
    expected = [b["id"].tolist() for b in loader_for(dataset, **kwargs)]
    loader = loader_for(dataset, prefetch_enabled=prefetch_enabled, **kwargs)
    for _ in range(2):
        next(loader)
    state = loader.get_state()
    for _ in range(5):
        next(loader)
    loader.set_state(state)
    assert [b["id"].tolist() for b in loader] == expected[2:]


def test_close_keeps_the_position(dataset: list[str]) -> None:
    loader = loader_for(dataset, batch_size=4, columns=["id"])
    for _ in range(5):
        next(loader)
    before = loader.get_state()
    loader.close()
    try:
        after = loader.get_state()
    except (RuntimeError, ValueError):
        return  # Refusing is fine too; a state that restarts at 0 is not.
    assert after == before


# -- bad data and bad arguments -----------------------------------------------------------------


def _empty_shard(path: Path) -> str:
    pq.write_table(synthetic_table(0).cast(synthetic_table(1).schema), path)
    return str(path)


def test_an_empty_source_is_an_error(tmp_path: Path) -> None:
    empty = _empty_shard(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match=r"has no rows.*nothing to train on"):
        loader_for(empty)
    other = _empty_shard(tmp_path / "empty2.parquet")
    with pytest.raises(ValueError, match=r"has no rows"):
        AsyncDataLoader([ParquetShardedSource(empty), ParquetShardedSource(other)])


def test_an_empty_shard_among_others_is_skipped(tmp_path: Path) -> None:
    full = write_parquet_dataset(tmp_path, num_shards=2, rows_per_shard=5)
    empty = _empty_shard(tmp_path / "shard-00000b.parquet")
    loader = loader_for([full[0], empty, full[1]], columns=["id"], batch_size=3)
    assert [b["id"].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_a_batch_larger_than_the_data(tmp_path: Path) -> None:
    paths = write_parquet_dataset(tmp_path, num_shards=2, rows_per_shard=5)
    with pytest.raises(
        ValueError, match=r"global batch of 11 rows is larger than the data \(10 rows over 1 epoch"
    ):
        loader_for(paths, batch_size=11, drop_remainder=True)
    # Without drop_remainder the one short batch is kept; over two epochs there is a full one.
    assert [len(b["id"]) for b in loader_for(paths, columns=["id"], batch_size=11)] == [10]
    two_epochs = loader_for(paths, columns=["id"], batch_size=11, drop_remainder=True, num_epochs=2)
    assert [len(b["id"]) for b in two_epochs] == [11]


class NotCallable:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": -1}, ValueError, r"batch_size must be an int >= 1, got -1"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
        ({"batch_size": 2.0}, ValueError, r"batch_size must be an int >= 1, got 2\.0"),
        ({"batch_size": True}, ValueError, r"batch_size must be an int >= 1, got True"),
        ({"prefetch_enabled": "yes"}, TypeError, r"prefetch_enabled must be a bool, got 'yes'"),
        ({"prefetch_enabled": 1}, TypeError, r"prefetch_enabled must be a bool, got 1"),
        ({"drop_remainder": None}, TypeError, r"drop_remainder must be a bool, got None"),
        ({"prefetch_workers": -1}, ValueError, r"prefetch_workers must be an int >= 0"),
        ({"prefetch_buffer_size": -2}, ValueError, r"prefetch_buffer_size must be an int >= 0"),
        ({"shuffle_buffer_size": -1}, ValueError, r"shuffle_buffer_size must be an int >= 0"),
        ({"seed": -1}, ValueError, r"seed must be an int >= 0"),
        ({"num_epochs": 0}, ValueError, r"num_epochs must be an int >= 1, got 0"),
        ({"worker_processes": -1}, ValueError, r"worker_processes must be an int >= 0"),
        ({"transforms": [42]}, TypeError, r"transforms must be Grain .* got 42"),
        ({"transforms": [NotCallable()]}, TypeError, r"transforms must be Grain .*NotCallable"),
        ({"pad": "yes"}, TypeError, r"pad must be a bool or a mapping"),
        ({"pad": {"input_ids": 0}}, ValueError, r"pad must map field names to positive lengths"),
        ({"pad_value": "x"}, TypeError, r"pad_value must be a number"),
    ],
)
def test_invalid_arguments(
    dataset: list[str], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        loader_for(dataset, **kwargs)


def test_no_source_at_all() -> None:
    with pytest.raises(ValueError, match="non-empty list of sources"):
        AsyncDataLoader([])


# -- stats --------------------------------------------------------------------------------------

STATS_KEYS = {
    "rows_per_s",
    "batches_per_s",
    "bytes_read",
    "bytes_per_s",
    "retries",
    "wait_fraction",
}


def test_stats_count_rows_and_batches(dataset: list[str]) -> None:
    loader = loader_for(dataset, columns=["id"], batch_size=7, transforms=[KeepNotDivisible(3)])
    before = loader.stats()
    assert set(before) >= STATS_KEYS
    assert all(before[k] == 0 for k in STATS_KEYS | {"batches", "rows"})
    batches = list(loader)  # 40 rows kept of 60: 5 batches of 7 and one of 5.
    stats = loader.stats()
    assert [len(b["id"]) for b in batches] == [7, 7, 7, 7, 7, 5]
    assert stats["batches"] == 6 and stats["rows"] == 40
    assert stats["elapsed_s"] > 0
    assert stats["rows_per_s"] == pytest.approx(40 / stats["elapsed_s"])
    assert stats["batches_per_s"] == pytest.approx(6 / stats["elapsed_s"])
    # Local files count the bytes read too (the projected column chunks of the row groups).
    assert stats["bytes_read"] == loader.source.stats.bytes_read > 0
    assert stats["bytes_per_s"] > 0 and stats["retries"] == 0
    assert 0 <= stats["wait_fraction"] <= 1


class SlowMap(grain.transforms.Map):
    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.004)
        return element


def test_wait_fraction_tells_input_bound_from_model_bound(dataset: list[str]) -> None:
    model_bound = loader_for(dataset, columns=["id"], batch_size=10, prefetch_buffer_size=6)
    model_bound.start_prefetch()
    for _ in range(6):
        next(model_bound)
        time.sleep(0.03)  # The "model" is the slow part; batches are ready when asked for.
    assert model_bound.stats()["wait_fraction"] < 0.5

    input_bound = loader_for(
        dataset, columns=["id"], batch_size=10, prefetch_enabled=False, transforms=[SlowMap()]
    )
    for _ in range(6):
        next(input_bound)
    assert input_bound.stats()["wait_fraction"] > 0.8


def test_stats_after_a_resume_describe_this_run(dataset: list[str]) -> None:
    saver = loader_for(dataset, columns=["id"], batch_size=5)
    for _ in range(6):
        next(saver)
    restorer = loader_for(dataset, columns=["id"], batch_size=5)
    restorer.set_state(saver.get_state())
    next(restorer)
    next(restorer)
    stats = restorer.stats()  # This process's batches and rows, over this process's time.
    assert stats["batches"] == 2 and stats["rows"] == 10
    assert stats["batches_per_s"] * stats["elapsed_s"] == pytest.approx(2)
    assert stats["rows_per_s"] * stats["elapsed_s"] == pytest.approx(10)


def test_stats_bytes_and_retries_from_a_store(
    s3_store: StoreEndpoint,
    fault_proxy: Callable[[StoreEndpoint], FaultProxy],
    dataset: list[str],
) -> None:
    bucket = s3_store.new_bucket("loader")
    for path in dataset:
        s3_store.upload(path, f"{bucket}/data/{Path(path).name}")
    proxy = fault_proxy(s3_store)
    source = ParquetShardedSource(
        f"{bucket}/data/*.parquet",
        storage_options=s3_store.storage_options(proxy.url),
        retry=RetryPolicy(max_retries=6, initial_backoff=0.01, max_backoff=0.05),
        columns=["id", "text"],
    )
    loader = AsyncDataLoader(source, batch_size=8, prefetch_workers=1)
    proxy.inject("503", every=3, methods=["GET"])
    seen = [i for batch in loader for i in batch["id"].tolist()]
    assert seen == list(range(60))
    stats = loader.stats()
    assert stats["rows"] == 60 and stats["batches"] == 8
    assert stats["bytes_read"] == source.stats.bytes_read > 0
    assert stats["bytes_per_s"] == pytest.approx(stats["bytes_read"] / stats["elapsed_s"])
    assert stats["retries"] == source.stats.retries > 0


def test_a_different_pad_length_is_a_different_pipeline(dataset: list[str]) -> None:
    state = loader_for(dataset, columns=["id", "input_ids"], pad={"input_ids": 300}).get_state()
    other = loader_for(dataset, columns=["id", "input_ids"], pad={"input_ids": 400})
    with pytest.raises(LoaderStateError, match="pad"):
        other.set_state(state)
