"""Pass ends in the mixture order (``MixtureOrder.with_passes``): each pass of a ``restart``
mixture holds exactly its rounded share of every component, so with weights proportional to the
components' rows every row is read once per epoch, every pass, and resume stays exact."""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, InMemorySource, MixedShardedSource
from easydata_grain.graph.mix import MixedMapDataset, pass_order
from easydata_grain.materialize.mixture_rows import MixtureRows
from easydata_grain.mix_order import MixtureOrder
from easydata_grain.mix_schedule import WeightSchedule

_settings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parts(sizes: list[int]) -> dict[str, InMemorySource]:
    return {
        f"s{c}": InMemorySource.from_rows([{"src": c, "i": i} for i in range(n)])
        for c, n in enumerate(sizes)
    }


def rows_of(batches: Any) -> list[tuple[int, int]]:
    return [
        (int(s), int(i)) for batch in batches for s, i in zip(batch["src"], batch["i"], strict=True)
    ]


def webster(weights: np.ndarray, seats: int) -> np.ndarray:
    """The ``seats`` rows due first, by brute force: row ``j`` of component ``c`` is due at
    ``(j + 1/2) / w_c``; ties go to the lower component."""
    due = sorted(
        ((j + 0.5) / w, c) for c, w in enumerate(weights.tolist()) if w > 0 for j in range(seats)
    )
    return np.bincount([c for _, c in due[:seats]], minlength=len(weights))


@st.composite
def mixtures(draw: st.DrawFn) -> dict[str, Any]:
    """Sizes, fixed weights (half the time proportional to the sizes), a block size smaller or
    larger than the pass, epochs and a seed."""
    sizes = draw(st.lists(st.integers(1, 12), min_size=2, max_size=4))
    proportional = draw(st.booleans())
    weights = (
        [float(n) for n in sizes]
        if proportional
        else draw(st.lists(st.floats(0.05, 5), min_size=len(sizes), max_size=len(sizes)))
    )
    epochs = draw(st.integers(1, 3))
    length = epochs * sum(sizes)
    return {
        "sizes": sizes,
        "weights": weights,
        "proportional": proportional,
        "epochs": epochs,
        "length": length,
        "block_size": draw(st.integers(1, 3 * length)),
        "batch": draw(st.integers(1, 8)),
        "seed": draw(st.integers(0, 2**32)),
    }


