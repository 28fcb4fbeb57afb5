"""The host split's shared last global batch (``share_last``, used with packing): every row
reaches exactly one host, unpadded, in indexed and streaming mode, and the state round-trips."""

from __future__ import annotations

from absl.testing import absltest, parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain.distributed import Hosts
from easydata_grain.graph.host_split import HostSliceDataset, HostSliceIterDataset, last_share
from tests.test_graph_ops import _NO_THREADS, GraphOpTestCase, ids, iterate, rows


def expected_parts(total: int, count: int, global_batch: int) -> list[list[int]]:
    """Each host's row ids: its contiguous part of every full global batch, then its share of
    the last partial one (rows ``[r*h//H, r*(h+1)//H)`` of it), restated from the docstring."""
    local = global_batch // count
    full, rest = divmod(total, global_batch)
    parts = []
    for h in range(count):
        mine = [g * global_batch + h * local + i for g in range(full) for i in range(local)]
        mine += range(
            full * global_batch + rest * h // count, full * global_batch + rest * (h + 1) // count
        )
        parts.append(mine)
    return parts


def split(total: int, hosts: Hosts, global_batch: int, streaming: bool) -> list[int]:
    if streaming:
        dataset = HostSliceIterDataset(
            rows(total).to_iter_dataset(_NO_THREADS),
            hosts,
            global_batch,
            pad_last=False,
            share_last=True,
        )
        return ids(list(iterate(dataset)))
    indexed = HostSliceDataset(rows(total), hosts, global_batch, pad_last=False, share_last=True)
    return ids([indexed[j] for j in range(len(indexed))])


@settings(deadline=None, max_examples=80)
@given(
    total=st.integers(1, 60),
    count=st.integers(1, 4),
    local=st.integers(1, 5),
    streaming=st.booleans(),
)
def test_every_row_reaches_exactly_one_host(
    total: int, count: int, local: int, streaming: bool
) -> None:
    global_batch = count * local
    parts = [split(total, Hosts(h, count), global_batch, streaming) for h in range(count)]
    assert parts == expected_parts(total, count, global_batch)
    assert sorted(i for part in parts for i in part) == list(range(total))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shares_are_contiguous_and_cover_the_rest() -> None:
    assert [last_share(5, Hosts(h, 3)) for h in range(3)] == [(0, 1), (1, 3), (3, 5)]
    assert [last_share(1, Hosts(h, 2)) for h in range(2)] == [(0, 0), (0, 1)]


class SharedLastBatchTest(GraphOpTestCase):
    """21 rows, global batches of 8 on 2 hosts: 2 full global batches, then 5 rows shared 2/3."""

    def indexed(self, index: int) -> HostSliceDataset:
        return HostSliceDataset(rows(21), Hosts(index, 2), 8, pad_last=False, share_last=True)

    def streamed(self, index: int) -> HostSliceIterDataset:
        return HostSliceIterDataset(
            rows(21).to_iter_dataset(_NO_THREADS),
            Hosts(index, 2),
            8,
            pad_last=False,
            share_last=True,
        )

    def test_tails(self) -> None:
        self.assertEqual(ids(list(iterate(self.indexed(0))))[8:], [16, 17])
        self.assertEqual(ids(list(iterate(self.indexed(1))))[8:], [18, 19, 20])

    @parameterized.parameters(0, 1)
    def test_getitems(self, host: int) -> None:
        ds = self.indexed(host)
        indices = [len(ds) - 1, 0, 9, 2]
        self.assertEqual(ds._getitems(indices), [ds[j] for j in indices])

    @parameterized.parameters(0, 1)
    def test_state_round_trip(self, host: int) -> None:
        self.assertResumesAtEveryElement(self.indexed(host))
        self.assertResumesAtEveryElement(self.streamed(host))

    def test_padded_and_shared_are_exclusive(self) -> None:
        with self.assertRaisesRegex(ValueError, "padded or shared"):
            HostSliceDataset(rows(3), Hosts(0, 2), 2, pad_last=True, share_last=True)
        with self.assertRaisesRegex(ValueError, "padded or shared"):
            HostSliceIterDataset(
                rows(3).to_iter_dataset(), Hosts(0, 2), 2, pad_last=True, share_last=True
            )


if __name__ == "__main__":
    absltest.main()
