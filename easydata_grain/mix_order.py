"""The mixture order: global position ``p`` -> ``(component, that component's position)``, a
pure function, like the epoch order (``order.py``).

Positions are cut into blocks of ``block_size``. The weights of a block are the schedule's at
the training step of its first position (``position // global_batch_size``, the global batch
index, so every host agrees). Within a run of blocks of equal weights, the first ``H`` rows
go to the components as Webster's (Sainte-Laguë) apportionment of ``H`` seats: seat ``j`` of
component ``c`` costs ``(j + 1/2) / w_c`` and the ``H`` cheapest seats are taken (ties by
component). That rule is house-monotone (one more row never takes one from another component)
and stays within one row of the target ``H * w_c`` for two components and close to it for
more, with no drift over a run. A block's rows are then placed in a keyed permutation of the
block, so components interleave randomly inside it and every block holds its share.

Nothing is stored: the counts before any block are computed from the weights (in O(1) for fixed
weights and ``step`` schedules, and once per block of an interpolated stretch, cached).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from easydata_grain.order import _mix, _permute_window

_TAG_MIX = 0x3C6EF372FE94F82B
_CACHED_BLOCKS = 8

ScheduleType = Literal["step", "linear", "cosine"]


def webster(seats: int, weights: np.ndarray) -> np.ndarray:
    """The ``seats`` cheapest seats (seat ``j`` of ``c`` costs ``(j + 0.5) / w_c``, ties by
    ``c``) counted per component; components of weight 0 get none."""
    positive = weights > 0
    counts = np.where(positive, np.floor(seats * weights + 0.5), 0).astype(np.int64)
    with np.errstate(divide="ignore", over="ignore"):
        inverse = np.where(positive, 1.0 / np.where(positive, weights, 1.0), np.inf)
    while True:
        total = int(counts.sum())
        next_cost = (counts + 0.5) * inverse
        last_cost = np.where(counts > 0, (counts - 0.5) * inverse, -np.inf)
        if total < seats:
            counts[int(np.argmin(next_cost))] += 1
        elif total > seats:
            counts[len(counts) - 1 - int(np.argmax(last_cost[::-1]))] -= 1
        else:
            high = len(counts) - 1 - int(np.argmax(last_cost[::-1]))
            low = int(np.argmin(next_cost))
            if (last_cost[high], high) <= (next_cost[low], low):
                return counts
            counts[high] -= 1  # a dearer seat taken over a cheaper one (rounding): swap
            counts[low] += 1


@dataclasses.dataclass(frozen=True)
class WeightSchedule:
    """Weights per component as a function of the training step.

    ``points`` are ``(step, weights)`` in increasing step order, the first at step 0. ``step``
    keeps each point's weights until the next point; ``linear`` and ``cosine`` interpolate
    between points; after the last point its weights hold. Weights are normalised to sum to 1.
    """

    points: tuple[tuple[int, tuple[float, ...]], ...]
    kind: ScheduleType = "step"

    def __post_init__(self) -> None:
        if self.kind not in ("step", "linear", "cosine"):
            raise ValueError(f"kind must be step, linear or cosine, got {self.kind!r}")
        if not self.points or self.points[0][0] != 0:
            raise ValueError("a weight schedule needs a first point at step 0")
        width = len(self.points[0][1])
        for i, (step, weights) in enumerate(self.points):
            if i and step <= self.points[i - 1][0]:
                raise ValueError(
                    f"schedule steps must increase: {step} after {self.points[i - 1][0]}"
                )
            if len(weights) != width:
                raise ValueError(f"schedule point {i} has {len(weights)} weights, point 0 {width}")
            if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
                raise ValueError(
                    f"schedule point {i}: weights must be finite, >= 0 and not all 0, "
                    f"got {list(weights)}"
                )

    @classmethod
    def fixed(cls, weights: Sequence[float]) -> WeightSchedule:
        """One set of weights for every step."""
        return cls(((0, tuple(float(w) for w in weights)),))

    @property
    def steps(self) -> list[int]:
        """The steps of the points."""
        return [step for step, _ in self.points]

    def at(self, step: int) -> np.ndarray:
        """The normalised weights at ``step``."""
        i = bisect.bisect_right(self.steps, step) - 1
        weights = np.asarray(self.points[i][1], dtype=np.float64)
        if self.kind != "step" and i + 1 < len(self.points):
            start, end = self.points[i][0], self.points[i + 1][0]
            t = (step - start) / (end - start)
            if self.kind == "cosine":
                t = (1 - math.cos(math.pi * t)) / 2
            weights = (1 - t) * weights + t * np.asarray(self.points[i + 1][1], dtype=np.float64)
        return weights / weights.sum()


@dataclasses.dataclass(frozen=True)
class _Run:
    """Blocks ``first ..`` of equal weights; ``base`` rows per component before them."""

    first: int
    weights: np.ndarray
    base: np.ndarray


class MixtureOrder:
    """Position -> ``(component, row of that component)`` (see the module docstring)."""

    def __init__(
        self,
        schedule: WeightSchedule,
        *,
        block_size: int,
        global_batch_size: int,
        seed: int,
    ):
        for name, value in (("block_size", block_size), ("global_batch_size", global_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.schedule = schedule
        self.block_size = block_size
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.num_components = len(schedule.points[0][1])
        self._runs: list[_Run] = [
            _Run(0, schedule.at(0), np.zeros(self.num_components, dtype=np.int64))
        ]
        # The first block after the schedule's last change: one run from there on.
        self._last_change = self._block_of_step(schedule.steps[-1])
        self._blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _block_of_step(self, step: int) -> int:
        """The first block whose first position is at ``step`` or later."""
        return -(-step * self.global_batch_size // self.block_size)

    def _weights_of_block(self, block: int) -> np.ndarray:
        return self.schedule.at(block * self.block_size // self.global_batch_size)

    def _next_run_start(self, block: int) -> int | None:
        """The block where the run after the one holding ``block`` starts (None: never)."""
        if block >= self._last_change:
            return None
        if self.schedule.kind == "step":
            starts = [self._block_of_step(s) for s in self.schedule.steps]
            return next((s for s in starts if s > block), None)
        return block + 1  # interpolated: every block has its own weights

    def _run(self, block: int) -> _Run:
        """The run holding ``block``, extending the cached runs as needed."""
        while True:
            last = self._runs[-1]
            start = self._next_run_start(last.first)
            if start is None or block < start:
                break
            if start == last.first:
                break
            counts = last.base + webster((start - last.first) * self.block_size, last.weights)
            self._runs.append(_Run(start, self._weights_of_block(start), counts))
        i = bisect.bisect_right([r.first for r in self._runs], block) - 1
        return self._runs[i]

    def counts_before_block(self, block: int) -> np.ndarray:
        """Rows each component got in positions ``[0, block * block_size)``."""
        run = self._run(block)
        return run.base + webster((block - run.first) * self.block_size, run.weights)

    def block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """``(components, rows)`` of the block's positions, in position order."""
        cached = self._blocks.get(block)
        if cached is not None:
            self._blocks.move_to_end(block)
            return cached
        run = self._run(block)
        seats = (block - run.first) * self.block_size
        before = webster(seats, run.weights)
        after = webster(seats + self.block_size, run.weights)
        labels = np.repeat(np.arange(self.num_components), after - before)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            costs = np.concatenate(
                [
                    (np.arange(before[c], after[c]) + 0.5) / run.weights[c]
                    for c in range(len(before))
                ]
            )
        labels = labels[np.lexsort((labels, costs))]
        key = _mix((self.seed * 0x9E3779B97F4A7C15 ^ _TAG_MIX ^ _mix(block + 1)) & ((1 << 64) - 1))
        placed = np.empty_like(labels)
        placed[_permute_window(self.block_size, key)] = labels
        rows = np.empty(self.block_size, dtype=np.int64)
        start = run.base + before
        for c in range(self.num_components):
            mine = np.flatnonzero(placed == c)
            rows[mine] = start[c] + np.arange(len(mine))
        result = (placed, rows)
        self._blocks[block] = result
        if len(self._blocks) > _CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return result

    def locate(self, position: int) -> tuple[int, int]:
        """The component and its row at ``position``."""
        block, offset = divmod(position, self.block_size)
        components, rows = self.block(block)
        return int(components[offset]), int(rows[offset])

    def locate_many(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``locate`` of many positions (a batch)."""
        positions = np.asarray(positions, dtype=np.int64)
        components = np.empty(len(positions), dtype=np.int64)
        rows = np.empty(len(positions), dtype=np.int64)
        blocks = positions // self.block_size
        for block in np.unique(blocks):
            where = np.flatnonzero(blocks == block)
            labels, numbers = self.block(int(block))
            offsets = positions[where] - block * self.block_size
            components[where] = labels[offsets]
            rows[where] = numbers[offsets]
        return components, rows

    def counts_before(self, position: int) -> np.ndarray:
        """Rows each component got in positions ``[0, position)`` (the realized mixture)."""
        block, offset = divmod(position, self.block_size)
        counts = self.counts_before_block(block)
        if offset:
            labels, _ = self.block(block)
            counts = counts + np.bincount(labels[:offset], minlength=self.num_components)
        return counts

    def ever_chosen(self, component: int) -> bool:
        """Whether the component gets rows past every change of the schedule."""
        return bool(self._run(self._last_change).weights[component] > 0)

    def position_of(self, component: int, row: int) -> int | None:
        """The position where ``component`` gets its row ``row`` (None: it never does)."""
        last = self._run(self._last_change)
        if (
            last.weights[component] == 0
            and self.counts_before_block(self._last_change)[component] <= row
        ):
            return None
        high = 1
        while self.counts_before_block(high)[component] <= row:
            high *= 2
        low = 0  # counts_before_block(low) <= row < counts_before_block(high)
        while high - low > 1:
            middle = (low + high) // 2
            if self.counts_before_block(middle)[component] <= row:
                low = middle
            else:
                high = middle
        labels, numbers = self.block(low)
        offset = int(np.flatnonzero((labels == component) & (numbers == row))[0])
        return low * self.block_size + offset


def schedule_from(
    names: Sequence[str],
    weights: Mapping[str, float] | Sequence[float] | None,
    points: Sequence[tuple[int, Mapping[str, float]]] | None = None,
    kind: ScheduleType = "step",
) -> WeightSchedule:
    """A ``WeightSchedule`` over ``names`` from weights by name (or in order), or from
    ``(step, weights by name)`` points; None and no points: equal weights."""

    def vector(given: Mapping[str, float] | Sequence[float], where: str) -> tuple[float, ...]:
        if isinstance(given, Mapping):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ValueError(
                    f"{where}: no component is named {unknown[0]!r} (names: {list(names)})"
                )
            missing = [n for n in names if n not in given]
            if missing:
                raise ValueError(
                    f"{where}: no weight for {missing}; give each a weight (0 leaves one out)"
                )
            return tuple(float(given[n]) for n in names)
        if len(given) != len(names):
            raise ValueError(f"{where}: {len(given)} weights for {len(names)} components")
        return tuple(float(w) for w in given)

    if points:
        if weights is not None:
            raise ValueError("give weights or a weight schedule, not both")
        return WeightSchedule(
            tuple((int(s), vector(w, f"weight_schedule[{i}]")) for i, (s, w) in enumerate(points)),
            kind,
        )
    if weights is None:
        return WeightSchedule.fixed([1.0] * len(names))
    return WeightSchedule.fixed(vector(weights, "weights"))
