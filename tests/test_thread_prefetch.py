"""PrefetchThreadIterDataset, in the manner of Grain's own transformation tests: the same
elements, errors and states as its parent, whatever the thread has buffered."""

from __future__ import annotations

import gc
import json
import threading
import time
from typing import Any

import grain
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain.graph.shuffle_buffer import ShuffleBufferIterDataset
from easydata_grain.graph.stream_source import SourceIterDataset
from easydata_grain.graph.thread_prefetch import PrefetchThreadIterDataset, snapshot
from tests.fake_source import FakeSource

_NO_THREADS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _numbers(count: int) -> grain.IterDataset:
    return grain.MapDataset.range(count).map(lambda i: {"id": i}).to_iter_dataset(_NO_THREADS)


def _prefetched(count: int, buffer_size: int = 3) -> grain.IterDataset:
    return PrefetchThreadIterDataset(_numbers(count), prefetch_buffer_size=buffer_size)


def _threads() -> int:
    return sum(t.name == "easydata-prefetch" for t in threading.enumerate())


def _wait_for_full_buffer(iterator: Any) -> None:
    """Until the thread has filled its buffer (it is then ahead of the consumer)."""
    deadline = time.monotonic() + 10
    while iterator._buffer is not None and len(iterator._buffer._items) < iterator._buffer_size:
        assert time.monotonic() < deadline, "the thread never filled its buffer"
        time.sleep(0.001)


class _Failing(grain.IterDataset):
    """``{"id": i}`` for ``i < count``; element ``fail_at`` raises ``error`` (once, or every time
    it is asked for); the state is the next index and whether it has failed."""

    def __init__(self, count: int, fail_at: int, error: Exception, once: bool = False):
        super().__init__()
        self.count, self.fail_at, self.error, self.once = count, fail_at, error, once

    def __iter__(self) -> _FailingIterator:
        return _FailingIterator(self)


class _FailingIterator(grain.DatasetIterator):
    def __init__(self, dataset: _Failing):
        super().__init__()
        self._dataset = dataset
        self._next = 0
        self._failed = False

    def __next__(self) -> dict[str, int]:
        d = self._dataset
        if self._next >= d.count:
            raise StopIteration
        if self._next == d.fail_at and not (d.once and self._failed):
            self._failed = True
            raise d.error
        self._next += 1
        return {"id": self._next - 1}

    def get_state(self) -> dict[str, Any]:
        return {"next": self._next, "failed": self._failed}

    def set_state(self, state: dict[str, Any]) -> None:
        self._next, self._failed = state["next"], state["failed"]


class _InPlace(grain.IterDataset):
    """Counts up; its ``get_state`` returns the same dict each time, changed in place."""

    def __iter__(self) -> _InPlaceIterator:
        return _InPlaceIterator()


class _InPlaceIterator(grain.DatasetIterator):
    def __init__(self) -> None:
        super().__init__()
        self._state = {"next": 0, "seen": [], "array": np.zeros(1, np.int64)}

    def __next__(self) -> int:
        value = self._state["next"]
        if value >= 20:
            raise StopIteration
        self._state["next"] += 1
        self._state["seen"].append(value)
        self._state["array"][0] = value + 1
        return value

    def get_state(self) -> dict[str, Any]:
        return self._state

    def set_state(self, state: dict[str, Any]) -> None:
        self._state = {
            "next": state["next"],
            "seen": list(state["seen"]),
            "array": np.array(state["array"], np.int64),
        }


def test_iterates_the_parent() -> None:
    assert [r["id"] for r in _prefetched(10)] == list(range(10))
    assert list(PrefetchThreadIterDataset(_numbers(0), prefetch_buffer_size=1)) == []
    assert str(_prefetched(3, 2)) == "PrefetchThreadIterDataset(prefetch_buffer_size=2)"


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_rejects_a_bad_buffer_size(size: Any) -> None:
    with pytest.raises(ValueError, match="prefetch_buffer_size"):
        PrefetchThreadIterDataset(_numbers(3), prefetch_buffer_size=size)


def test_rejects_a_map_dataset() -> None:
    with pytest.raises(TypeError, match="to_iter_dataset"):
        PrefetchThreadIterDataset(grain.MapDataset.range(3), prefetch_buffer_size=2)


