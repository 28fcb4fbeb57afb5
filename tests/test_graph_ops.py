"""Unit tests of each graph op, in the manner of Grain's own transformation tests.

Every op is checked for its length, ``__getitem__`` and ``_getitems`` where it is random
access, iteration, and its iterator state: a state saved before any element, passed through
JSON as a checkpoint stores it and set on the same or a fresh iterator, continues identically.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import grain
import pyarrow as pa
from absl.testing import absltest, parameterized

from easydata_grain.distributed import Hosts
from easydata_grain.graph.batch_dataset import BatchedMapDataset, BatchIterDataset
from easydata_grain.graph.drop_skipped import DropSkippedRows
from easydata_grain.graph.host_split import HostSliceDataset, HostSliceIterDataset
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.graph.shuffle_buffer import ShuffleBufferIterDataset
from easydata_grain.graph.stream_source import SourceIterDataset
from easydata_grain.io.errors import NotResumableError
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.skipped import SkippedRow
from easydata_grain.transforms.collate import Collate
from tests.fake_source import FakeSource
from tests.helpers import plain

_NO_THREADS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def rows(count: int) -> grain.MapDataset:
    """``{"id": i}`` for ``i`` in ``range(count)``."""
    return grain.MapDataset.range(count).map(lambda i: {"id": i})


def iterate(dataset: grain.MapDataset | grain.IterDataset) -> grain.DatasetIterator:
    """A fresh iterator, a ``MapDataset`` read in order without threads (as the loader does)."""
    if isinstance(dataset, grain.MapDataset):
        dataset = dataset.to_iter_dataset(_NO_THREADS)
    return iter(dataset)


def ids(elements: list[Any]) -> list[int]:
    """The ``id`` of each row."""
    return [row["id"] for row in elements]


class GraphOpTestCase(parameterized.TestCase):
    """Checks shared by the ops' tests."""

    def assertResumesAtEveryElement(self, dataset: grain.MapDataset | grain.IterDataset) -> None:
        """A state saved before each element continues identically on the same iterator and on
        a fresh one (after a JSON round trip)."""
        iterator = iterate(dataset)
        states, values = [], []
        while True:
            states.append(iterator.get_state())
            try:
                values.append(plain(next(iterator)))
            except StopIteration:
                break
        self.assertNotEmpty(values)
        for i, state in enumerate(states):
            iterator.set_state(state)
            self.assertEqual([plain(v) for v in iterator], values[i:], msg=f"same, state {i}")
            fresh = iterate(dataset)
            fresh.set_state(json.loads(json.dumps(state)))
            self.assertEqual([plain(v) for v in fresh], values[i:], msg=f"fresh, state {i}")


