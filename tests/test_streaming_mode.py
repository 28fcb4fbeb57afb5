"""Streaming mode: a source and a shuffle buffer as Grain IterDatasets, resumed exactly via JSON."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import JsonShardedSource, ParquetShardedSource
from easydata_grain.graph.shuffle_buffer import ShuffleBufferIterDataset
from easydata_grain.graph.stream_source import SourceIterDataset, read_rows_at
from easydata_grain.io.errors import NotResumableError
from easydata_grain.synthetic import write_parquet_dataset
from tests.helpers import plain

datasets.logging.set_verbosity_error()
datasets.disable_progress_bars()

_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_counter = itertools.count()
Build = Callable[[], grain.IterDataset]


def _rows(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": f"row {i} " + "é" * (i % 4), "tokens": list(range(i % 5 + 1))}
        for i in range(first, first + count)
    ]


def _write_shards(directory: Path, sizes: list[int], fmt: str, group: int) -> list[str]:
    """Shards of ``sizes`` rows with ids 0..N-1 in order, as Parquet or JSON Lines."""
    directory.mkdir(parents=True)
    paths, first = [], 0
    for i, size in enumerate(sizes):
        rows = _rows(first, size)
        first += size
        if fmt == "parquet":
            path = directory / f"part-{i}.parquet"
            schema = pa.schema(
                [("id", pa.int64()), ("text", pa.string()), ("tokens", pa.list_(pa.int64()))]
            )
            pq.write_table(pa.Table.from_pylist(rows, schema), path, row_group_size=group)
        else:
            path = directory / f"part-{i}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths


def _source(tmp_path: Path, sizes: list[int], fmt: str, group: int) -> Any:
    directory = tmp_path / f"data-{next(_counter)}"
    paths = _write_shards(directory, sizes, fmt, group)
    if fmt == "parquet":
        return ParquetShardedSource(paths, batch_size=max(1, group // 2))
    return JsonShardedSource(paths, index_cache_dir=tmp_path / "index", batch_size=3)


def _take(iterator: Iterator[Any], count: int) -> list[Any]:
    return [plain(x) for x in itertools.islice(iterator, count)]


def _resumed_run(build: Build, stops: list[int]) -> list[Any]:
    """Run to each stop, save, JSON round trip, restore into a fresh pipeline; then to the end."""
    out: list[Any] = []
    state = None
    previous = 0
    for stop in [*stops, None]:
        iterator = iter(build())
        if state is not None:
            iterator.set_state(state)
        if stop is None:
            out += [plain(x) for x in iterator]
        else:
            out += _take(iterator, stop - previous)
            state = json.loads(json.dumps(iterator.get_state()))
            previous = stop
    return out


def _check_resume(build: Build, data: st.DataObject) -> list[Any]:
    """Check that resuming at 1 to 3 random stops equals the uninterrupted run, which it returns."""
    full = [plain(x) for x in build()]
    count = data.draw(st.integers(1, 3), label="resumes")
    positions = sorted(data.draw(st.integers(0, len(full)), label="stop") for _ in range(count))
    assert _resumed_run(build, positions) == full
    return full


def _ids(value: Any) -> Any:
    return value["id"]


@_settings
@given(
    fmt=st.sampled_from(["parquet", "jsonl"]),
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    group=st.integers(1, 16),
    buffer_size=st.one_of(st.none(), st.integers(1, 200)),
    seed=st.integers(0, 2**32 - 1),
    before=st.sampled_from(["", "map", "filter", "map+filter"]),
    after=st.sampled_from(["", "filter", "ids+batch"]),
    data=st.data(),
)
def test_resume_equals_uninterrupted_run(
    tmp_path: Path,
    fmt: str,
    sizes: list[int],
    group: int,
    buffer_size: int | None,
    seed: int,
    before: str,
    after: str,
    data: st.DataObject,
) -> None:
    if fmt == "jsonl":
        sizes = [max(1, s) for s in sizes]  # a JSON Lines shard without rows is corrupt
    source = _source(tmp_path, sizes, fmt, group)

    def build() -> grain.IterDataset:
        ds: grain.IterDataset = SourceIterDataset(source)
        if "map" in before:
            ds = ds.map(lambda r: {**r, "twice": 2 * r["id"]})
        if "filter" in before:
            ds = ds.filter(lambda r: r["id"] % 3 != 1)
        if buffer_size is not None:
            ds = ShuffleBufferIterDataset(ds, buffer_size, seed=seed)
        if after == "filter":
            ds = ds.filter(lambda r: r["id"] % 4 != 2)
        elif after == "ids+batch":
            ds = ds.map(_ids).batch(3)
        return ds

    full = _check_resume(build, data)
    if not before and not after:
        expected = [plain(r) for r in _rows(0, sum(sizes))]
        assert (sorted(full, key=_ids) if buffer_size else full) == expected
    if buffer_size is not None and not after:
        iterator = iter(build())
        next(iterator, None)
        kind = iterator.get_state()["snapshot"]["buffer"]["kind"]
        assert kind == ("values" if before else "addresses")


@_settings
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    buffer_size=st.integers(1, 40),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_state_taken_after_every_element_resumes_exactly(
    tmp_path: Path, sizes: list[int], buffer_size: int, seed: int, data: st.DataObject
) -> None:
    """As Grain's prefetch does: a state per element, most reusing a snapshot plus steps."""
    source = _source(tmp_path, sizes, "parquet", 4)

    def build() -> grain.IterDataset:
        return ShuffleBufferIterDataset(SourceIterDataset(source), buffer_size, seed=seed)

    iterator = iter(build())
    states, full = [json.loads(json.dumps(iterator.get_state()))], []
    for row in iterator:
        full.append(row["id"])
        states.append(json.loads(json.dumps(iterator.get_state())))
    assert max(s["steps"] for s in states) == min(buffer_size - 1, len(full))
    k = data.draw(st.integers(0, len(full)))
    resumed = iter(build())
    resumed.set_state(states[k])
    assert full[:k] + [r["id"] for r in resumed] == full


