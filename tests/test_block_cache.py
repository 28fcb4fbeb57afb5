"""Tests for BlockCache: each block read once, shared by concurrent readers, errors retried."""

from __future__ import annotations

import math
import pickle
import threading
import time

import pyarrow as pa
from absl.testing import absltest, parameterized

from easydata_grain.batch_format import Ragged
from easydata_grain.graph.block_cache import BlockCache
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.order import EpochOrder
from easydata_grain.sources.in_memory import InMemorySource
from tests.fake_source import FakeSource


def read_concurrently(cache: BlockCache, source: FakeSource, threads: int) -> list[object]:
    """``threads`` threads ask for block (0, 0) while its read waits; the results or errors,
    once the read is let go."""
    source.gate = threading.Event()
    results: list[object] = [None] * threads

    def ask(i: int) -> None:
        try:
            results[i] = cache.block(0, 0)
        except OSError as error:
            results[i] = error

    workers = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    assert source.reading.wait(timeout=10)
    time.sleep(0.05)  # the other threads reach the same pending read
    assert all(worker.is_alive() for worker in workers)  # all of them wait for that read
    source.gate.set()
    for worker in workers:
        worker.join(timeout=10)
    source.gate = None
    return results


class BlockCacheTest(parameterized.TestCase):
    def test_block(self) -> None:
        source = FakeSource([6, 5], block_rows=4)
        cache = BlockCache(source, capacity=2)
        self.assertEqual(cache.block(0, 1).rows, [{"id": 4}, {"id": 5}])
        self.assertEqual(cache.block(1, 0).rows, [{"id": i} for i in range(6, 10)])
        self.assertIsNone(cache.block(0, 1).table)
        self.assertFalse(cache.tables)

    @parameterized.parameters(1, 4, 16)
    def test_each_block_read_once_per_epoch(self, window_size: int) -> None:
        sizes, block_rows = [13, 7, 10], 4
        source = FakeSource(sizes, block_rows=block_rows)
        cache = BlockCache(source, capacity=math.ceil(window_size / block_rows) + 1)
        order = EpochOrder(tuple(sizes), seed=5, window_size=window_size)
        rows = []
        for k in range(len(order)):
            shard, row = order.address(0, k)
            block, offset = divmod(row, block_rows)
            rows.append(cache.block(shard, block).rows[offset])
        self.assertCountEqual([r["id"] for r in rows], range(sum(sizes)))
        blocks = sum(math.ceil(n / block_rows) for n in sizes)
        self.assertLen(source.reads, blocks)
        self.assertEqual(set(source.reads.values()), {1})
        self.assertEqual(cache.reads, blocks)

    def test_least_recently_used_block_is_evicted(self) -> None:
        source = FakeSource([12], block_rows=4)
        cache = BlockCache(source, capacity=2)
        for block in (0, 1, 0, 2, 0, 1):
            cache.block(0, block)
        # Block 1 was evicted by block 2 (block 0 had been used since), then read again.
        self.assertEqual(source.reads, {(0, 0): 1, (0, 1): 2, (0, 2): 1})

    def test_concurrent_readers_share_one_read(self) -> None:
        source = FakeSource([8], block_rows=4)
        cache = BlockCache(source, capacity=2)
        blocks = read_concurrently(cache, source, threads=4)
        self.assertEqual(source.reads[0, 0], 1)
        self.assertTrue(all(block is blocks[0] for block in blocks))
        self.assertEqual(blocks[0].rows, [{"id": i} for i in range(4)])

    def test_error_reaches_every_waiter_and_a_later_call_retries(self) -> None:
        source = FakeSource([8], block_rows=4)
        source.failures = 1
        cache = BlockCache(source, capacity=2)
        errors = read_concurrently(cache, source, threads=3)
        self.assertTrue(all(isinstance(e, OSError) for e in errors), errors)
        self.assertTrue(all(e is errors[0] for e in errors))
        self.assertEqual(source.reads[0, 0], 1)
        self.assertEqual(cache.block(0, 0).rows[0], {"id": 0})
        self.assertEqual(source.reads[0, 0], 2)

    def test_prefetch_reads_in_the_background_once(self) -> None:
        source = FakeSource([12], block_rows=4)
        cache = BlockCache(source, capacity=4, read_threads=2)
        cache.prefetch([(0, 0), (0, 1), (0, 2), (0, 1)])
        self.assertEqual([cache.block(0, b).rows[0]["id"] for b in range(3)], [0, 4, 8])
        self.assertEqual(source.reads, {(0, 0): 1, (0, 1): 1, (0, 2): 1})

    def test_prefetch_without_threads_reads_nothing(self) -> None:
        source = FakeSource([12], block_rows=4)
        BlockCache(source, capacity=4).prefetch([(0, 0), (0, 1)])
        self.assertEqual(source.reads, {})

    def test_tables_from_a_columnar_source(self) -> None:
        source = InMemorySource(pa.table({"id": [1, 2, 3], "tokens": [[1], [2, 3], []]}))
        source.block_rows = 2
        block = BlockCache(source, capacity=2).block(0, 1)
        self.assertEqual(block.table.num_rows, 1)
        self.assertEqual(block.rows[0]["id"], 3)
        self.assertEqual(block.columns["id"].tolist(), [3])
        self.assertIsInstance(block.columns["tokens"], Ragged)

    def test_pickles_without_its_blocks(self) -> None:
        source = FakeSource([8], block_rows=4)
        cache = BlockCache(source, capacity=2, read_threads=1)
        cache.block(0, 0)
        copy = pickle.loads(pickle.dumps(cache))
        self.assertEqual((copy.reads, copy.read_threads), (0, 1))
        self.assertEqual(copy.block(0, 0).rows[1], {"id": 1})

    def test_invalid_capacity(self) -> None:
        with self.assertRaisesRegex(ValueError, "capacity must be >= 1"):
            BlockCache(FakeSource([4]), capacity=0)


class IndexedSourceReadsTest(parameterized.TestCase):
    """The cache as IndexedSourceDataset sizes it: each block read at most once per epoch."""

    @parameterized.product(
        window_size=[1, 8, 64], read_threads=[0, 2], num_epochs=[1, 2], batch_size=[1, 8]
    )
    def test_each_block_read_at_most_once_per_epoch(
        self, window_size: int, read_threads: int, num_epochs: int, batch_size: int
    ) -> None:
        source = FakeSource([40, 3, 25], block_rows=4)
        ds = IndexedSourceDataset(
            source,
            seed=1,
            window_size=window_size,
            num_epochs=num_epochs,
            read_threads=read_threads,
        )
        if batch_size == 1:
            ids = [ds[i]["id"] for i in range(len(ds))]
        else:
            batches = [
                range(i, min(i + batch_size, len(ds))) for i in range(0, len(ds), batch_size)
            ]
            ids = [row["id"] for batch in batches for row in ds._getitems(list(batch))]
        self.assertCountEqual(ids, list(range(68)) * num_epochs)
        self.assertLen(source.reads, 10 + 1 + 7)
        # Once per epoch at most: a block cached at the end of an epoch may serve the next.
        self.assertLessEqual(max(source.reads.values()), num_epochs)


if __name__ == "__main__":
    absltest.main()