class IndexedSourceDatasetTest(GraphOpTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.source = FakeSource([5, 0, 3, 4], block_rows=2)

    def dataset(self, **options: Any) -> IndexedSourceDataset:
        return IndexedSourceDataset(self.source, seed=3, window_size=2, **options)

    @parameterized.parameters((1, 12), (3, 36), (None, sys.maxsize))
    def test_len(self, num_epochs: int | None, length: int) -> None:
        self.assertLen(self.dataset(num_epochs=num_epochs), length)

    def test_getitem(self) -> None:
        ds = self.dataset(num_epochs=2)
        for i in range(len(ds)):
            epoch, position = divmod(i, ds.rows_per_epoch)
            self.assertEqual(ds[i], self.source.row(*ds.order.address(epoch, position)))

    def test_every_epoch_is_a_new_permutation(self) -> None:
        ds = self.dataset(num_epochs=2)
        epochs = [ids([ds[i] for i in range(e * 12, (e + 1) * 12)]) for e in range(2)]
        self.assertCountEqual(epochs[0], range(12))
        self.assertCountEqual(epochs[1], range(12))
        self.assertNotEqual(epochs[0], epochs[1])

    def test_unshuffled(self) -> None:
        ds = self.dataset(shuffle=False)
        self.assertEqual(ids([ds[i] for i in range(len(ds))]), list(range(12)))

    def test_first_epoch(self) -> None:
        self.assertEqual(self.dataset(first_epoch=2)[5], self.dataset(num_epochs=3)[29])

    def test_getitems(self) -> None:
        ds = self.dataset(num_epochs=2)
        indices = [23, 0, 5, 5, 12, 11, 3]
        self.assertEqual(ds._getitems(indices), [ds[i] for i in indices])

    def test_slice(self) -> None:
        ds = self.dataset()
        self.assertEqual(list(ds[3:7]), [ds[i] for i in range(3, 7)])

    def test_iter(self) -> None:
        ds = self.dataset(num_epochs=2)
        self.assertEqual(list(iterate(ds)), [ds[i] for i in range(len(ds))])

    def test_state_round_trip(self) -> None:
        self.assertResumesAtEveryElement(self.dataset(num_epochs=2))

    def test_skipped_row_keeps_its_address(self) -> None:
        source = FakeSource([6], block_rows=4, skipped=[2])
        ds = IndexedSourceDataset(source, shuffle=False)
        self.assertEqual(ds[2], SkippedRow("shard-0", 2, None))
        self.assertEqual(ds[3], {"id": 3})

    def test_columns_gathered_as_rows_are(self) -> None:
        table = pa.table({"id": list(range(10)), "tokens": [[i] * (i % 3) for i in range(10)]})
        ds = IndexedSourceDataset(InMemorySource(table), seed=1, window_size=4)
        self.assertEqual(ds.table_schema, table.schema)
        indices = [7, 2, 9, 0]
        columns = ds._gather_columns(indices)
        expected = ds._getitems(indices)
        self.assertEqual(columns["id"].tolist(), ids(expected))
        self.assertEqual(Collate(pad=True).columns(columns)["tokens"].shape[0], 4)

    def test_rows_only_source_has_no_table_schema(self) -> None:
        self.assertIsNone(self.dataset().table_schema)


class BatchedMapDatasetTest(GraphOpTestCase):
    @parameterized.parameters((10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3))
    def test_len(self, count: int, batch_size: int, drop_remainder: bool, length: int) -> None:
        ds = BatchedMapDataset(
            rows(count), batch_size, drop_remainder=drop_remainder, batch_fn=Collate()
        )
        self.assertLen(ds, length)

    def test_getitem(self) -> None:
        ds = BatchedMapDataset(rows(10), 3, drop_remainder=False, batch_fn=Collate())
        self.assertEqual(plain(ds[1]), {"id": [3, 4, 5]})
        self.assertEqual(plain(ds[3]), {"id": [9]})

    def test_getitems(self) -> None:
        ds = BatchedMapDataset(rows(10), 3, drop_remainder=True, batch_fn=Collate())
        self.assertEqual(plain(ds._getitems([2, 0])), [plain(ds[2]), plain(ds[0])])

    def test_rows_are_fetched_in_bulk(self) -> None:
        class BulkOnly(grain.MapDataset):
            """Rows that can only be fetched with ``_getitems``."""

            def __len__(self) -> int:
                return 5

            def __getitem__(self, index: Any) -> Any:
                raise AssertionError("a row fetched alone")

            def _getitems(self, indices: Any) -> list[Any]:
                return [{"id": i} for i in indices]

        ds = BatchedMapDataset(BulkOnly(), 2, drop_remainder=False, batch_fn=list)
        self.assertEqual(ds[2], [{"id": 4}])

    def test_iter(self) -> None:
        ds = BatchedMapDataset(rows(7), 2, drop_remainder=False, batch_fn=Collate())
        self.assertEqual([plain(b)["id"] for b in iterate(ds)], [[0, 1], [2, 3], [4, 5], [6]])

    def test_state_round_trip(self) -> None:
        ds = BatchedMapDataset(rows(11), 3, drop_remainder=False, batch_fn=Collate())
        self.assertResumesAtEveryElement(ds)

    def test_columnar_batches_equal_collated_rows(self) -> None:
        table = pa.table({"id": list(range(10)), "tokens": [[i] * (i % 3) for i in range(10)]})
        parent = IndexedSourceDataset(InMemorySource(table), seed=1, window_size=4)
        collate = Collate(pad=True)
        ds = BatchedMapDataset(parent, 4, drop_remainder=False, batch_fn=collate)
        self.assertIn("columnar=True", str(ds))
        for i in range(len(ds)):
            expected = collate(parent._getitems(list(range(4 * i, min(4 * i + 4, 10)))))
            self.assertEqual(plain(ds[i]), plain(expected))


class BatchIterDatasetTest(GraphOpTestCase):
    def batches(self, count: int = 11) -> BatchedMapDataset:
        return BatchedMapDataset(rows(count), 3, drop_remainder=False, batch_fn=Collate())

    def test_same_elements_and_states_as_grains_iterator(self) -> None:
        ours, grains = iter(BatchIterDataset(self.batches())), iterate(self.batches())
        while True:
            self.assertEqual(ours.get_state(), grains.get_state())
            try:
                expected = plain(next(grains))
            except StopIteration:
                self.assertRaises(StopIteration, next, ours)
                break
            self.assertEqual(plain(next(ours)), expected)
        self.assertEqual(ours.get_state(), {"next_index": 4})

    def test_state_round_trip(self) -> None:
        self.assertResumesAtEveryElement(BatchIterDataset(self.batches()))

    def test_out_of_range_state_and_closed_iterator(self) -> None:
        iterator = iter(BatchIterDataset(self.batches()))
        for index in (-1, 5):
            with self.assertRaises(IndexError):
                iterator.set_state({"next_index": index})
        iterator.set_state({"next_index": 4})
        self.assertRaises(StopIteration, next, iterator)
        iterator.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            next(iterator)

    def test_parent_must_be_batches(self) -> None:
        with self.assertRaisesRegex(TypeError, "BatchedMapDataset"):
            BatchIterDataset(rows(3))  # type: ignore[arg-type]


class HostSliceDatasetTest(GraphOpTestCase):
    """21 rows, global batches of 8 split between 2 hosts: 2 full global batches and 5 rows."""

    def host(self, index: int, pad_last: bool = False) -> HostSliceDataset:
        return HostSliceDataset(rows(21), Hosts(index, 2), 8, pad_last=pad_last)

    @parameterized.parameters((False, 8), (True, 12))
    def test_len(self, pad_last: bool, length: int) -> None:
        self.assertLen(self.host(0, pad_last), length)
        self.assertLen(self.host(1, pad_last), length)

    def test_len_of_an_endless_parent(self) -> None:
        endless = grain.MapDataset.range(sys.maxsize)
        self.assertLen(HostSliceDataset(endless, Hosts(1, 2), 8, pad_last=False), sys.maxsize)

    def test_getitem(self) -> None:
        self.assertEqual([self.host(1)[j] for j in (0, 3, 4)], [{"id": 4}, {"id": 7}, {"id": 12}])

    def test_hosts_take_contiguous_parts_of_each_global_batch(self) -> None:
        hosts = [list(iterate(self.host(h))) for h in range(2)]
        merged = [row for g in range(2) for h in range(2) for row in hosts[h][4 * g : 4 * g + 4]]
        self.assertEqual(ids(merged), list(range(16)))

    def test_last_global_batch_padded(self) -> None:
        tails = [[self.host(h, pad_last=True)[j] for j in range(8, 12)] for h in range(2)]
        self.assertEqual(tails[0], [{"id": i, "sample_mask": True} for i in range(16, 20)])
        padding = {"id": 20, "sample_mask": False}
        self.assertEqual(tails[1], [{"id": 20, "sample_mask": True}, padding, padding, padding])

    @parameterized.parameters(False, True)
    def test_getitems(self, pad_last: bool) -> None:
        ds = self.host(1, pad_last)
        indices = [len(ds) - 1, 0, 5, 2]
        self.assertEqual(ds._getitems(indices), [ds[j] for j in indices])

    @parameterized.parameters(False, True)
    def test_state_round_trip(self, pad_last: bool) -> None:
        self.assertResumesAtEveryElement(self.host(1, pad_last))

    def test_columns_carry_the_mask(self) -> None:
        parent = IndexedSourceDataset(InMemorySource(pa.table({"id": list(range(21))})))
        ds = HostSliceDataset(parent, Hosts(1, 2), 8, pad_last=True)
        self.assertIn("sample_mask", ds.table_schema.names)
        indices = list(range(8, 12))
        columns = ds._gather_columns(indices)
        expected = ds._getitems(indices)
        self.assertEqual(columns["id"].tolist(), ids(expected))
        self.assertEqual(columns["sample_mask"].tolist(), [r["sample_mask"] for r in expected])


class HostSliceIterDatasetTest(GraphOpTestCase):
    """The same split on a stream: each host reads it and keeps its part of each global batch."""

    def host(self, index: int, pad_last: bool = False) -> HostSliceIterDataset:
        return HostSliceIterDataset(
            rows(21).to_iter_dataset(_NO_THREADS), Hosts(index, 2), 8, pad_last=pad_last
        )

    def test_iter(self) -> None:
        self.assertEqual(ids(list(iterate(self.host(0)))), [0, 1, 2, 3, 8, 9, 10, 11])
        self.assertEqual(ids(list(iterate(self.host(1)))), [4, 5, 6, 7, 12, 13, 14, 15])

    def test_iter_padded(self) -> None:
        tails = [list(iterate(self.host(h, pad_last=True)))[8:] for h in range(2)]
        self.assertEqual(tails[0], [{"id": i, "sample_mask": True} for i in range(16, 20)])
        padding = {"id": 20, "sample_mask": False}
        self.assertEqual(tails[1], [{"id": 20, "sample_mask": True}, padding, padding, padding])

    def test_same_as_the_random_access_split(self) -> None:
        for pad_last in (False, True):
            indexed = HostSliceDataset(rows(21), Hosts(1, 2), 8, pad_last=pad_last)
            streamed = list(iterate(self.host(1, pad_last)))
            self.assertEqual(streamed, [indexed[j] for j in range(len(indexed))])

    @parameterized.parameters(False, True)
    def test_state_round_trip(self, pad_last: bool) -> None:
        self.assertResumesAtEveryElement(self.host(1, pad_last))


class Numbers:
    """Rows ``{"id": i}`` for ``i < count`` from an iterable with a ``datasets``-style state."""

    def __init__(self, count: int):
        self.count = count
        self.next = 0

    def __iter__(self) -> Iterator[dict[str, int]]:
        while self.next < self.count:
            self.next += 1
            yield {"id": self.next - 1}

    def state_dict(self) -> dict[str, int]:
        return {"next": self.next}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next = state["next"]


class SourceIterDatasetTest(GraphOpTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.source = FakeSource([5, 0, 3, 4], block_rows=2)

    def test_iter(self) -> None:
        self.assertEqual(ids(list(iterate(SourceIterDataset(self.source)))), list(range(12)))

    def test_shard_order(self) -> None:
        ds = SourceIterDataset(self.source, shard_order=[3, 0])
        self.assertEqual(ids(list(iterate(ds))), [8, 9, 10, 11, 0, 1, 2, 3, 4])

    @parameterized.parameters([[0, 0]], [[4]], [[-1]], [[0.0]])
    def test_invalid_shard_order(self, shard_order: list[Any]) -> None:
        with self.assertRaisesRegex(ValueError, "shard_order must list distinct shard indices"):
            SourceIterDataset(self.source, shard_order=shard_order)

    def test_invalid_sources(self) -> None:
        with self.assertRaisesRegex(ValueError, "shard_order applies only"):
            SourceIterDataset([{"id": 0}], shard_order=[0])
        with self.assertRaises(TypeError):
            SourceIterDataset(42)

    def test_state_is_the_shard_and_the_next_row(self) -> None:
        iterator = iterate(SourceIterDataset(self.source))
        for _ in range(6):
            next(iterator)
        self.assertEqual(iterator.get_state(), {"shard": 2, "row": 1})

    def test_state_round_trip(self) -> None:
        self.assertResumesAtEveryElement(SourceIterDataset(self.source, shard_order=[2, 3, 0]))

    def test_skipped_rows_are_dropped_and_counted(self) -> None:
        ds = SourceIterDataset(FakeSource([6, 3], skipped=[2, 3, 6]))
        self.assertEqual(ids(list(iterate(ds))), [0, 1, 4, 5, 7, 8])
        self.assertResumesAtEveryElement(ds)

    def test_stateful_iterable(self) -> None:
        ds = SourceIterDataset(Numbers(7))
        self.assertEqual(ids(list(iterate(ds))), list(range(7)))
        self.assertResumesAtEveryElement(ds)

    def test_plain_iterable_is_not_resumable(self) -> None:
        ds = SourceIterDataset([{"id": i} for i in range(3)])
        self.assertIsNotNone(ds.not_resumable_reason)
        with self.assertRaises(NotResumableError):
            iterate(ds).get_state()
        allowed = iterate(SourceIterDataset([{"id": 0}], allow_unresumable=True))
        self.assertIn("not_resumable", allowed.get_state())
        with self.assertRaises(NotResumableError):
            allowed.set_state(allowed.get_state())


class ShuffleBufferIterDatasetTest(GraphOpTestCase):
    def parent(self, kind: str) -> grain.IterDataset:
        """A parent whose buffer is saved as ``addresses`` (a seekable source) or ``values``."""
        if kind == "addresses":
            return SourceIterDataset(FakeSource([7, 5, 9], block_rows=3))
        return rows(21).to_iter_dataset(_NO_THREADS)

    @parameterized.parameters("addresses", "values")
    def test_iter_is_a_seeded_permutation(self, kind: str) -> None:
        shuffled = ids(list(iterate(ShuffleBufferIterDataset(self.parent(kind), 5, seed=1))))
        self.assertCountEqual(shuffled, range(21))
        self.assertNotEqual(shuffled, list(range(21)))
        again = ids(list(iterate(ShuffleBufferIterDataset(self.parent(kind), 5, seed=1))))
        other = ids(list(iterate(ShuffleBufferIterDataset(self.parent(kind), 5, seed=2))))
        self.assertEqual(shuffled, again)
        self.assertNotEqual(shuffled, other)

    def test_buffer_of_one_keeps_the_order(self) -> None:
        ds = ShuffleBufferIterDataset(self.parent("values"), 1, seed=1)
        self.assertEqual(ids(list(iterate(ds))), list(range(21)))

    @parameterized.parameters("addresses", "values")
    def test_state_holds_the_buffer(self, kind: str) -> None:
        iterator = iterate(ShuffleBufferIterDataset(self.parent(kind), 5, seed=1))
        next(iterator)
        buffer = iterator.get_state()["snapshot"]["buffer"]
        self.assertEqual((buffer["kind"], buffer["count"]), (kind, 4))

    @parameterized.parameters("addresses", "values")
    def test_state_round_trip(self, kind: str) -> None:
        self.assertResumesAtEveryElement(
            ShuffleBufferIterDataset(self.parent(kind), 5, seed=(1, 2))
        )

    def test_other_buffer_size_refused(self) -> None:
        iterator = iterate(ShuffleBufferIterDataset(self.parent("values"), 5, seed=1))
        next(iterator)
        other = iterate(ShuffleBufferIterDataset(self.parent("values"), 4, seed=1))
        with self.assertRaisesRegex(NotResumableError, "buffer_size=5"):
            other.set_state(iterator.get_state())

    def test_invalid_arguments(self) -> None:
        with self.assertRaisesRegex(TypeError, "to_iter_dataset"):
            ShuffleBufferIterDataset(rows(3), 2, seed=0)
        with self.assertRaisesRegex(ValueError, "buffer_size"):
            ShuffleBufferIterDataset(self.parent("values"), 0, seed=0)


class DropSkippedRowsTest(GraphOpTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.elements = [{"id": 0}, SkippedRow("a.jsonl", 1, 2), {"id": 2}, {"id": 3}]
        self.ds = grain.MapDataset.source(self.elements).filter(DropSkippedRows())

    def test_filter(self) -> None:
        self.assertTrue(DropSkippedRows().filter({"id": 0}))
        self.assertFalse(DropSkippedRows().filter(SkippedRow("a.jsonl", 1, 2)))
        self.assertEqual(repr(DropSkippedRows()), "DropSkippedRows()")

    def test_len(self) -> None:
        self.assertLen(self.ds, 4)  # as Grain's filters: a dropped element reads as None

    def test_getitem(self) -> None:
        self.assertEqual([self.ds[i] for i in range(4)], [{"id": 0}, None, {"id": 2}, {"id": 3}])

    def test_getitems(self) -> None:
        self.assertEqual(self.ds._getitems([3, 1, 0]), [{"id": 3}, None, {"id": 0}])

    def test_iter(self) -> None:
        self.assertEqual(list(iterate(self.ds)), [{"id": 0}, {"id": 2}, {"id": 3}])

    def test_state_round_trip(self) -> None:
        self.assertResumesAtEveryElement(self.ds)

    def test_after_an_indexed_source(self) -> None:
        source = FakeSource([6, 4], block_rows=3, skipped=[0, 5, 6])
        ds = IndexedSourceDataset(source, seed=2, window_size=4).filter(DropSkippedRows())
        self.assertCountEqual(ids(list(iterate(ds))), [1, 2, 3, 4, 7, 8, 9])
        self.assertResumesAtEveryElement(ds)


if __name__ == "__main__":
    absltest.main()
