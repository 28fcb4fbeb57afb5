"""Mixing: the mixture order's counts per block, the stop strategies' exact row counts, and
exact, elastic resume of mixed loaders (in process, on two hosts, and in a fresh process)."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import hashlib
import json
import pickle
import time
from pathlib import Path
from typing import Any

import grain
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, InMemorySource, MalformedRowError
from easydata_grain import order as order_module
from easydata_grain.config import DatasetConfig, LoadStageConfig, MixStageConfig, PipelineConfig
from easydata_grain.graph import mix as mix_module
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.graph.mix import MixedMapDataset, mixture_length
from easydata_grain.mix_order import _TAG_MIX, MixtureOrder
from easydata_grain.mix_schedule import WeightSchedule
from easydata_grain.order import _GOLDEN, _MASK64, _mix, _permute_window, _permute_windows
from easydata_grain.pipeline import Pipeline
from easydata_grain.sources.mixed import MixedShardedSource, MixtureSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.protocol import ShardedSource
from easydata_grain.synthetic import write_parquet_dataset
from tests.test_loader_resume import save_and_restore

_settings = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def weight_vectors(k: int, low: float = 0.0) -> st.SearchStrategy[list[float]]:
    """``k`` weights in ``[low, 10]``, not all 0 (0 itself drawn often when ``low`` is 0)."""
    weight = st.floats(max(low, 0.01), 10)
    if low == 0:
        weight = st.one_of(st.just(0.0), weight)
    return st.lists(weight, min_size=k, max_size=k).filter(lambda ws: sum(ws) > 0)


@st.composite
def schedules(draw: st.DrawFn, k: int) -> WeightSchedule:
    """Fixed weights or a step/linear/cosine schedule of up to 4 points (zeros allowed)."""
    kind = draw(st.sampled_from(["step", "linear", "cosine"]))
    steps = draw(st.lists(st.integers(1, 60), max_size=3, unique=True))
    points = [(s, tuple(draw(weight_vectors(k)))) for s in [0, *sorted(steps)]]
    return WeightSchedule(tuple(points), kind)  # type: ignore[arg-type]


def parts(sizes: list[int]) -> dict[str, InMemorySource]:
    return {
        f"s{c}": InMemorySource.from_rows([{"src": c, "i": i} for i in range(n)])
        for c, n in enumerate(sizes)
    }


def grain_parts(sizes: list[int]) -> dict[str, grain.MapDataset]:
    """Plain Grain datasets of ``(component, row)`` rows, one epoch each."""
    return {
        f"s{c}": grain.MapDataset.source([{"src": c, "i": i} for i in range(n)])
        for c, n in enumerate(sizes)
    }


def endless_parts(sizes: list[int], seed: int) -> dict[str, grain.MapDataset]:
    """The same rows as endless datasets, each epoch in its own shuffled order."""
    return {
        name: IndexedSourceDataset(source, seed=seed + c, window_size=8, num_epochs=None)
        for c, (name, source) in enumerate(parts(sizes).items())
    }


def rows_of(loader: Any) -> list[tuple[int, int]]:
    return [
        (int(s), int(i)) for batch in loader for s, i in zip(batch["src"], batch["i"], strict=True)
    ]


def pairs(elements: Any) -> list[tuple[int, int]]:
    return [(int(e["src"]), int(e["i"])) for e in elements]


# -- the mixture order ---------------------------------------------------------------------------


def draw_order(
    data: st.DataObject, k: int, block_size: int, seed: int, batch: int
) -> tuple[bool, MixtureOrder]:
    """Whether the weights are fixed, and an order of ``k`` components with fixed weights or a
    schedule drawn from ``data``."""
    fixed = data.draw(st.booleans())
    schedule = (
        WeightSchedule.fixed(data.draw(weight_vectors(k))) if fixed else data.draw(schedules(k))
    )
    return fixed, MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=seed)


@settings(_settings, max_examples=80)
@given(
    k=st.integers(2, 5),
    data=st.data(),
    block_size=st.integers(1, 200),
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 64),
)
def test_every_block_boundary_holds_the_cumulative_target_up_to_rounding(
    k: int, data: st.DataObject, block_size: int, seed: int, batch: int
) -> None:
    fixed, order = draw_order(data, k, block_size, seed, batch)
    schedule = order.schedule
    # No drift, whatever the block size and schedule: every count within (k - 1) / 2 rows of
    # the cumulative target for fixed weights (half a row for two components), within
    # (k + 1) / 2 while the weights change (module docstring of mix_order).
    bound = (k - 1) / 2 if fixed else (k + 1) / 2
    first = data.draw(st.integers(0, 10_000))
    for block in [*range(8), *range(first, first + 8)]:
        labels, rows, *_ = order.block(block)
        counts = np.bincount(labels, minlength=k)
        before = order.counts_before_block(block)
        after = order.counts_before_block(block + 1)
        assert np.all(after - before == counts) and counts.sum() == block_size
        target = order.target.at((block + 1) * block_size)
        assert np.isclose(target.sum(), (block + 1) * block_size)
        assert np.all(np.abs(after - target) <= bound + 1e-6), (after, target)
        # the block's share of the weights at its training step, up to the rounding carried
        step_weights = schedule.at(block * block_size // batch)
        assert np.all(np.abs(counts - block_size * step_weights) <= 2 * bound + 1e-6)
        for c in range(k):  # each component's rows are consecutive, in position order
            assert rows[labels == c].tolist() == list(range(before[c], after[c]))


@settings(_settings, max_examples=60)
@given(k=st.integers(2, 4), data=st.data(), block_size=st.integers(1, 64), seed=st.integers(0, 99))
def test_random_access_equals_sequential_and_is_deterministic(
    k: int, data: st.DataObject, block_size: int, seed: int
) -> None:
    schedule = data.draw(schedules(k))
    positions = data.draw(st.lists(st.integers(0, 2_000), min_size=1, max_size=50))
    one = MixtureOrder(schedule, block_size=block_size, global_batch_size=8, seed=seed)
    walked = [one.locate(p) for p in range(2_001)]
    other = MixtureOrder(schedule, block_size=block_size, global_batch_size=8, seed=seed)
    assert [other.locate(p) for p in positions] == [walked[p] for p in positions]
    components, rows = other.locate_many(positions)
    assert list(zip(components.tolist(), rows.tolist(), strict=True)) == [
        walked[p] for p in positions
    ]
    # q is how many times c was chosen before p
    seen = collections.Counter[int]()
    for c, q in walked:
        assert q == seen[c]
        seen[c] += 1


@settings(_settings, max_examples=60)
@given(k=st.integers(2, 4), data=st.data(), block_size=st.integers(1, 64), batch=st.integers(1, 9))
def test_position_of_finds_the_position_that_gives_a_row(
    k: int, data: st.DataObject, block_size: int, batch: int
) -> None:
    schedule = data.draw(schedules(k))
    order = MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=3)
    component = data.draw(st.integers(0, k - 1))
    row = data.draw(st.integers(0, 5_000))
    position = order.position_of(component, row)
    if position is None:  # only a component dropped for good stops getting rows
        assert schedule.at(schedule.last_change)[component] == 0
        end = schedule.last_change * batch + 2 * block_size
        assert order.counts_before(end)[component] <= row
    else:
        assert order.locate(position) == (component, row)


def block_on_its_own(order: MixtureOrder, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Block ``block``'s components and rows made alone, one permutation per block: the slow
    path that ``MixtureOrder.span`` (many blocks at once) must equal."""
    before = order.counts_before_block(block)
    sizes = order.counts_before_block(block + 1) - before
    key = _mix((order.seed * _GOLDEN ^ _TAG_MIX ^ _mix(block + 1)) & _MASK64)
    components = np.empty(order.block_size, dtype=np.int64)
    components[_permute_window(order.block_size, key)] = np.repeat(
        np.arange(order.num_components), sizes
    )
    rows = np.empty_like(components)
    for c in range(order.num_components):
        rows[components == c] = np.arange(before[c], before[c] + sizes[c])
    return components, rows