@pytest.mark.parametrize("buffer_size", [1, 2, 5])
def test_state_round_trip_at_every_position(buffer_size: int) -> None:
    dataset = _prefetched(12, buffer_size)
    iterator = iter(dataset)
    states, values = [], []
    while True:
        states.append(iterator.get_state())
        try:
            values.append(next(iterator)["id"])
        except StopIteration:
            break
    assert values == list(range(12))
    assert states == [{"next_index": i} for i in range(13)]  # the parent's own states
    for i, state in enumerate(states):
        iterator.set_state(state)
        assert [r["id"] for r in iterator] == values[i:]
        fresh = iter(dataset)
        fresh.set_state(json.loads(json.dumps(state)))
        assert [r["id"] for r in fresh] == values[i:]


def test_state_is_the_consumers_while_the_thread_is_ahead() -> None:
    iterator = iter(_prefetched(100, 4))
    assert next(iterator)["id"] == 0
    _wait_for_full_buffer(iterator)
    assert iterator.get_state() == {"next_index": 1}
    assert next(iterator)["id"] == 1
    assert iterator.get_state() == {"next_index": 2}


def test_set_state_mid_stream_while_the_thread_is_ahead() -> None:
    iterator = iter(_prefetched(100, 4))
    for _ in range(5):
        next(iterator)
    _wait_for_full_buffer(iterator)
    iterator.set_state({"next_index": 50})
    assert iterator._thread is None  # stopped and joined; restarted lazily
    assert iterator.get_state() == {"next_index": 50}
    assert [r["id"] for r in iterator] == list(range(50, 100))
    # Backwards too, after the end.
    iterator.set_state({"next_index": 3})
    assert next(iterator)["id"] == 3
    _wait_for_full_buffer(iterator)
    iterator.set_state({"next_index": 98})
    assert [r["id"] for r in iterator] == [98, 99]


def test_state_is_a_copy_of_a_parent_state_changed_in_place() -> None:
    iterator = iter(PrefetchThreadIterDataset(_InPlace(), prefetch_buffer_size=3))
    assert next(iterator) == 0
    _wait_for_full_buffer(iterator)
    state = iterator.get_state()
    assert state["next"] == 1 and state["seen"] == [0] and state["array"].tolist() == [1]
    state["seen"].append("changed by the caller")
    assert iterator.get_state()["seen"] == [0]
    rest = list(iterator)
    assert rest == list(range(1, 20))
    iterator.set_state(state | {"seen": [0]})
    assert list(iterator) == rest


def test_snapshot_copies_containers_and_shares_immutable_leaves() -> None:
    text = "x" * 1000
    state = {"a": [1, {"b": text}], "c": (2, np.arange(3)), "d": np.int64(4), "e": None}
    copied = snapshot(state)
    assert copied["a"] is not state["a"] and copied["a"][1] is not state["a"][1]
    assert copied["a"][1]["b"] is text
    assert copied["c"][1] is not state["c"][1] and copied["c"][1].tolist() == [0, 1, 2]
    assert copied["d"] == 4 and copied["e"] is None


@pytest.mark.parametrize("fail_at", [0, 1, 7])
def test_an_error_is_raised_after_the_elements_before_it(fail_at: int) -> None:
    error = KeyError("broken row")
    iterator = iter(PrefetchThreadIterDataset(_Failing(10, fail_at, error), prefetch_buffer_size=3))
    got = []
    with pytest.raises(KeyError) as raised:
        while True:
            got.append(next(iterator)["id"])
    assert raised.value is error
    assert got == list(range(fail_at))
    assert iterator._thread is None
    # Where the failed call left the parent.
    assert iterator.get_state() == {"next": fail_at, "failed": True}
    # As without prefetching, the next call asks the parent again.
    with pytest.raises(KeyError):
        next(iterator)


def test_after_an_error_the_next_call_continues_as_the_parent_does() -> None:
    dataset = _Failing(6, 2, ValueError("transient"), once=True)
    prefetched = iter(PrefetchThreadIterDataset(dataset, prefetch_buffer_size=2))
    plain = iter(_Failing(6, 2, ValueError("transient"), once=True))
    for iterator in (prefetched, plain):
        assert [next(iterator)["id"] for _ in range(2)] == [0, 1]
        with pytest.raises(ValueError, match="transient"):
            next(iterator)
    assert [r["id"] for r in prefetched] == [r["id"] for r in plain] == [2, 3, 4, 5]


def test_stop_iteration_propagates_and_repeats() -> None:
    iterator = iter(_prefetched(2))
    assert [next(iterator)["id"] for _ in range(2)] == [0, 1]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(iterator)
    assert iterator.get_state() == {"next_index": 2}


def test_a_get_state_error_goes_to_get_state_not_to_the_elements() -> None:
    source = SourceIterDataset(iter(range(5)))  # get_state refuses: a one-shot iterator
    iterator = iter(PrefetchThreadIterDataset(source, prefetch_buffer_size=2))
    assert next(iterator) == 0
    with pytest.raises(Exception, match="state"):
        iterator.get_state()
    assert list(iterator) == [1, 2, 3, 4]


