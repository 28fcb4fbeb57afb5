"""A lean background thread that keeps a few elements of an IterDataset ready, with exact state."""

from __future__ import annotations

import collections
import copy
import sys
import threading
from typing import Any

import grain
import numpy as np

# Leaves a state may hold that nothing can change in place: shared, not copied.
_IMMUTABLE = (str, bytes, int, float, bool, complex, type(None), np.generic)


def snapshot(state: Any) -> Any:
    """A copy of ``state`` that later changes to the parent's own objects cannot reach: dicts,
    lists and tuples are copied level by level and numpy arrays copied, immutable leaves
    (numbers, strings, bytes) shared; anything else is deep-copied. For the small dicts our
    iterators' states are this costs about a microsecond, where ``copy.deepcopy`` costs tens."""
    kind = type(state)
    if kind is dict:
        return {key: snapshot(value) for key, value in state.items()}
    if kind is list:
        return [snapshot(value) for value in state]
    if kind is tuple:
        return tuple(snapshot(value) for value in state)
    if isinstance(state, _IMMUTABLE):
        return state
    if isinstance(state, np.ndarray):
        return state.copy()
    return copy.deepcopy(state)


class PrefetchThreadIterDataset(grain.IterDataset):
    """The parent's elements, produced by a background thread up to ``prefetch_buffer_size``
    elements ahead of the consumer.

    The same elements, errors and states as the parent itself: ``get_state()`` is the parent's
    state right after the element last returned (captured by the thread with ``snapshot``);
    ``set_state`` stops and joins the thread, drops what it had buffered, sets the parent's
    state, and the thread restarts at the next element; an exception raised by the parent
    (``StopIteration`` included) is raised to the consumer, the same object, after the
    elements produced before it, and the thread then stops, so that the next call asks the
    parent again, as it would be without prefetching. The thread is a daemon, stopped and
    joined by ``close()`` (which closing or garbage-collecting the iterator calls).

    Grain's own ``ThreadPrefetchIterDataset`` does the same with a deep copy of the state per
    element and its statistics, about 70 us per element; this one costs a few.
    """

    def __init__(self, parent: grain.IterDataset, *, prefetch_buffer_size: int):
        if not isinstance(parent, grain.IterDataset):
            raise TypeError(
                f"parent must be a grain.IterDataset (use .to_iter_dataset()), got "
                f"{type(parent).__name__}"
            )
        if (
            isinstance(prefetch_buffer_size, bool)
            or not isinstance(prefetch_buffer_size, int)
            or prefetch_buffer_size < 1
        ):
            raise ValueError(
                f"prefetch_buffer_size must be a positive int, got {prefetch_buffer_size!r}"
            )
        super().__init__(parent)
        self._buffer_size = prefetch_buffer_size

    def __iter__(self) -> PrefetchThreadIterator:
        return PrefetchThreadIterator(self._parent.__iter__(), self._buffer_size)

    def __str__(self) -> str:
        return f"PrefetchThreadIterDataset(prefetch_buffer_size={self._buffer_size})"


# What the thread puts in the buffer: (element, the parent's state after it, None), or
# (None, None, the exception the parent raised) as its last item.
_Item = tuple[Any, Any, BaseException | None]


class _Buffer:
    """The elements between the thread and the consumer, at most ``size``.

    A consumer that finds it empty sleeps until it is full (or the thread's last item is in):
    each wake-up hands the interpreter lock from one thread to the other, so waking once per
    ``size`` elements, not once per element, saves most of the hand-offs' cost while the
    consumer is the faster one (it takes the first element after a start as soon as it is
    there). The thread waits while the buffer is full; ``stop`` wakes both for good."""

    def __init__(self, size: int):
        self._items: collections.deque[_Item] = collections.deque()
        self._size = size
        self._wake_at = 1  # the first element goes out at once
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._consumer_waits = False
        self._producer_waits = False
        self.stopped = False

    def put(self, item: _Item, last: bool = False) -> None:
        """Add ``item`` once there is room (nothing after ``stop``)."""
        with self._lock:
            while len(self._items) >= self._size and not self.stopped:
                self._producer_waits = True
                self._not_full.wait()
                self._producer_waits = False
            if self.stopped:
                return
            self._items.append(item)
            if self._consumer_waits and (last or len(self._items) >= self._wake_at):
                self._not_empty.notify()

    def get(self) -> _Item:
        """The next item, waiting for the thread if there is none yet."""
        with self._lock:
            items = self._items
            if not items:
                self._consumer_waits = True
                while not items:
                    self._not_empty.wait()
                self._consumer_waits = False
                self._wake_at = self._size
            item = items.popleft()
            if self._producer_waits:
                self._not_full.notify()
            return item

    def stop(self) -> None:
        """Drop the items and wake the thread (its puts are ignored from now on)."""
        with self._lock:
            self.stopped = True
            self._items.clear()
            self._not_full.notify_all()