def test_works_inside_a_grain_pipeline_with_thread_prefetch(tmp_path: Path) -> None:
    source = _source(tmp_path, [50, 0, 37], "parquet", 8)

    def build() -> grain.IterDataset:
        ds = ShuffleBufferIterDataset(SourceIterDataset(source), 10, seed=7)
        ds = ds.map(_ids).filter(lambda i: i % 5 != 0).batch(4)
        return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=3)

    full = [b.tolist() for b in build()]
    assert sorted(itertools.chain(*full)) == [i for i in range(87) if i % 5]
    for stop in (0, 1, 7, len(full)):
        assert _resumed_run(build, [stop]) == full


def test_shuffle_is_a_permutation_fixed_by_the_seed(tmp_path: Path) -> None:
    source = _source(tmp_path, [60, 1, 39], "parquet", 16)

    def order(seed: int, buffer_size: int = 20) -> list[int]:
        return [
            r["id"] for r in ShuffleBufferIterDataset(SourceIterDataset(source), buffer_size, seed)
        ]

    runs = [order(seed) for seed in range(5)]
    assert all(sorted(run) == list(range(100)) for run in runs)
    assert len({tuple(run) for run in runs}) == 5
    assert order(3) == runs[3] and runs[0] != list(range(100))
    assert order(0, buffer_size=1) == list(range(100))
    assert sorted(order(0, buffer_size=1000)) == list(range(100))
    assert order((0, 1)) != order((0, 2))


def test_shard_order_and_its_state(tmp_path: Path) -> None:
    source = _source(tmp_path, [3, 2, 4], "parquet", 2)
    ds = SourceIterDataset(source, shard_order=[2, 0])
    assert [r["id"] for r in ds] == [5, 6, 7, 8, 0, 1, 2]
    iterator = iter(ds)
    _take(iterator, 5)
    assert iterator.get_state() == {"shard": 1, "row": 1}
    assert iterator.last_address == (0, 0)
    assert _resumed_run(lambda: SourceIterDataset(source, shard_order=[2, 0]), [5]) == [
        plain(r) for r in ds
    ]
    with pytest.raises(ValueError, match="distinct shard indices"):
        SourceIterDataset(source, shard_order=[0, 0])