@settings(_settings, max_examples=60)
@given(
    k=st.integers(2, 6),
    data=st.data(),
    block_size=st.integers(1, 2_100),
    seed=st.integers(0, 2**64 - 1),
    batch=st.integers(1, 300),
)
def test_spans_make_the_blocks_each_block_makes_alone(
    k: int, data: st.DataObject, block_size: int, seed: int, batch: int
) -> None:
    order = draw_order(data, k, block_size, seed, batch)[1]
    schedule = order.schedule
    first = data.draw(st.integers(0, 3_000))
    blocks = range(first, first + order.span_blocks + 2)  # across a span's end
    alone = [block_on_its_own(order, b) for b in blocks]
    positions = np.arange(first * block_size, blocks.stop * block_size)
    components, rows = order.locate_many(positions)
    np.testing.assert_array_equal(components, np.concatenate([c for c, _ in alone]))
    np.testing.assert_array_equal(rows, np.concatenate([r for _, r in alone]))
    fresh = MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=seed)
    for block, (labels, numbers) in zip(blocks, alone, strict=True):
        found = fresh.block(block)
        np.testing.assert_array_equal(found.components, labels)
        np.testing.assert_array_equal(found.rows, numbers)
        np.testing.assert_array_equal(found.places, np.argsort(labels, kind="stable"))
        assert found.sizes.tolist() == np.bincount(labels, minlength=k).tolist()
    picked = data.draw(st.lists(st.integers(0, len(positions) - 1), min_size=1, max_size=20))
    again = MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=seed)
    assert [again.locate(int(positions[i])) for i in picked] == [
        (int(components[i]), int(rows[i])) for i in picked
    ]
    cut = int(positions[picked[0]])
    assert (
        again.counts_before(cut).tolist()
        == (
            fresh.counts_before_block(first) + np.bincount(components[: picked[0]], minlength=k)
        ).tolist()
    )


@settings(_settings, max_examples=40)
@given(
    length=st.integers(1, 3_000),
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=9),
    table_bits=st.sampled_from([order_module._TABLE_BITS, 3]),
)
def test_many_windows_permute_as_each_window_alone(
    length: int, keys: list[int], table_bits: int
) -> None:
    # With 3 table bits, windows past 8 rows take the walk without a table.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(order_module, "_TABLE_BITS", table_bits)
        many = _permute_windows(length, np.array(keys, dtype=np.uint64))
        assert many.tolist() == [_permute_window(length, key).tolist() for key in keys]


