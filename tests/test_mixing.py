"""Mixing: the mixture order's counts per block, the stop strategies' exact row counts, and
exact, elastic resume of mixed loaders (in process, on two hosts, and in a fresh process)."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, InMemorySource
from easydata_grain.config import DatasetConfig, LoadStageConfig, MixStageConfig, PipelineConfig
from easydata_grain.mix_order import MixtureOrder, WeightSchedule, webster
from easydata_grain.pipeline import Pipeline
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.synthetic import write_parquet_dataset
from tests.test_loader_resume import save_and_restore

_settings = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def weight_vectors(k: int) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(0, 10, allow_nan=False), min_size=k, max_size=k).filter(
        lambda ws: sum(ws) > 0.01
    )


def parts(sizes: list[int]) -> dict[str, InMemorySource]:
    return {
        f"s{c}": InMemorySource.from_rows([{"src": c, "i": i} for i in range(n)])
        for c, n in enumerate(sizes)
    }


def rows_of(loader: Any) -> list[tuple[int, int]]:
    return [
        (int(s), int(i)) for batch in loader for s, i in zip(batch["src"], batch["i"], strict=True)
    ]


# -- the mixture order ---------------------------------------------------------------------------


@settings(_settings, max_examples=60)
@given(
    k=st.integers(2, 4),
    data=st.data(),
    block_size=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 64),
)
def test_every_block_holds_the_target_up_to_rounding(
    k: int, data: st.DataObject, block_size: int, seed: int, batch: int
) -> None:
    weights = np.asarray(data.draw(weight_vectors(k)))
    order = MixtureOrder(
        WeightSchedule.fixed(weights), block_size=block_size, global_batch_size=batch, seed=seed
    )
    target = weights / weights.sum()
    for block in range(6):
        labels, rows = order.block(block)
        counts = np.bincount(labels, minlength=k)
        assert counts.sum() == block_size
        before = order.counts_before_block(block)
        after = before + counts
        # cumulative counts never drift from the target (house-monotone apportionment)
        assert np.all(np.abs(after - (block + 1) * block_size * target) < max(1, k - 1))
        assert np.all(after == order.counts_before_block(block + 1))
        for c in range(k):  # each component's rows are consecutive, in position order
            assert rows[labels == c].tolist() == list(range(before[c], after[c]))


@settings(_settings, max_examples=60)
@given(k=st.integers(2, 4), data=st.data(), block_size=st.integers(1, 64), seed=st.integers(0, 99))
def test_random_access_equals_sequential_and_is_deterministic(
    k: int, data: st.DataObject, block_size: int, seed: int
) -> None:
    schedule = WeightSchedule.fixed(data.draw(weight_vectors(k)))
    positions = data.draw(st.lists(st.integers(0, 2_000), min_size=1, max_size=50))
    one = MixtureOrder(schedule, block_size=block_size, global_batch_size=8, seed=seed)
    walked = [one.locate(p) for p in range(2_001)]
    other = MixtureOrder(schedule, block_size=block_size, global_batch_size=8, seed=seed)
    assert [other.locate(p) for p in positions] == [walked[p] for p in positions]
    components, rows = other.locate_many(positions)
    assert list(zip(components.tolist(), rows.tolist(), strict=True)) == [
        walked[p] for p in positions
    ]


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
        labels, _ = order.block(block)
        step = block * block_size // batch
        expected = schedule.at(step)
        counts = np.bincount(labels, minlength=2)
        assert np.all(np.abs(counts - block_size * expected) < 1.01)
        if step >= change:
            assert counts.tolist() == [0, block_size]
        if step == 0:
            assert counts.tolist() == [block_size, 0]


def test_webster_is_house_monotone() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        weights = rng.random(rng.integers(2, 6)) ** 3
        weights /= weights.sum()
        previous = np.zeros(len(weights), dtype=np.int64)
        for seats in range(0, 200, 3):
            counts = webster(seats, weights)
            assert counts.sum() == seats and np.all(counts >= previous)
            previous = counts


# -- stop strategies through the loader -----------------------------------------------------------


@settings(_settings, max_examples=60)
@given(
    sizes=st.lists(st.integers(0, 120), min_size=2, max_size=3),
    data=st.data(),
    block_size=st.integers(1, 40),
    batch=st.integers(1, 16),
    shuffle=st.sampled_from([0, 16]),
    epochs=st.integers(1, 2),
)
def test_stop_strategies_give_exactly_the_rows_they_promise(
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