class _CountingSource:
    """A sharded source that counts its seeks."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self.opens = 0

    @property
    def shard_names(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.sizes))]

    def open_shard(self, shard: str) -> Iterator[dict[str, Any]]:
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[dict[str, Any]]:
        self.opens += 1
        index = int(shard[1:])
        return ({"shard": index, "row": r} for r in range(row, self.sizes[index]))


@given(
    picks=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 999)), max_size=300),
    max_gap=st.integers(0, 300),
)
def test_read_rows_at_reads_runs(picks: list[tuple[int, int]], max_gap: int) -> None:
    source = _CountingSource([1000, 1000, 1000])
    rows = read_rows_at(source, picks, max_gap=max_gap)
    assert [(r["shard"], r["row"]) for r in rows] == picks
    runs = 0
    for (s0, r0), (s1, r1) in itertools.pairwise([(-1, 0), *sorted(set(picks))]):
        runs += s1 != s0 or r1 - r0 - 1 > max_gap
    assert source.opens == runs


def test_generic_sharded_source_and_address_buffer() -> None:
    source = _CountingSource([30, 0, 25])

    def build() -> grain.IterDataset:
        return ShuffleBufferIterDataset(SourceIterDataset(source), 8, seed=2)

    full = [plain(r) for r in build()]
    assert sorted((r["shard"], r["row"]) for r in full) == [(0, r) for r in range(30)] + [
        (2, r) for r in range(25)
    ]
    for stop in range(len(full) + 1):
        assert _resumed_run(build, [stop]) == full


def test_restore_of_a_10k_buffer_over_100k_rows(tmp_path: Path) -> None:
    paths = write_parquet_dataset(
        tmp_path, num_shards=4, rows_per_shard=25_000, row_group_size=1_000, max_tokens=64
    )
    source = ParquetShardedSource(paths)

    def build() -> grain.IterDataset:
        return ShuffleBufferIterDataset(SourceIterDataset(source), 10_000, seed=42)

    iterator = iter(build())
    _take(iterator, 30_000)
    state = json.dumps(iterator.get_state())
    expected = [r["id"] for r in itertools.islice(iterator, 100)]
    start = time.perf_counter()
    restored = iter(build())
    restored.set_state(json.loads(state))
    elapsed = time.perf_counter() - start
    print(f"\nrestored a 10k-row buffer over 100k rows in {elapsed:.3f} s ({len(state)} B state)")
    assert [r["id"] for r in itertools.islice(restored, 100)] == expected


# -- Hugging Face datasets and other iterables --------------------------------------------------


def _generate(bounds: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
    for first, stop in bounds:
        for i in range(first, stop):
            yield {"id": i, "tokens": np.arange(i % 4, dtype=np.int32), "text": f"t{i}"}


def _hf_dataset(kind: str, files: list[str]) -> datasets.IterableDataset:
    if kind == "json":
        return datasets.load_dataset("json", data_files=files, streaming=True, split="train")
    return datasets.IterableDataset.from_generator(
        _generate, gen_kwargs={"bounds": [(0, 13), (13, 14), (14, 40)]}
    )


@pytest.fixture(scope="module")
def json_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _write_shards(tmp_path_factory.mktemp("hf") / "data", [17, 1, 22], "jsonl", 1)


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(["json", "generator"]),
    buffer_size=st.one_of(st.none(), st.integers(1, 60)),
    seed=st.integers(0, 100),
    data=st.data(),
)
def test_hf_stream_resumes_exactly(
    json_files: list[str], kind: str, buffer_size: int | None, seed: int, data: st.DataObject
) -> None:
    def build() -> grain.IterDataset:
        ds: grain.IterDataset = SourceIterDataset(_hf_dataset(kind, json_files))
        if buffer_size is not None:
            ds = ShuffleBufferIterDataset(ds, buffer_size, seed=seed)
        return ds

    full = _check_resume(build, data)
    assert sorted(r["id"] for r in full) == list(range(40))
    iterator = iter(build())
    _take(iterator, 3)
    state = iterator.get_state()
    if buffer_size is None:
        assert "state_dict" in state
    else:
        assert state["snapshot"]["buffer"]["kind"] == "values"
        assert state["snapshot"]["buffer"]["bytes"] > 0
        assert "state_dict" in state["snapshot"]["parent"]


def test_hf_state_is_per_iterator(json_files: list[str]) -> None:
    dataset = _hf_dataset("json", json_files)
    ds = SourceIterDataset(dataset)
    first, second = iter(ds), iter(ds)
    _take(first, 5)
    assert [r["id"] for r in second][:2] == [0, 1]
    assert first.get_state()["state_dict"] != second.get_state()["state_dict"]
    assert [r["id"] for r in dataset][:1] == [0]


def test_hf_shuffle_buffer_is_refused(json_files: list[str]) -> None:
    def shuffled() -> datasets.IterableDataset:
        return _hf_dataset("json", json_files).shuffle(buffer_size=10, seed=42)

    ds = SourceIterDataset(shuffled())
    assert ds.not_resumable_reason is not None
    iterator = iter(ds)
    assert sorted(r["id"] for r in iterator) == list(range(40))
    with pytest.raises(
        NotResumableError, match=r"\.shuffle\(buffer_size=...\).*ShuffleBufferIterDataset"
    ):
        iterator.get_state()
    with pytest.raises(NotResumableError):
        iter(ShuffleBufferIterDataset(SourceIterDataset(shuffled()), 5, seed=1)).get_state()
    allowed = iter(SourceIterDataset(shuffled(), allow_unresumable=True))
    _take(allowed, 4)
    state = allowed.get_state()
    assert state["rows"] == 4 and state["not_resumable"] == ds.not_resumable_reason
    with pytest.raises(NotResumableError, match="shuffle buffer out"):
        allowed.set_state(state)


def test_iterable_without_state_is_iterated_but_not_resumable() -> None:
    ds = SourceIterDataset([{"id": i} for i in range(5)])
    iterator = iter(ds)
    assert [r["id"] for r in iterator] == [0, 1, 2, 3, 4]
    with pytest.raises(NotResumableError, match=r"no state_dict.*ShardedSource.*from_generator"):
        iterator.get_state()
    prefetched = grain.experimental.ThreadPrefetchIterDataset(
        SourceIterDataset(iter(range(3)), allow_unresumable=True), prefetch_buffer_size=2
    )
    assert list(prefetched) == [0, 1, 2]
    with pytest.raises(TypeError, match="ShardedSource or an iterable"):
        SourceIterDataset(42)


def test_skipping_json_source_resumes_at_the_right_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0}\nnot json\n{"id": 2}\n{"id": 3}\n')
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    iterator = iter(SourceIterDataset(source))
    assert [r["id"] for r in iterator] == [0, 2, 3]
    iterator = iter(SourceIterDataset(source))
    assert [next(iterator)["id"], next(iterator)["id"]] == [0, 2]
    state = iterator.get_state()
    assert state == {"shard": 0, "row": 3}  # the skipped row is counted
    resumed = iter(SourceIterDataset(source))
    resumed.set_state(state)
    assert [r["id"] for r in resumed] == [3]


def test_mismatched_states_are_refused(tmp_path: Path) -> None:
    source = _source(tmp_path, [20], "parquet", 4)
    iterator = iter(ShuffleBufferIterDataset(SourceIterDataset(source), 5, seed=0))
    _take(iterator, 3)
    state = iterator.get_state()
    with pytest.raises(NotResumableError, match="buffer_size=5"):
        iter(ShuffleBufferIterDataset(SourceIterDataset(source), 6, seed=0)).set_state(state)
    mapped = ShuffleBufferIterDataset(SourceIterDataset(source).map(dict), 5, seed=0)
    with pytest.raises(NotResumableError, match="as addresses"):
        iter(mapped).set_state(state)
    with pytest.raises(ValueError, match="buffer_size"):
        ShuffleBufferIterDataset(SourceIterDataset(source), 0, seed=0)