@pytest.mark.parametrize(
    ("schedule", "block_size", "batch", "seed", "digest"),
    [
        (WeightSchedule.fixed([0.5, 0.3, 0.2]), 1000, 256, 0, "0aa312b96f55a40d"),
        (WeightSchedule.fixed([1.0, 2.0, 3.0, 0.0, 0.25]), 7, 3, 12345, "60ad2ba4fd398afd"),
        (
            WeightSchedule(((0, (0.8, 0.1, 0.1)), (40, (0.2, 0.3, 0.5))), "cosine"),
            100,
            16,
            9,
            "010c0a3064819168",
        ),
        (
            WeightSchedule(((0, (1.0, 0.0)), (5, (0.3, 0.7)), (30, (0.0, 1.0))), "step"),
            3000,
            64,
            2**40,
            "cfaf55ae1816f824",
        ),
        (
            WeightSchedule(((0, (0.9, 0.1)), (20, (0.5, 0.5))), "linear"),
            1,
            1,
            7,
            "2aed4ba392991c50",
        ),
    ],
)
def test_the_mixture_order_is_pinned(
    schedule: WeightSchedule, block_size: int, batch: int, seed: int, digest: str
) -> None:
    # These digests come from the order before spans (one block at a time). Change them only on
    # purpose, with the state version: a checkpoint names positions, so a different order would
    # resume onto different rows.
    order = MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=seed)
    hashed = hashlib.sha256()
    for start in (0, 10**6 * block_size, 123_457 * block_size + block_size // 2):
        components, rows = order.locate_many(np.arange(start, start + 20_000))
        hashed.update(components.astype("<i8").tobytes())
        hashed.update(rows.astype("<i8").tobytes())
    assert hashed.hexdigest()[:16] == digest


def test_seeds_change_the_interleaving_not_the_counts() -> None:
    schedule = WeightSchedule.fixed([1, 2, 3])
    a = MixtureOrder(schedule, block_size=60, global_batch_size=4, seed=1)
    b = MixtureOrder(schedule, block_size=60, global_batch_size=4, seed=2)
    assert a.block(3)[0].tolist() != b.block(3)[0].tolist()
    assert (
        np.bincount(a.block(3)[0]).tolist() == np.bincount(b.block(3)[0]).tolist() == [10, 20, 30]
    )


@settings(_settings, max_examples=60)
@given(
    kind=st.sampled_from(["step", "linear", "cosine"]),
    change=st.integers(1, 20),
    block_size=st.integers(1, 50),
    batch=st.integers(1, 16),
)
def test_schedules_follow_the_training_step(
    kind: str, change: int, block_size: int, batch: int
) -> None:
    schedule = WeightSchedule(((0, (1.0, 0.0)), (change, (0.0, 1.0))), kind)  # type: ignore[arg-type]
    order = MixtureOrder(schedule, block_size=block_size, global_batch_size=batch, seed=0)
    for block in range(40):
        labels = order.block(block).components
        step = block * block_size // batch
        counts = np.bincount(labels, minlength=2)
        if step >= change:
            assert counts.tolist() == [0, block_size]
        if step == 0:
            assert counts.tolist() == [block_size, 0]


def test_small_weights_under_an_interpolated_schedule_are_not_rounded_away() -> None:
    # Each block of 10 rows wants 0.4 rows of "rare": rounded per block that is never one.
    schedule = WeightSchedule(((0, (0.96, 0.04)), (10_000, (0.97, 0.03))), "linear")
    order = MixtureOrder(schedule, block_size=10, global_batch_size=64, seed=0)
    counts = order.counts_before(100_000)
    assert abs(counts[1] - order.target.at(100_000)[1]) <= 0.5
    assert counts[1] > 3_000


def test_a_seek_into_a_long_schedule_is_quick() -> None:
    # 200,000 steps of 1,024 rows in blocks of 1,000: 204,800 blocks of changing weights.
    schedule = WeightSchedule(((0, (0.5, 0.5)), (200_000, (0.1, 0.9))), "cosine")
    order = MixtureOrder(schedule, block_size=1000, global_batch_size=1024, seed=0)
    start = time.perf_counter()
    component, row = order.locate(150_000 * 1024)
    assert order.position_of(component, row) == 150_000 * 1024
    assert time.perf_counter() - start < 2.0


def test_orders_pickle_and_work_from_threads() -> None:
    schedule = WeightSchedule(((0, (1.0, 2.0, 0.0)), (50, (1.0, 1.0, 1.0))), "linear")
    order = MixtureOrder(schedule, block_size=7, global_batch_size=3, seed=9)
    expected = [order.locate(p) for p in range(0, 20_000, 13)]
    copy = pickle.loads(
        pickle.dumps(MixtureOrder(schedule, block_size=7, global_batch_size=3, seed=9))
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(copy.locate, range(0, 20_000, 13)))
    assert got == expected


# -- MixedMapDataset over plain Grain datasets ----------------------------------------------------


@settings(_settings, max_examples=120)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=2, max_size=4),
    data=st.data(),
    block_size=st.integers(1, 30),
    batch=st.integers(1, 8),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 99),
)
def test_stop_strategies_give_exactly_the_rows_they_promise(
    sizes: list[int],
    data: st.DataObject,
    block_size: int,
    batch: int,
    epochs: int,
    seed: int,
) -> None:
    k = len(sizes)
    strategy = data.draw(st.sampled_from(["restart", "first_exhausted", "all_exhausted"]))
    weights = data.draw(weight_vectors(k))
    chosen = [c for c in range(k) if weights[c] > 0]
    settings_: dict[str, Any] = {
        "block_size": block_size,
        "seed": seed,
        "stop_strategy": strategy,
        "num_epochs": epochs,
        "global_batch_size": batch,
    }
    if data.draw(st.booleans()):  # endless components, each epoch shuffled anew
        settings_["rows_per_epoch"] = sizes
        datasets = endless_parts(sizes, seed)
    else:  # one epoch each, repeated
        datasets = grain_parts(sizes)
    if strategy != "first_exhausted" and any(sizes[c] == 0 for c in chosen):
        with pytest.raises(ValueError, match="has no rows but a weight"):
            MixedMapDataset.from_datasets(datasets, weights, **settings_)
        return
    if strategy == "first_exhausted" and any(sizes[c] == 0 for c in chosen):
        # stops before the first row of an empty component: no rows at all, or a few
        order = MixtureOrder(
            WeightSchedule.fixed(weights), block_size=block_size, global_batch_size=batch, seed=seed
        )
        first = min(order.position_of(c, 0) or 0 for c in chosen if sizes[c] == 0)
        if first == 0:
            with pytest.raises(ValueError, match="no rows"):
                MixedMapDataset.from_datasets(datasets, weights, **settings_)
            return
    mixed = MixedMapDataset.from_datasets(datasets, weights, **settings_)
    rows = pairs(mixed[p] for p in range(len(mixed)))
    per = collections.Counter(c for c, _ in rows)
    order = mixed.order
    # every component's rows come epoch by epoch: each full epoch is all its rows once
    for c, n in enumerate(sizes):
        mine = [i for s, i in rows if s == c]
        assert c in chosen or not mine
        for start in range(0, len(mine), max(1, n)):
            epoch = mine[start : start + n]
            assert len(set(epoch)) == len(epoch) and set(epoch) <= set(range(n))
    if strategy == "restart":
        assert len(rows) == epochs * sum(sizes[c] for c in chosen)
    elif strategy == "first_exhausted":
        # no component read past its epochs, and the next position would need one
        assert all(per[c] <= epochs * sizes[c] for c in range(k))
        component, row = order.locate(len(mixed))
        assert row == epochs * sizes[component]
    else:
        # every chosen component read through its epochs; the last row completes one
        assert all(per[c] >= epochs * sizes[c] for c in chosen)
        last = rows[-1][0]
        assert per[last] == epochs * sizes[last]


