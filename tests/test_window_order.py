"""Whole windows of the epoch order (``shard_at``, ``window_rows``) equal ``addresses``."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import order as order_module
from easydata_grain.order import EpochOrder

shard_sizes = st.lists(
    st.one_of(st.just(0), st.integers(1, 300), st.sampled_from([1023, 1024, 1025, 5000])),
    max_size=6,
)
window_sizes = st.one_of(st.integers(1, 70), st.sampled_from([255, 256, 1024, 4096, 10_000]))
seeds = st.one_of(st.integers(0, 1000), st.integers(0, 2**64 - 1))
epochs = st.one_of(st.integers(0, 1000), st.just(2**63 - 1))


def _by_windows(order: EpochOrder, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Every position's address, from ``shard_at`` and ``window_rows`` alone."""
    shards, rows = [], []
    position = 0
    while position < len(order):
        shard, first = order.shard_at(epoch, position)
        for window in range(-(-order.shard_sizes[shard] // order.window_length)):
            window_rows = order.window_rows(epoch, shard, window)
            shards.append(np.full(len(window_rows), shard))
            rows.append(window_rows)
        position = first + order.shard_sizes[shard]
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(shards), np.concatenate(rows)


@settings(deadline=None, max_examples=200)
@given(shard_sizes, window_sizes, seeds, epochs, st.booleans())
def test_windows_give_the_addresses_of_their_positions(sizes, window, seed, epoch, shuffle):
    order = EpochOrder(tuple(sizes), seed=seed, window_size=window, shuffle=shuffle)
    shards, rows = _by_windows(order, epoch)
    expected = order.addresses(epoch, np.arange(len(order)))
    np.testing.assert_array_equal(shards, expected[0])
    np.testing.assert_array_equal(rows, expected[1])
    assert rows.dtype == np.int64


def test_a_window_too_wide_for_a_table_is_walked_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = (3000, 700)
    order = EpochOrder(sizes, seed=5, window_size=2500)
    expected = order.addresses(9, np.arange(len(order)))
    monkeypatch.setattr(order_module, "_TABLE_BITS", 4)
    shards, rows = _by_windows(order, 9)
    np.testing.assert_array_equal(shards, expected[0])
    np.testing.assert_array_equal(rows, expected[1])


def test_windows_and_shards_out_of_range_are_refused() -> None:
    order = EpochOrder((10, 0, 5), seed=1, window_size=4)
    assert order.window_length == 4
    assert order.window_rows(0, 0, 2).tolist() in ([8, 9], [9, 8])
    for shard, window in ((0, 3), (1, 0), (3, 0), (-1, 0), (0, -1)):
        with pytest.raises(IndexError):
            order.window_rows(0, shard, window)
    with pytest.raises(IndexError):
        order.shard_at(0, 15)
    assert EpochOrder((3, 2), window_size=100).window_length == 3


@pytest.mark.parametrize("bits", range(order_module._TABLE_BITS + 1))
def test_the_feistel_table_is_the_feistel_permutation(bits: int) -> None:
    domain = np.arange(1 << bits, dtype=np.uint64)
    for key in (0, 12345, 2**64 - 1):
        expected = order_module._feistel(domain, np.uint64(bits), np.uint64(key))
        table = order_module._feistel_table(bits, key)
        np.testing.assert_array_equal(table, expected.astype(np.int64))


@pytest.mark.parametrize(
    ("epoch", "shard", "window", "first_rows", "digest"),
    [
        (3, 0, 0, [6664, 8209, 1178, 6447, 2981, 6162], "1cabb334361a161a"),
        (3, 0, 2, [23336, 21803, 22997, 22642, 24641, 22007], "eae3b47ef62b8e94"),
        (0, 1, 0, [7191, 1489, 942, 8964, 837, 4288], "d541d52f9187c14f"),
    ],
)
def test_whole_windows_are_pinned(epoch, shard, window, first_rows, digest):
    # Whole windows of 10,000 rows (and a last one of 5,000) go through the table and the
    # in-place walk; these values come from the code before them. Change them only on purpose:
    # a checkpoint names positions, so a different order reads different rows on resume.
    order = EpochOrder((25_000, 10_000), seed=42, window_size=10_000)
    rows = order.window_rows(epoch, shard, window)
    assert rows[:6].tolist() == first_rows
    assert hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()[:16] == digest
    start = window * 10_000
    assert sorted(rows.tolist()) == list(range(start, start + len(rows)))
