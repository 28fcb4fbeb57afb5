"""IndexedSourceDataset gives the rows at the epoch order's addresses, whatever the indices.

Batches are built from segments (windows or blocks, their addresses computed at once); these
properties check every way of asking for rows against ``EpochOrder.address``, one row at a
time: ``_gather_columns``, ``_getitems`` and ``[i]``, for ranges, sorted and unsorted lists
with repeats, over several epochs, shuffled (any window) or not, with read threads or not.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.order import EpochOrder
from easydata_grain.sources.arrow_rows import batch_to_rows


class TableShards:
    """Shards of ``sizes`` rows (``id`` counts over all shards; ``tokens`` a list of ``id % 4``
    copies of it), read as Arrow tables of ``block_rows`` rows."""

    def __init__(self, sizes: list[int], block_rows: int):
        self.sizes = sizes
        self.block_rows = block_rows
        self.first_ids = [0, *itertools.accumulate(sizes)]
        self.block_schema = pa.schema([("id", pa.int64()), ("tokens", pa.list_(pa.int32()))])

    def row_counts(self) -> list[int]:
        return list(self.sizes)

    def block_starts(self, shard: int) -> range:
        return range(0, self.sizes[shard], self.block_rows)

    def read_block_table(self, shard: int, block: int) -> pa.Table:
        start = self.first_ids[shard] + block * self.block_rows
        stop = min(start + self.block_rows, self.first_ids[shard + 1])
        ids = list(range(start, stop))
        tokens = [[i] * (i % 4) for i in ids]
        return pa.table({"id": ids, "tokens": tokens}, schema=self.block_schema)

    def table_rows(self, table: pa.Table) -> list[dict[str, Any]]:
        return [row for batch in table.to_batches() for row in batch_to_rows(batch)]

    def read_block(self, shard: int, block: int) -> list[dict[str, Any]]:
        return self.table_rows(self.read_block_table(shard, block))


@st.composite
def datasets(draw: st.DrawFn) -> IndexedSourceDataset:
    sizes = draw(st.lists(st.integers(0, 60), min_size=1, max_size=4).filter(any))
    shuffle = draw(st.booleans())
    return IndexedSourceDataset(
        TableShards(sizes, draw(st.integers(1, 25))),
        seed=draw(st.integers(0, 2**32)),
        shuffle=shuffle,
        window_size=draw(st.sampled_from([1, 2, 3, 7, 16, 50, 5000])),
        num_epochs=draw(st.integers(1, 3)),
        first_epoch=draw(st.integers(0, 5)),
        read_threads=draw(st.sampled_from([0, 2])),
    )


def _expected_ids(dataset: IndexedSourceDataset, indices: list[int]) -> list[int]:
    source = dataset._source
    ids = []
    for index in indices:
        epoch, position = divmod(index, dataset.rows_per_epoch)
        shard, row = dataset.order.address(epoch + dataset._first_epoch, position)
        ids.append(source.first_ids[shard] + row)
    return ids


@st.composite
def index_sets(draw: st.DrawFn, length: int) -> list[int] | range:
    kind = draw(st.sampled_from(["range", "sorted", "any"]))
    if kind == "range":
        start = draw(st.integers(0, length - 1))
        return range(start, draw(st.integers(start + 1, length)))
    indices = draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=40))
    return sorted(indices) if kind == "sorted" else indices


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dataset=datasets(), data=st.data())
def test_every_way_of_reading_gives_the_rows_at_the_addresses(
    dataset: IndexedSourceDataset, data: st.DataObject
) -> None:
    for _ in range(3):  # several requests on one dataset: its caches must not go stale
        indices = data.draw(index_sets(len(dataset)))
        expected = _expected_ids(dataset, list(indices))
        columns = dataset._gather_columns(indices)
        assert columns["id"].tolist() == expected
        tokens = columns["tokens"]
        rows = np.split(tokens.values, tokens.offsets[1:-1])
        assert [row.tolist() for row in rows] == [[i] * (i % 4) for i in expected]
        assert [row["id"] for row in dataset._getitems(indices)] == expected
        assert [dataset[i]["id"] for i in indices] == expected


@pytest.mark.parametrize("read_threads", [0, 2])
@pytest.mark.parametrize("batch_size", [1, 7, 300])
def test_each_window_is_permuted_once_per_epoch(monkeypatch, read_threads, batch_size):
    # Batches smaller than a window share its permutation (the segment keeps it).
    calls: collections.Counter = collections.Counter()
    window_rows = EpochOrder.window_rows

    def counted(order: EpochOrder, epoch: int, shard: int, window: int) -> np.ndarray:
        calls[epoch, shard, window] += 1
        return window_rows(order, epoch, shard, window)

    monkeypatch.setattr(EpochOrder, "window_rows", counted)
    sizes, window = [5000, 4100, 2000], 4096
    dataset = IndexedSourceDataset(
        TableShards(sizes, 1000),
        seed=3,
        window_size=window,
        num_epochs=2,
        read_threads=read_threads,
    )
    ids = []
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        ids += dataset._gather_columns(range(start, stop))["id"].tolist()
    assert ids == _expected_ids(dataset, list(range(len(dataset))))
    windows = [
        (e, s, w) for e in (0, 1) for s, n in enumerate(sizes) for w in range(-(-n // window))
    ]
    assert calls == collections.Counter(windows)