@settings(_settings, max_examples=40)
@given(sizes=st.lists(st.integers(1, 30), min_size=2, max_size=3), data=st.data())
def test_a_dataset_reads_the_same_in_any_order_and_from_threads(
    sizes: list[int], data: st.DataObject
) -> None:
    k = len(sizes)
    make = functools.partial(
        MixedMapDataset.from_datasets,
        grain_parts(sizes),
        weight_schedule=[
            (0, {f"s{c}": c + 1 for c in range(k)}),
            (9, {f"s{c}": 1 for c in range(k)}),
        ],
        weight_schedule_type=data.draw(st.sampled_from(["step", "linear", "cosine"])),
        block_size=data.draw(st.integers(1, 20)),
        num_epochs=2,
        global_batch_size=4,
    )
    mixed = make()
    expected = pairs(mixed[p] for p in range(len(mixed)))
    positions = data.draw(st.permutations(range(len(expected))))
    fresh = make()
    assert pairs(fresh[p] for p in positions) == [expected[p] for p in positions]
    assert pairs(make()._getitems(positions)) == [expected[p] for p in positions]
    threaded = make().to_iter_dataset(grain.ReadOptions(num_threads=8, prefetch_buffer_size=16))
    assert pairs(threaded) == expected
    assert pairs(pickle.loads(pickle.dumps(make()))) == expected


@settings(_settings, max_examples=40)
@given(sizes=st.lists(st.integers(1, 30), min_size=2, max_size=3), data=st.data())
def test_an_iterator_resumes_from_its_state_at_any_point(
    sizes: list[int], data: st.DataObject
) -> None:
    mixed = MixedMapDataset.from_datasets(
        endless_parts(sizes, 3),
        data.draw(weight_vectors(len(sizes), low=0.1)),
        rows_per_epoch=sizes,
        block_size=data.draw(st.integers(1, 20)),
        stop_strategy=data.draw(st.sampled_from(["restart", "first_exhausted", "all_exhausted"])),
        num_epochs=2,
        seed=7,
    )
    expected = pairs(mixed.to_iter_dataset())
    stop = data.draw(st.integers(0, len(expected)))
    iterator = iter(mixed.to_iter_dataset())
    head = pairs(next(iterator) for _ in range(stop))
    state = json.loads(json.dumps(iterator.get_state()))
    resumed = iter(mixed.to_iter_dataset())
    resumed.set_state(state)
    assert head + pairs(resumed) == expected


def test_the_source_field_is_added_to_a_copy() -> None:
    rows = [{"x": i} for i in range(5)]
    mixed = MixedMapDataset.from_datasets(
        {"a": grain.MapDataset.source(rows), "b": grain.MapDataset.source(rows)},
        source_field="from",
    )
    assert {mixed[p]["from"] for p in range(len(mixed))} == {"a", "b"}
    assert all(row.keys() == {"x"} for row in rows)  # the inputs are unchanged
    plain = MixedMapDataset.from_datasets([grain.MapDataset.source(rows)] * 2)
    assert {id(plain[p]) for p in range(len(plain))} == {id(r) for r in rows}  # not copied