def _produce(parent: grain.DatasetIterator, buffer: _Buffer) -> None:
    """The thread: the parent's elements and states into ``buffer`` until it is stopped or the
    parent raises. It holds no reference to the consuming iterator, which can thus be
    garbage-collected (and then stops it)."""
    try:
        while not buffer.stopped:
            element = next(parent)
            buffer.put((element, _state_of(parent), None))
    except BaseException as exc:  # StopIteration and errors go to the consumer
        buffer.put((None, None, exc), last=True)


def _state_of(parent: grain.DatasetIterator) -> Any:
    """``snapshot`` of the parent's state, or the error its ``get_state`` raised."""
    try:
        return snapshot(parent.get_state())
    except Exception as exc:  # raised again by get_state, if it is called
        return _StateError(exc)


class _StateError:
    """The parent's ``get_state`` raised after an element (a stream that cannot save its
    position): the element still goes to the consumer, the error to ``get_state``."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


class PrefetchThreadIterator(grain.DatasetIterator):
    """The iterator of ``PrefetchThreadIterDataset``.

    ``self._state`` is the parent's state after the element last returned while the thread
    runs; None when the thread is not running, and the parent then stands exactly at the
    consumer's position."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.DatasetIterator, buffer_size: int):
        super().__init__(parent)
        self._buffer_size = buffer_size
        self._state: Any = None
        self._thread: threading.Thread | None = None
        self._buffer: _Buffer | None = None

    def start_prefetch(self) -> None:
        """Start producing elements now (idempotent); ``__next__`` starts it otherwise."""
        if self._closed:
            raise ValueError(f"Trying to use a closed iterator: '{self}'.")
        if self._thread is not None:
            return
        if self._state is None:
            self._state = _state_of(self._parent)
        self._buffer = _Buffer(self._buffer_size)
        self._thread = threading.Thread(
            target=_produce,
            args=(self._parent, self._buffer),
            name="easydata-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __next__(self) -> Any:
        if self._thread is None:
            self._assert_not_closed()
            self.start_prefetch()
        element, state, error = self._buffer.get()  # type: ignore[union-attr]
        if error is not None:
            # The thread put its last item: the parent stands right after the failed call.
            self._stop_thread()
            self._state = None
            raise error
        self._state = state
        return element

    def get_state(self) -> dict[str, Any]:
        state = self._state
        if state is None:  # no thread: the parent is where the consumer is
            return self._parent.get_state()
        if type(state) is _StateError:
            raise state.error
        return snapshot(state)

    def set_state(self, state: dict[str, Any]) -> None:
        self._stop_thread()
        self._state = None
        self._parent.set_state(state)

    def _stop_thread(self) -> None:
        """Stop the thread, join it and drop what it buffered (the parent may then stand past
        the consumer: the caller sets its state, or it is closed)."""
        thread, buffer = self._thread, self._buffer
        if thread is None:
            return
        self._thread = self._buffer = None
        buffer.stop()  # type: ignore[union-attr]
        # Joining a daemon thread while the interpreter exits can hang (CPython #123940), and a
        # thread cannot join itself (the iterator collected by the thread's own garbage run).
        if not sys.is_finalizing() and threading.current_thread() is not thread:
            thread.join()

    def close(self) -> None:
        """Stop and join the thread, then close the parent (idempotent); ``get_state`` still
        gives the consumer's position."""
        if self._closed:
            return
        self._stop_thread()
        super().close()

    def __str__(self) -> str:
        return f"PrefetchThreadIterator(prefetch_buffer_size={self._buffer_size})"