@settings(_settings, max_examples=120)
@given(drawn=mixtures(), passes=st.integers(1, 4))
def test_each_pass_holds_exactly_its_rounded_share(drawn: dict[str, Any], passes: int) -> None:
    length = drawn["length"]
    base = MixtureOrder(
        WeightSchedule.fixed(drawn["weights"]),
        block_size=drawn["block_size"],
        global_batch_size=drawn["batch"],
        seed=drawn["seed"],
    )
    order = base.with_passes(length)
    weights = base.schedule.at_steps(np.asarray([0]))[0]
    components, rows = order.locate_many(np.arange(passes * length))
    for k in range(1, passes + 1):
        got = np.bincount(components[(k - 1) * length : k * length], minlength=len(weights))
        expected = webster(weights, k * length) - webster(weights, (k - 1) * length)
        assert got.tolist() == expected.tolist()
        assert order.counts_before(k * length).tolist() == webster(weights, k * length).tolist()
        if drawn["proportional"]:
            epochs = drawn["epochs"]
            assert got.tolist() == [epochs * n for n in drawn["sizes"]]
    # each component's rows in increasing order, one after another
    for c in range(len(weights)):
        mine = rows[components == c]
        assert mine.tolist() == list(range(len(mine)))
    # blocks without a pass end inside are those of the order without passes
    size = drawn["block_size"]
    for block in range(-(-passes * length // size)):
        start = block * size
        if (start // length + 1) * length >= start + size:
            assert order.block(block).components.tolist() == base.block(block).components.tolist()
        assert order.counts_before_block(block).tolist() == base.counts_before_block(block).tolist()
    # random access agrees with the span, and position_of finds every row's position
    for p in range(0, passes * length, max(1, length // 7)):
        c, q = order.locate(p)
        assert (c, q) == (components[p], rows[p])
        assert order.position_of(c, q) == p
        assert (
            order.counts_before(p).tolist()
            == np.bincount(components[:p], minlength=len(weights)).tolist()
        )


@settings(_settings, max_examples=40)
@given(
    schedule=st.sampled_from(["step", "linear", "cosine"]),
    block_size=st.integers(1, 90),
    length=st.integers(1, 60),
    seed=st.integers(0, 99),
)
def test_pass_ends_under_a_schedule(schedule: str, block_size: int, length: int, seed: int) -> None:
    # the same guarantee when the weights change with the step: each pass ends holding the
    # rows due first up to its end, the blocks' own counts unchanged
    points = ((0, (3.0, 1.0, 0.5)), (5, (0.5, 1.0, 3.0)), (20, (1.0, 0.0, 1.0)))
    base = MixtureOrder(
        WeightSchedule(points, schedule),  # type: ignore[arg-type]
        block_size=block_size,
        global_batch_size=4,
        seed=seed,
    )
    order = base.with_passes(length)
    components, _ = order.locate_many(np.arange(5 * length))
    for k in range(6):
        assert np.bincount(components[: k * length], minlength=3).tolist() == (
            base.counts_at(k * length).tolist()
        )


@settings(_settings, max_examples=25)
@given(
    sizes=st.lists(st.integers(1, 25), min_size=2, max_size=3),
    block_size=st.sampled_from([1, 3, 7, 40, 1000]),
    batch=st.integers(1, 9),
    shuffle=st.sampled_from([0, 8]),
    epochs=st.integers(1, 3),
)
def test_a_restart_loader_reads_every_row_once_per_epoch_every_pass(
    sizes: list[int], block_size: int, batch: int, shuffle: int, epochs: int
) -> None:
    mix = MixedShardedSource(parts(sizes), [float(n) for n in sizes], block_size=block_size)
    loader = AsyncDataLoader(mix, batch_size=batch, shuffle_buffer_size=shuffle, num_epochs=epochs)
    for _ in range(3):
        seen = collections.Counter(rows_of(loader))
        assert set(seen.values()) == {epochs}
        assert len(seen) == sum(sizes)
    stats = loader.stats()["mixture"]
    assert [stats[f"s{c}"]["rows"] for c in range(len(sizes))] == [epochs * n for n in sizes]


def test_the_probe_equal_weights_equal_sizes() -> None:
    # 300 + 300 rows, the default block of 1000: the pass ends inside the first block
    a = InMemorySource.from_rows([{"src": 0, "i": i} for i in range(300)])
    b = InMemorySource.from_rows([{"src": 1, "i": i} for i in range(300)])
    rows = rows_of(AsyncDataLoader(MixedShardedSource({"a": a, "b": b}), batch_size=10))
    assert sorted(rows) == [(s, i) for s in (0, 1) for i in range(300)]


@settings(_settings, max_examples=20)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=2, max_size=3),
    block_size=st.integers(1, 80),
    batch=st.integers(1, 6),
    epochs=st.integers(1, 2),
    data=st.data(),
)
def test_a_loader_resumes_exactly_at_any_batch_of_any_pass(
    sizes: list[int], block_size: int, batch: int, epochs: int, data: st.DataObject
) -> None:
    weights = data.draw(st.lists(st.floats(0.1, 5), min_size=len(sizes), max_size=len(sizes)))

    def make() -> AsyncDataLoader:
        mix = MixedShardedSource(parts(sizes), weights, block_size=block_size)
        return AsyncDataLoader(mix, batch_size=batch, shuffle_buffer_size=8, num_epochs=epochs)

    full = make()
    expected = [rows_of(full) for _ in range(3)]
    number = data.draw(st.integers(0, 2))
    cut = data.draw(st.integers(0, len(full)))
    first = make()
    for _ in range(number):
        rows_of(first)
    iterator = iter(first)
    head = rows_of(next(iterator) for _ in range(cut))
    state = json.dumps(first.get_state())
    second = make()
    second.set_state(state)
    assert head + rows_of(second) == expected[number]
    assert [rows_of(second) for _ in range(number + 1, 3)] == expected[number + 1 :]


def test_from_datasets_and_materialized_rows_read_the_pass_with_its_end() -> None:
    import grain

    sizes = [7, 11, 5]
    datasets = {
        f"s{c}": grain.MapDataset.source([{"src": c, "i": i} for i in range(n)])
        for c, n in enumerate(sizes)
    }
    mixed = MixedMapDataset.from_datasets(datasets, sizes, block_size=100, num_epochs=2, seed=3)
    assert mixed.order.pass_length == len(mixed) == 2 * sum(sizes)
    seen = collections.Counter((e["src"], e["i"]) for e in mixed)
    assert set(seen.values()) == {2} and len(seen) == sum(sizes)
    saved = MixtureRows(
        MixedShardedSource(parts(sizes), sizes, block_size=100), global_batch_size=4
    ).table(0, sum(sizes))
    assert sorted(zip(saved["src"].to_pylist(), saved["i"].to_pylist(), strict=True)) == sorted(
        (c, i) for c, n in enumerate(sizes) for i in range(n)
    )


def test_with_passes_is_kept_and_validated() -> None:
    order = MixtureOrder(
        WeightSchedule.fixed([1.0, 2.0]), block_size=10, global_batch_size=1, seed=0
    )
    passes = order.with_passes(7)
    assert order.with_passes(7) is passes and passes.with_passes(7) is passes
    assert passes.target is order.target and order.pass_length is None
    assert pass_order(order, "first_exhausted", 7) is order
    assert pass_order(order, "restart", None) is order
    assert pass_order(order, "restart", 7) is passes
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="pass's length"):
            order.with_passes(bad)  # type: ignore[arg-type]