def test_realized_counts_are_reported_next_to_the_target() -> None:
    mixed = MixedMapDataset.from_datasets(
        grain_parts([300, 300, 300]), {"s0": 5, "s1": 3, "s2": 2}, block_size=100
    )
    realized = mixed.realized(200)  # at a block boundary: the target, rounded
    assert realized == {"s0": (100, 100.0), "s1": (60, 60.0), "s2": (40, 40.0)}
    realized = mixed.realized(250)  # inside a block: its rows in their shuffled places
    assert sum(n for n, _ in realized.values()) == 250
    assert realized["s0"][1] == pytest.approx(125) and realized["s2"][1] == pytest.approx(50)
    counted = collections.Counter(mixed[p]["src"] for p in range(250))
    assert [counted[c] for c in range(3)] == [n for n, _ in realized.values()]


# -- stop strategies through the loader -----------------------------------------------------------


@settings(_settings, max_examples=25)
@given(
    sizes=st.lists(st.integers(0, 120), min_size=2, max_size=3),
    data=st.data(),
    block_size=st.integers(1, 40),
    batch=st.integers(1, 16),
    shuffle=st.sampled_from([0, 16]),
    epochs=st.integers(1, 2),
)
def test_a_loader_over_mixed_sources_gives_the_rows_each_strategy_promises(
    sizes: list[int], data: st.DataObject, block_size: int, batch: int, shuffle: int, epochs: int
) -> None:
    weights = data.draw(weight_vectors(len(sizes)).filter(lambda ws: all(w > 0.05 for w in ws)))
    strategy = data.draw(st.sampled_from(["restart", "first_exhausted", "all_exhausted"]))
    if strategy != "first_exhausted" and 0 in sizes:
        with pytest.raises(ValueError, match="no rows"):
            AsyncDataLoader(MixedShardedSource(parts(sizes), weights, stop_strategy=strategy))
        return
    if strategy == "first_exhausted" and 0 in sizes:
        sizes = [n or 1 for n in sizes]
    mix = MixedShardedSource(parts(sizes), weights, block_size=block_size, stop_strategy=strategy)
    loader = AsyncDataLoader(
        mix, batch_size=batch, shuffle_buffer_size=shuffle, num_epochs=epochs, seed=5
    )
    rows = rows_of(loader)
    assert len(loader) == -(-len(rows) // batch)
    per = collections.Counter(s for s, _ in rows)
    seen = collections.Counter(rows)
    if strategy == "restart":
        assert len(rows) == epochs * sum(sizes)
    elif strategy == "first_exhausted":
        # no component is read past its epochs, and one of them is read through exactly
        assert all(per[c] <= epochs * n for c, n in enumerate(sizes))
        assert any(per[c] == epochs * n for c, n in enumerate(sizes))
        assert all(count <= epochs for count in seen.values())
    else:
        # every row of every component at least `epochs` times; the mixture stops right
        # after the last row that completes one
        for c, n in enumerate(sizes):
            assert all(seen[(c, i)] >= epochs for i in range(n))
        last = rows[-1]
        assert seen[last] == epochs and per[last[0]] == epochs * sizes[last[0]]
    # within each epoch of a component, no row repeats before all were read
    for c, n in enumerate(sizes):
        mine = [i for s, i in rows if s == c]
        for start in range(0, len(mine), max(1, n)):
            chunk = mine[start : start + n]
            assert len(set(chunk)) == len(chunk)


def test_an_endless_mixture() -> None:
    mix = MixedShardedSource(parts([5, 7]), [1, 1], block_size=4)
    loader = AsyncDataLoader(mix, batch_size=4, num_epochs=None)
    rows = [
        r
        for _, r in zip(
            range(100),
            (row for b in loader for row in zip(b["src"], b["i"], strict=True)),
            strict=False,
        )
    ]
    assert len(rows) == 100
    with pytest.raises(TypeError, match="endless"):
        len(loader)
    with pytest.raises(ValueError, match="never stop"):
        AsyncDataLoader(
            MixedShardedSource(parts([5, 7]), stop_strategy="all_exhausted"), num_epochs=None
        )


def test_the_source_field_names_each_rows_component() -> None:
    mix = MixedShardedSource(parts([10, 10]), {"s0": 1, "s1": 3}, source_field="from")
    batch = next(iter(AsyncDataLoader(mix, batch_size=20)))
    assert [f"s{s}" for s in batch["src"]] == list(batch["from"])
    assert "from" not in next(
        iter(AsyncDataLoader(MixedShardedSource(parts([3, 3])), batch_size=2))
    )


@pytest.mark.parametrize("rows_only", [False, True])
def test_a_source_field_the_rows_have_is_an_error_not_an_overwrite(rows_only: bool) -> None:
    mix = MixedShardedSource(parts([4, 4]), source_field="src")  # the rows' own field
    transforms = [lambda row: row] if rows_only else []  # dict rows, or gathered columns
    with pytest.raises(MalformedRowError, match="source field 'src' is a field of the rows"):
        next(iter(AsyncDataLoader(mix, batch_size=2, transforms=transforms)))


@settings(_settings, max_examples=20)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=3),
    strategy=st.sampled_from(["restart", "first_exhausted", "all_exhausted"]),
    data=st.data(),
)
def test_the_source_iterated_directly_is_the_mixture(
    sizes: list[int], strategy: str, data: st.DataObject
) -> None:
    mix = MixedShardedSource(parts(sizes), block_size=7, stop_strategy=strategy, seed=4)  # type: ignore[arg-type]
    assert isinstance(mix, MixtureSource) and isinstance(mix, ShardedSource)
    rows = pairs(mix.open_shard("mixture"))
    order = mix.order(1, 0)
    expected = mixture_length(order, sizes, strategy, 1, mix.names)  # type: ignore[arg-type]
    assert len(rows) == expected
    # the loader's pass: under restart, with the pass's end (mix_module.pass_order)
    passes = mix_module.pass_order(order, strategy, expected)  # type: ignore[arg-type]
    located = [passes.locate(p) for p in range(len(rows))]
    assert rows == [(c, q % sizes[c]) for c, q in located]  # file order, epoch after epoch
    start = data.draw(st.integers(0, len(rows)))
    assert pairs(mix.open_shard_at_row("mixture", start)) == rows[start:]
    with pytest.raises(KeyError, match="one shard"):
        mix.open_shard("shard-0")


