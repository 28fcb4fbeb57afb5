"""Shuffling a stream in windows: each run of ``window_rows`` elements is permuted, and the
state is the parent's state at the window's start plus how many of it were returned.

Used for packed rows (``Pack(shuffle_rows=...)``): rows are packed in order, so neighbours come
from neighbouring documents; shuffling them within windows mixes a batch's rows without
saving any row in the checkpoint (a shuffle buffer would save its rows). A restore re-reads
the window from its start (at most ``window_rows`` elements) and skips what was returned.
The permutation of window ``k`` is keyed by ``(seed, k)``: deterministic, and different in
every window.
"""

from __future__ import annotations

import copy
from typing import Any

import grain
import numpy as np

# The state keys this op owns.
WINDOW_START = "window_start"
WINDOW = "window"
RETURNED = "returned"


class WindowShuffleIterDataset(grain.IterDataset):
    """``parent``'s elements, each window of ``window_rows`` of them in a keyed random order."""

    def __init__(self, parent: grain.IterDataset, window_rows: int, seed: int):
        super().__init__(parent)
        if isinstance(window_rows, bool) or not isinstance(window_rows, int) or window_rows < 1:
            raise ValueError(f"window_rows must be an int >= 1, got {window_rows!r}")
        self.window_rows = window_rows
        self.shuffle_seed = int(seed)

    def __iter__(self) -> _WindowShuffleIterator:
        return _WindowShuffleIterator(self._parent.__iter__(), self.window_rows, self.shuffle_seed)

    def __str__(self) -> str:
        return f"WindowShuffleIterDataset(window_rows={self.window_rows})"


class _WindowShuffleIterator(grain.DatasetIterator):
    """Reads a window, returns it permuted; the state names the window, not its elements."""

    def __init__(self, parent: grain.DatasetIterator, window_rows: int, seed: int):
        super().__init__(parent)
        self._window_rows = window_rows
        self._seed = seed
        self._start = parent.get_state()
        """The parent's state before the current window."""
        self._window_index = 0
        self._returned = 0
        self._window: list[Any] | None = None
        """The current window in its shuffled order; None: not read yet."""

    def _read_window(self) -> list[Any]:
        elements = []
        for _ in range(self._window_rows):
            try:
                elements.append(next(self._parent))
            except StopIteration:
                break
        rng = np.random.default_rng([self._seed, self._window_index])
        return [elements[i] for i in rng.permutation(len(elements))]

    def __next__(self) -> Any:
        if self._window is None:
            self._window = self._read_window()
        if self._returned == len(self._window):
            if len(self._window) < self._window_rows:
                raise StopIteration  # the parent ended inside this window
            self._start = self._parent.get_state()
            self._window_index += 1
            self._returned = 0
            self._window = self._read_window()
            if not self._window:
                raise StopIteration
        element = self._window[self._returned]
        self._returned += 1
        return element

    def get_state(self) -> dict[str, Any]:
        """The parent's state at the window's start, the window's number and how many of its
        elements were returned."""
        return {
            WINDOW_START: copy.deepcopy(self._start),
            WINDOW: self._window_index,
            RETURNED: self._returned,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly from ``state``: the window is read again when the next element is
        asked for."""
        self._parent.set_state(state[WINDOW_START])
        self._start = copy.deepcopy(state[WINDOW_START])
        self._window_index = int(state[WINDOW])
        self._returned = int(state[RETURNED])
        self._window = None