def test_unresumable_stream_iterates_with_its_reason_in_the_state() -> None:
    source = SourceIterDataset(iter(range(3)), allow_unresumable=True)
    iterator = iter(PrefetchThreadIterDataset(source, prefetch_buffer_size=2))
    assert list(iterator) == [0, 1, 2]
    assert "not_resumable" in iterator.get_state()


def test_with_a_shuffle_buffer_upstream_matches_the_unprefetched_pipeline() -> None:
    def build(prefetch: bool) -> grain.IterDataset:
        ds = ShuffleBufferIterDataset(
            SourceIterDataset(FakeSource([17, 0, 23], block_rows=4)), 7, 3
        )
        ds = ds.map(lambda r: r["id"]).batch(3)
        return PrefetchThreadIterDataset(ds, prefetch_buffer_size=2) if prefetch else ds

    full = [b.tolist() for b in build(False)]
    iterator = iter(build(True))
    got, states = [], []
    for _ in range(5):
        got.append(next(iterator).tolist())
        states.append(json.loads(json.dumps(iterator.get_state())))
    assert got == full[:5]
    for k, state in enumerate(states):
        resumed = iter(build(True))
        resumed.set_state(state)
        assert [b.tolist() for b in resumed] == full[k + 1 :]


def test_close_stops_and_joins_the_thread_and_keeps_the_state() -> None:
    iterator = iter(_prefetched(100, 2))
    next(iterator)
    _wait_for_full_buffer(iterator)
    thread = iterator._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    iterator.close()
    iterator.close()  # idempotent
    assert not thread.is_alive()
    assert iterator.get_state() == {"next_index": 1}
    with pytest.raises(ValueError, match="closed"):
        next(iterator)
    with pytest.raises(ValueError, match="closed"):
        iterator.start_prefetch()


def test_start_prefetch_fills_the_buffer_before_the_first_element() -> None:
    iterator = iter(_prefetched(10, 3))
    iterator.start_prefetch()
    iterator.start_prefetch()  # idempotent
    _wait_for_full_buffer(iterator)
    assert iterator.get_state() == {"next_index": 0}
    assert [r["id"] for r in iterator] == list(range(10))


def test_no_thread_leaks_across_many_iterators() -> None:
    gc.collect()  # iterators of earlier tests
    before = _threads()
    for i in range(50):
        iterator = iter(_prefetched(1000, 2))
        next(iterator)
        if i % 2:
            iterator.close()
        del iterator  # garbage-collected with its thread running: __del__ stops it
    gc.collect()
    deadline = time.monotonic() + 10
    while _threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _threads() == before
    # An iterator read to its end, and one never started, leave none either.
    assert len(list(_prefetched(5))) == 5
    iter(_prefetched(5))
    gc.collect()
    assert _threads() == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(0, 30),
    buffer_size=st.integers(1, 5),
    stops=st.lists(st.integers(0, 31), min_size=1, max_size=4),
    fail_at=st.one_of(st.none(), st.integers(0, 30)),
)
def test_same_elements_errors_and_states_as_the_parent(
    count: int, buffer_size: int, stops: list[int], fail_at: int | None
) -> None:
    """Read both to random stop points, saving and restoring the state at each (on the same
    iterator, or on a fresh one): the same elements, the same errors, the same states."""

    def parent() -> grain.IterDataset:
        if fail_at is None:
            return _numbers(count)
        return _Failing(count, fail_at, RuntimeError(f"row {fail_at}"), once=True)

    def read(iterator: Any, steps: int) -> list[Any]:
        out: list[Any] = []
        for _ in range(steps):
            try:
                out.append(next(iterator)["id"])
            except StopIteration:
                out.append("end")
            except RuntimeError as exc:
                out.append(str(exc))
            out.append(iterator.get_state())
        return out

    plain = iter(parent())
    prefetched = iter(PrefetchThreadIterDataset(parent(), prefetch_buffer_size=buffer_size))
    for n, stop in enumerate(stops):
        assert read(prefetched, stop) == read(plain, stop)
        state = json.loads(json.dumps(prefetched.get_state()))
        if n % 2:
            prefetched.close()
            prefetched = iter(PrefetchThreadIterDataset(parent(), prefetch_buffer_size=buffer_size))
        prefetched.set_state(state)
        plain.set_state(state)
    assert read(prefetched, count + 2) == read(plain, count + 2)
    prefetched.close()
