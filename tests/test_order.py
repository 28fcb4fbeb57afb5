"""Property tests of the epoch order: a pure, local, keyed bijection from positions to addresses."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain.order import EpochOrder

settings.register_profile("order", deadline=None, max_examples=200)
settings.load_profile("order")

REPO = Path(__file__).resolve().parents[1]

shard_size = st.one_of(
    st.just(0), st.just(1), st.sampled_from([2, 3, 5, 7, 13, 31, 97, 257]), st.integers(0, 300)
)
shard_sizes = st.lists(shard_size, max_size=8)
window_sizes = st.one_of(st.integers(1, 70), st.sampled_from([1, 2, 3, 4, 64, 4096]))
seeds = st.one_of(st.integers(0, 1000), st.integers(0, 2**64 - 1))
epochs = st.one_of(st.integers(0, 1000), st.just(2**63 - 1))


def whole_epoch(order: EpochOrder, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The addresses of every position of ``epoch``."""
    return order.addresses(epoch, np.arange(len(order)))


def flat_indices(sizes: tuple[int, ...], shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Addresses as indices into the rows of all shards laid end to end in source order."""
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    return offsets[shards] + rows


@given(shard_sizes, window_sizes, seeds, epochs, st.booleans())
def test_an_epoch_visits_every_address_exactly_once(sizes, window, seed, epoch, shuffle):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window, shuffle=shuffle)
    assert len(order) == sum(sizes)
    shards, rows = whole_epoch(order, epoch)
    assert np.all((rows >= 0) & (rows < np.asarray(sizes, dtype=np.int64)[shards]))
    np.testing.assert_array_equal(
        np.sort(flat_indices(order.shard_sizes, shards, rows)), np.arange(len(order))
    )
    assert sorted(order.shard_order(epoch).tolist()) == list(range(len(sizes)))


def test_many_tiny_shards_are_each_visited_once():
    sizes = tuple(int(s) for s in np.random.default_rng(0).integers(0, 4, 3001))
    order = EpochOrder(sizes, seed=11, window_size=2)
    shards, rows = whole_epoch(order, 5)
    np.testing.assert_array_equal(np.sort(flat_indices(sizes, shards, rows)), np.arange(sum(sizes)))


LENGTHS = [*range(1, 130), 255, 256, 257, 1000, 1023, 1025, 4095, 4096, 4097, 65537]


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1])
def test_the_window_permutation_is_a_bijection_for_every_length(seed):
    for length in LENGTHS:
        # One window covering the whole shard: the rows are exactly the Feistel permutation.
        order = EpochOrder((length,), seed=seed, window_size=length)
        _, rows = whole_epoch(order, 3)
        np.testing.assert_array_equal(np.sort(rows), np.arange(length), err_msg=f"L={length}")


@given(st.integers(1, 5000), seeds, epochs)
def test_the_window_permutation_is_a_bijection_for_random_lengths(length, seed, epoch):
    _, rows = whole_epoch(EpochOrder((length,), seed=seed, window_size=length), epoch)
    np.testing.assert_array_equal(np.sort(rows), np.arange(length))


@pytest.mark.parametrize("length", [2, 3, 4])
def test_small_windows_reach_every_permutation(length):
    seen = {
        tuple(whole_epoch(EpochOrder((length,), seed=seed, window_size=length), 0)[1])
        for seed in range(500)
    }
    assert len(seen) == math.factorial(length)


def test_shards_reach_every_order():
    order = EpochOrder((1, 1, 1, 1), seed=9)
    seen = {tuple(order.shard_order(epoch)) for epoch in range(500)}
    assert len(seen) == math.factorial(4)


def test_a_full_window_is_well_mixed():
    order = EpochOrder((3 * 4096,), seed=1, window_size=4096)
    for window in range(3):
        positions = np.arange(window * 4096, (window + 1) * 4096)
        _, rows = order.addresses(0, positions)
        assert abs(np.corrcoef(positions, rows)[0, 1]) < 0.1
        assert np.count_nonzero(rows == positions) < 20
        # Neighbours in the stream are not neighbours in the shard.
        assert np.median(np.abs(np.diff(rows))) > 256


@given(shard_sizes, window_sizes, seeds, epochs, st.booleans())
def test_the_same_inputs_give_the_same_order(sizes, window, seed, epoch, shuffle):
    first = EpochOrder(tuple(sizes), seed=seed, window_size=window, shuffle=shuffle)
    second = EpochOrder(list(sizes), seed=seed, window_size=window, shuffle=shuffle)
    assert first == second
    expected = whole_epoch(first, epoch)
    for other in range(10):  # evict ``epoch`` from the per-epoch cache
        first.shard_order(2**62 + other)
    for order in (first, second, pickle.loads(pickle.dumps(first))):
        np.testing.assert_array_equal(whole_epoch(order, epoch)[0], expected[0])
        np.testing.assert_array_equal(whole_epoch(order, epoch)[1], expected[1])


def test_a_fresh_process_computes_the_same_order():
    sizes, seed, window, epochs = (7, 0, 12, 1, 30, 4099), 2024, 8, (0, 7)
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from easydata_grain.order import EpochOrder\n"
        f"order = EpochOrder({sizes}, seed={seed}, window_size={window})\n"
        f"for epoch in {epochs}:\n"
        "    for part in order.addresses(epoch, np.arange(len(order))):\n"
        "        print(*part.tolist())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    order = EpochOrder(sizes, seed=seed, window_size=window)
    expected = [part.tolist() for epoch in epochs for part in whole_epoch(order, epoch)]
    assert [list(map(int, line.split())) for line in result.stdout.splitlines()] == expected


def test_the_order_is_pinned():
    # The order is part of every checkpoint (a checkpoint names positions, not rows): changing
    # it silently changes what a resumed run reads. Change these values only on purpose.
    order = EpochOrder((7, 0, 12, 1, 30), seed=2024, window_size=8)
    assert order.shard_order(0).tolist() == [3, 1, 4, 2, 0]
    assert order.shard_order(1).tolist() == [1, 2, 3, 4, 0]
    shards, rows = order.addresses(0, np.arange(12))
    assert list(zip(shards.tolist(), rows.tolist(), strict=True)) == [
        (3, 0), (4, 0), (4, 4), (4, 5), (4, 3), (4, 7),
        (4, 6), (4, 2), (4, 1), (4, 14), (4, 15), (4, 9),
    ]  # fmt: skip


big_shard_sizes = shard_sizes.filter(lambda sizes: sum(sizes) >= 64)
big_windows = st.integers(8, 4096)


@given(big_shard_sizes, big_windows, seeds, st.integers(0, 1000), st.integers(1, 1000))
def test_epochs_give_different_orders(sizes, window, seed, epoch, step):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window)
    a, b = whole_epoch(order, epoch), whole_epoch(order, epoch + step)
    assert not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


@given(big_shard_sizes, big_windows, seeds, st.integers(1, 2**64 - 1), epochs)
def test_seeds_give_different_orders(sizes, window, seed, delta, epoch):
    other = (seed + delta) % 2**64
    a = whole_epoch(EpochOrder(tuple(sizes), seed=seed, window_size=window), epoch)
    b = whole_epoch(EpochOrder(tuple(sizes), seed=other, window_size=window), epoch)
    assert not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


def test_the_shard_order_changes_with_the_epoch():
    order = EpochOrder((10,) * 16, seed=0)
    orders = {tuple(order.shard_order(epoch)) for epoch in range(50)}
    assert len(orders) == 50
    assert order.shard_order(0).tolist() != list(range(16))


@given(shard_sizes, window_sizes, seeds, epochs)
def test_reads_stay_local(sizes, window, seed, epoch):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window)
    shards, rows = whole_epoch(order, epoch)
    start = 0
    # The stream is the non-empty shards, one contiguous run each, in ``shard_order``.
    for shard in order.shard_order(epoch).tolist():
        size = sizes[shard]
        run_shards, run_rows = shards[start : start + size], rows[start : start + size]
        assert np.all(run_shards == shard)
        # Position i of a run reads from window i // window_size of the shard: windows are
        # visited in order, and a window's rows are a contiguous range of <= window_size rows.
        np.testing.assert_array_equal(run_rows // window, np.arange(size) // window)
        start += size
    assert start == len(order)


@given(shard_sizes, window_sizes, seeds, epochs)
def test_unshuffled_is_the_identity_order(sizes, window, seed, epoch):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window, shuffle=False)
    shards, rows = whole_epoch(order, epoch)
    np.testing.assert_array_equal(order.shard_order(epoch), np.arange(len(sizes)))
    np.testing.assert_array_equal(
        flat_indices(order.shard_sizes, shards, rows), np.arange(len(order))
    )
    assert np.all(np.diff(shards) >= 0)


@given(
    shard_sizes.filter(lambda sizes: sum(sizes) > 0),
    window_sizes,
    seeds,
    epochs,
    st.booleans(),
    st.data(),
)
def test_scalar_and_vectorized_agree(sizes, window, seed, epoch, shuffle, data):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window, shuffle=shuffle)
    positions = data.draw(st.lists(st.integers(0, len(order) - 1), min_size=1, max_size=20))
    shards, rows = order.addresses(epoch, np.array(positions, dtype=np.uint64))
    assert shards.dtype == rows.dtype == np.int64
    for position, shard, row in zip(positions, shards.tolist(), rows.tolist(), strict=True):
        assert order.address(epoch, position) == (shard, row)
        assert order.address(epoch, np.int32(position)) == (shard, row)


def test_addresses_keep_the_shape_of_the_positions():
    order = EpochOrder((5, 6, 7), seed=3, window_size=4)
    positions = np.arange(18).reshape(3, 6)
    shards, rows = order.addresses(1, positions)
    assert shards.shape == rows.shape == (3, 6)
    flat = order.addresses(1, positions.ravel())
    np.testing.assert_array_equal(shards.ravel(), flat[0])
    np.testing.assert_array_equal(rows.ravel(), flat[1])
    empty_shards, empty_rows = order.addresses(1, [])
    assert empty_shards.shape == empty_rows.shape == (0,)
    assert EpochOrder(()).addresses(0, np.zeros((0, 2), dtype=np.int64))[0].shape == (0, 2)


@given(shard_sizes.filter(lambda sizes: sum(sizes) > 0), st.integers(0, 10**12))
def test_locate_splits_a_global_position_into_epoch_and_position(sizes, global_position):
    order = EpochOrder(tuple(sizes))
    epoch, position = order.locate(global_position)
    assert epoch * len(order) + position == global_position
    assert 0 <= position < len(order)


def test_locate_refuses_what_it_cannot_place():
    with pytest.raises(ValueError, match="no rows"):
        EpochOrder((0, 0)).locate(0)
    with pytest.raises(IndexError, match="-1"):
        EpochOrder((3,)).locate(-1)
    with pytest.raises(TypeError, match="global_position"):
        EpochOrder((3,)).locate(1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"shard_sizes": (3, -1)}, ValueError, r"shard_sizes\[1\] is -1"),
        ({"shard_sizes": (3, 1.5)}, TypeError, r"shard_sizes\[1\] must be an integer"),
        ({"shard_sizes": (True,)}, TypeError, "bool"),
        ({"shard_sizes": (2**62, 2**62)}, ValueError, "too many"),
        ({"shard_sizes": (3,), "window_size": 0}, ValueError, "window_size must be >= 1"),
        ({"shard_sizes": (3,), "window_size": 2.0}, TypeError, "window_size"),
        ({"shard_sizes": (3,), "seed": "1"}, TypeError, "seed must be an integer, got str"),
        ({"shard_sizes": (3,), "seed": 1.0}, TypeError, "seed must be an integer"),
        ({"shard_sizes": (3,), "seed": True}, TypeError, "seed"),
        ({"shard_sizes": (3,), "seed": -1}, ValueError, r"seed must be in \[0, 2\*\*64\)"),
        ({"shard_sizes": (3,), "seed": 2**64}, ValueError, "seed must be in"),
        ({"shard_sizes": (3,), "shuffle": 1}, TypeError, "shuffle must be a bool"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        EpochOrder(**kwargs)


def test_arguments_are_normalized():
    order = EpochOrder(np.array([3, 0, 4]), seed=np.uint64(2**64 - 1), window_size=np.int8(2))
    assert order.shard_sizes == (3, 0, 4)
    assert all(type(size) is int for size in order.shard_sizes)
    assert type(order.seed) is int and type(order.window_size) is int
    assert order == EpochOrder((3, 0, 4), seed=2**64 - 1, window_size=2)
    assert hash(order) == hash(EpochOrder((3, 0, 4), seed=2**64 - 1, window_size=2))


def test_positions_out_of_range_are_refused():
    order = EpochOrder((4, 0, 6), seed=1)
    for position in (-1, 10, 11):
        with pytest.raises(IndexError, match=rf"position {position} .* epoch of 10 rows"):
            order.address(0, position)
    with pytest.raises(IndexError, match=r"position 10 .* epoch of 10 rows"):
        order.addresses(0, np.arange(11))
    with pytest.raises(IndexError, match=r"position -3 .* epoch of 10 rows"):
        order.addresses(0, np.array([2, -3, 4]))
    with pytest.raises(IndexError, match=r"position 0 .* epoch of 0 rows"):
        EpochOrder((0,)).address(0, 0)
    with pytest.raises(TypeError, match="dtype float64"):
        order.addresses(0, np.array([1.0]))
    with pytest.raises(TypeError, match="position"):
        order.address(0, 1.0)


def test_epochs_out_of_range_are_refused():
    order = EpochOrder((4,))
    with pytest.raises(ValueError, match="epoch must be in"):
        order.address(-1, 0)
    with pytest.raises(ValueError, match="epoch must be in"):
        order.shard_order(2**63)
    with pytest.raises(TypeError, match="epoch"):
        order.addresses(0.0, [0])


def test_the_shard_order_cannot_be_corrupted_by_its_caller():
    order = EpochOrder((1, 2, 3), seed=4)
    with pytest.raises(ValueError, match="read-only"):
        order.shard_order(0)[0] = 2


def test_every_window_gets_its_own_permutation():
    # 64 windows of 16 rows in each of 2 shards: the in-window patterns must not repeat
    # across windows, shards or epochs (a key missing one of them would repeat them).
    order = EpochOrder((16 * 64, 16 * 64), seed=5, window_size=16)
    patterns = []
    for epoch in range(2):
        _, rows = whole_epoch(order, epoch)
        patterns += [tuple(r % 16) for r in rows.reshape(-1, 16)]
    assert len(set(patterns)) == len(patterns)