def test_bad_mixtures_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="no component is named 'x'"):
        MixedShardedSource(parts([3, 3]), {"s0": 1, "x": 1})
    with pytest.raises(ValueError, match="no weight for"):
        MixedShardedSource(parts([3, 3]), {"s0": 1})
    with pytest.raises(ValueError, match="not all 0"):
        MixedShardedSource(parts([3, 3]), [0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        MixedShardedSource(parts([3, 3]), [1, -1])
    with pytest.raises(ValueError, match="two or more"):
        MixedShardedSource(parts([3]))
    with pytest.raises(ValueError, match="stop_strategy"):
        MixedShardedSource(parts([3, 3]), stop_strategy="never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights or a weight schedule"):
        MixedShardedSource(parts([3, 3]), [1, 1], weight_schedule=[(0, {"s0": 1, "s1": 1})])
    with pytest.raises(ValueError, match="no weight for"):
        MixedShardedSource(parts([3, 3]), weight_schedule=[(0, {"s0": 1, "s1": 1}), (5, {"s0": 1})])
    with pytest.raises(ValueError, match="kind must be one of"):
        MixedShardedSource(
            parts([3, 3]), weight_schedule=[(0, {"s0": 1, "s1": 1})], weight_schedule_type="cubic"
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="first point at step 0"):
        MixedShardedSource(parts([3, 3]), weight_schedule=[(4, {"s0": 1, "s1": 1})])
    with pytest.raises(ValueError, match="steps must increase"):
        MixedShardedSource(
            parts([3, 3]), weight_schedule=[(0, {"s0": 1, "s1": 1}), (0, {"s0": 1, "s1": 2})]
        )
    with pytest.raises(TypeError, match="the step must be an int"):
        MixedShardedSource(
            parts([3, 3]), weight_schedule=[(0, {"s0": 1, "s1": 1}), (2.5, {"s0": 1, "s1": 2})]
        )  # type: ignore[list-item]
    with pytest.raises(ValueError, match="block_size"):
        MixedShardedSource(parts([3, 3]), block_size=0)
    with pytest.raises(ValueError, match=r"\['s1'\] stop being chosen"):
        AsyncDataLoader(
            MixedShardedSource(
                parts([3, 50]),
                weight_schedule=[(0, {"s0": 1, "s1": 1}), (2, {"s0": 1, "s1": 0})],
                block_size=2,
                stop_strategy="all_exhausted",
            ),
            batch_size=2,
        )
    with pytest.raises(ValueError, match="2 rows_per_epoch for 3 datasets"):
        MixedMapDataset.from_datasets(grain_parts([1, 1, 1]), rows_per_epoch=[1, 1])
    with pytest.raises(TypeError, match="has no row counts"):
        MixedShardedSource({"a": iter([{"x": 1}]), "b": parts([3])["s0"]})


# -- resume ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    root = tmp_path_factory.mktemp("mix")
    return [
        write_parquet_dataset(
            root / f"p{i}", num_shards=2, rows_per_shard=n, row_group_size=37, seed=i
        )
        for i, n in enumerate([150, 90, 60])
    ]


@st.composite
def mixed_specs(draw: st.DrawFn) -> dict[str, Any]:
    k = draw(st.integers(2, 3))
    names = [f"dataset_{i}" for i in range(k)]
    mix: dict[str, Any] = {
        "block_size": draw(st.integers(1, 50)),
        "stop_strategy": draw(st.sampled_from(["restart", "first_exhausted", "all_exhausted"])),
    }
    if draw(st.booleans()):
        mix["weights"] = draw(weight_vectors(k).filter(lambda ws: all(w > 0.1 for w in ws)))
    else:
        mix["weight_schedule"] = [
            [0, {n: draw(st.floats(0.2, 5)) for n in names}],
            [draw(st.integers(1, 10)), {n: draw(st.floats(0.2, 5)) for n in names}],
        ]
        mix["weight_schedule_type"] = draw(st.sampled_from(["step", "linear", "cosine"]))
    loader = {
        "batch_size": draw(st.integers(1, 24)),
        "shuffle_buffer_size": draw(st.sampled_from([0, 10, 64])),
        "seed": draw(st.integers(0, 9)),
        "drop_remainder": draw(st.booleans()),
        "prefetch_buffer_size": draw(st.sampled_from([0, 2])),
    }
    return {"k": k, "mix": mix, "loader": loader}


def spec_with(shard_sets: list[list[str]], drawn: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": shard_sets[: drawn["k"]],
        "mix": drawn["mix"],
        "loader": {**drawn["loader"], "pad": True},
    }


def ids(batches: list[dict[str, Any]]) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


@settings(_settings, max_examples=25)
@given(drawn=mixed_specs(), data=st.data())
def test_a_mixed_loader_resumes_exactly_in_process(
    shard_sets: list[list[str]], drawn: dict[str, Any], data: st.DataObject
) -> None:
    from tests.resume_worker import build_loader

    spec = spec_with(shard_sets, drawn)
    expected = ids(list(build_loader(spec)))
    k = data.draw(st.integers(0, len(expected) // max(1, spec["loader"]["batch_size"])))
    first = build_loader(spec)
    head = ids([next(first) for _ in range(k)])
    state = json.dumps(first.get_state())
    second = build_loader(spec)
    second.set_state(state)
    assert head + ids(list(second)) == expected


@settings(_settings, max_examples=15)
@given(drawn=mixed_specs(), data=st.data())
def test_two_hosts_split_a_mixture_and_restore_elastically(
    shard_sets: list[list[str]], drawn: dict[str, Any], data: st.DataObject
) -> None:
    from tests.resume_worker import build_loader

    drawn["loader"]["batch_size"] = 2 * max(1, drawn["loader"]["batch_size"] // 2)
    drawn["loader"]["drop_remainder"] = True
    spec = spec_with(shard_sets, drawn)
    one = list(build_loader(spec))
    half = {**spec, "loader": {**spec["loader"], "batch_size": spec["loader"]["batch_size"] // 2}}
    hosts = [list(build_loader({**half, "hosts": [h, 2]})) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == len(one)  # equal steps
    for step, batch in enumerate(one):  # disjoint and complete: the hosts' halves of each batch
        assert ids([hosts[0][step], hosts[1][step]]) == ids([batch])
    k = data.draw(st.integers(0, len(one)))
    first = build_loader(spec)
    for _ in range(k):
        next(first)
    state = first.get_state()  # saved on 1 host, restored on 2
    rest = []
    for h in range(2):
        loader = build_loader({**half, "hosts": [h, 2]})
        loader.set_state(state)
        rest.append(list(loader))
    assert [ids([a, b]) for a, b in zip(*rest, strict=True)] == [ids([b]) for b in one[k:]]


@pytest.mark.slow
@settings(_settings, max_examples=4)
@given(drawn=mixed_specs(), data=st.data())
def test_a_mixed_loader_resumes_in_a_fresh_process_from_orbax(
    shard_sets: list[list[str]],
    tmp_path_factory: pytest.TempPathFactory,
    drawn: dict[str, Any],
    data: st.DataObject,
) -> None:
    from tests.resume_worker import build_loader

    spec = spec_with(shard_sets, drawn)
    expected = ids(list(build_loader(spec)))
    steps = -(-len(expected) // spec["loader"]["batch_size"])
    k = data.draw(st.integers(0, steps))
    head, tail = save_and_restore(spec, k, tmp_path_factory.mktemp("mix-orbax"))
    assert ids(head["batches"]) + ids(tail["batches"]) == expected


# -- the pipeline's mix stage ---------------------------------------------------------------------


def test_the_pipeline_mix_stage(shard_sets: list[list[str]], tmp_path: Path) -> None:
    config = PipelineConfig(
        datasets=[
            DatasetConfig(data_files=shard_sets[0], name="web", columns=["id"]),
            DatasetConfig(data_files=shard_sets[1], name="code", columns=["id"]),
        ],
        mix=MixStageConfig(
            weights={"web": 0.75, "code": 0.25},
            block_size=40,
            stop_strategy="first_exhausted",
            add_source_field="dataset",
        ),
        load=LoadStageConfig(batch_size=20, shuffle_buffer_size=0, drop_last=False),
    )
    loader = Pipeline.from_config(config).source().mix().load().build()
    names = [n for batch in loader for n in batch["dataset"]]
    assert collections.Counter(names)["web"] == 300  # web (300 rows) runs out first
    assert abs(names.count("code") - 100) <= 2
    assert "mixture" in loader.describe()
    realized = loader.stats()["mixture"]
    assert realized["web"]["rows"] == 300 and realized["web"]["target"] == 0.75
    assert abs(realized["code"]["share"] - 0.25) < 0.01


@settings(_settings, max_examples=30)
@given(data=st.data())
def test_columns_gathered_by_span_equal_the_rows(
    shard_sets: list[list[str]], data: st.DataObject
) -> None:
    # Any indices (runs inside a span, across spans, scattered, out of order) gather the same
    # rows column by column as one by one, by span or (rows too large for a span) by block.
    k = data.draw(st.integers(2, 3))
    by_block = data.draw(st.booleans())
    components = {
        f"p{i}": IndexedSourceDataset(
            ParquetShardedSource(shard_sets[i]),
            seed=i,
            window_size=data.draw(st.sampled_from([1, 50, 1_000])),
            num_epochs=None,
        )
        for i in range(k)
    }
    schedule = data.draw(schedules(k))
    names = list(components)
    mixed = MixedMapDataset.from_datasets(
        components,
        weight_schedule=[(step, dict(zip(names, ws, strict=True))) for step, ws in schedule.points],
        weight_schedule_type=schedule.kind,
        block_size=data.draw(st.integers(1, 300)),
        seed=data.draw(st.integers(0, 99)),
        stop_strategy=data.draw(st.sampled_from(["restart", "first_exhausted"])),
        global_batch_size=data.draw(st.integers(1, 16)),
        source_field=data.draw(st.sampled_from([None, "origin"])),
        rows_per_epoch=[2 * n for n in (150, 90, 60)[:k]],
    )
    end = min(len(mixed), 20_000)
    start = data.draw(st.integers(0, end - 1))
    stop = data.draw(st.integers(start + 1, min(end, start + 700)))
    scattered = data.draw(st.lists(st.integers(0, end - 1), min_size=1, max_size=40))
    for indices in (range(start, stop), scattered):
        with pytest.MonkeyPatch.context() as patch:
            if by_block:  # every span's token lists count as too large
                patch.setattr(mix_module, "_SPAN_COLUMN_BYTES", 0)
            columns = mixed._gather_columns(indices)
        assert columns is not None
        assert mixed._gather_spans is (not by_block or mixed.order.span_blocks == 1)
        rows = mixed._getitems(list(indices))
        assert columns.keys() == rows[0].keys()
        assert list(columns["id"]) == [row["id"] for row in rows]
        assert list(columns["text"]) == [row["text"] for row in rows]
        tokens = columns["input_ids"]
        assert [
            tokens.values[tokens.offsets[i] : tokens.offsets[i + 1]].tolist()
            for i in range(len(rows))
        ] == [list(row["input_ids"]) for row in rows]
        if "origin" in columns:
            assert list(columns["origin"]) == [row["origin"] for row in rows]


@pytest.mark.parametrize("block_size", [7, 1000])
def test_a_pass_reads_no_row_group_past_its_end(tmp_path: Path, block_size: int) -> None:
    # The pass ends inside a span: neither the span's positions past the end nor the
    # components' read-ahead may read row groups of a next epoch (the sources are larger than
    # their block caches, so those would be read again).
    sources = {
        f"p{i}": ParquetShardedSource(
            write_parquet_dataset(
                tmp_path / f"p{i}", num_shards=2, rows_per_shard=n, row_group_size=1000, seed=i
            ),
            columns=["id"],
        )
        for i, n in enumerate([25_000, 15_000, 10_000])
    }
    mixture = MixedShardedSource(
        sources, {"p0": 5, "p1": 3, "p2": 2}, block_size=block_size, stop_strategy="first_exhausted"
    )
    loader = AsyncDataLoader(mixture, batch_size=256, shuffle_buffer_size=10_000)
    assert "columnar  yes" in loader.describe() and "read thread" in loader.describe()
    assert sum(len(batch["id"]) for batch in loader) > 99_000
    assert mixture.stats.snapshot()["rows"] <= 100_000  # each row group at most once


@settings(_settings, max_examples=10)
@given(drawn=mixed_specs())
def test_columnar_mixed_batches_equal_row_batches(
    shard_sets: list[list[str]], drawn: dict[str, Any]
) -> None:
    from tests.resume_worker import build_loader

    drawn["mix"]["source_field"] = "origin"
    spec = spec_with(shard_sets, drawn)
    columnar = build_loader(spec)
    assert "columnar  yes" in columnar.describe()
    rows = build_loader({**spec, "transforms": ["function"]})  # a row op: dict rows
    for a, b in zip(columnar, rows, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "text":
                assert [t.upper() for t in a[key]] == list(b[key])
            else:
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


@pytest.mark.slow
def test_two_real_hosts_mix_disjoint_complete_equal_and_restore_on_one(tmp_path: Path) -> None:
    from easydata_grain import Hosts
    from tests.multihost_worker import build
    from tpu_scripts.simulate_multihost import run_slice

    data = tmp_path / "data"
    for i, name in enumerate("ab"):
        write_parquet_dataset(data / name, num_shards=2, rows_per_shard=60 + 40 * i, seed=i)
    script = Path(__file__).with_name("multihost_worker.py")
    out = tmp_path / "out"
    out.mkdir()
    k = 10
    result = run_slice(
        2,
        ["mix", str(data), str(out), "--save-at", str(k)],
        script=script,
        timeout=180,
        work_dir=tmp_path / "w",
    )
    assert result.ok, result.describe()
    hosts = [json.loads((out / f"host-{h}.json").read_text()) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1]) == k  # equal steps
    one = build("mix", data)  # the same pipeline on one host, in this process
    assert one.hosts == Hosts(0, 1)
    expected = [next(one) for _ in range(k)]
    for step in range(k):  # each global batch split between the hosts, disjoint and complete
        both = hosts[0][step]["id"] + hosts[1][step]["id"]
        assert both == expected[step]["id"].tolist()
        assert hosts[0][step]["source"] + hosts[1][step]["source"] == list(expected[step]["source"])
    # the checkpoint saved on 2 hosts restores elastically on 1
    state = json.loads((out / "checkpoints" / str(k) / "loader" / "loader_state.json").read_text())
    restored = build("mix", data)
    restored.set_state(state)
    assert [b["id"].tolist() for b in restored] == [b["id"].tolist() for b in one]


def test_a_mixtures_stats_count_its_sources_reads(tmp_path: Path) -> None:
    parts_read = {}
    for name in ("a", "b"):
        write_parquet_dataset(str(tmp_path / name), num_shards=1, rows_per_shard=200)
        parts_read[name] = ParquetShardedSource(str(tmp_path / name / "*.parquet"))
    loader = AsyncDataLoader(MixedShardedSource(parts_read), batch_size=50, pad=True)
    list(loader)
    read = sum(part.stats.snapshot()["bytes_read"] for part in parts_read.values())
    assert loader.stats()["bytes_read"] == read > 0  # was 0: the mixture itself reads nothing
