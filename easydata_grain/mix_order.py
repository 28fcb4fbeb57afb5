"""The mixture order: global position ``p`` -> ``(component, that component's row)``, a pure
function, like the epoch order (``order.py``).

**Targets.** Positions are cut into blocks of ``block_size``. Block ``b`` mixes by the weights
at its training step, ``b * block_size // global_batch_size`` (the global batch index of its
first position, so every host agrees). Component ``c``'s cumulative target ``T_c(s)``, the rows
it should have had in positions ``[0, s)``, grows by ``w_c(b)`` per position of block ``b``.

**Rounding.** Row ``j`` of component ``c`` is due at the position where ``T_c`` reaches
``j + 1/2``; the first ``S`` positions go to the ``S`` rows due first (ties by component). This
rounds the *cumulative* target, so what one block rounds away is carried into the next instead
of piling up: after any ``S`` positions each component's count is within a row or so of
``T_c(S)`` (exactly: every count is ``T_c(t)`` rounded, for one ``t`` near ``S``), however long
the run and whatever the schedule. With fixed weights this is Webster's (Sainte-Laguë)
apportionment of ``S`` seats. The rule is house-monotone (one more position never takes a row
from another component), so every block's counts are whole and non-negative; largest-remainder
rounding of the cumulative target is not (the Alabama paradox), which is why it is not used.

**Interleaving.** A block's rows are placed by a keyed permutation of the block (``order.py``'s
Feistel bijection), so components interleave randomly inside it, each component's rows in
increasing order; component ``c``'s row at position ``p`` is how many times ``c`` was chosen
before ``p``.

**Passes.** An order made by ``with_passes(L)`` also ends a pass every ``L`` positions (a
``restart`` mixture's finite pass). A block with pass ends ``k * L`` strictly inside it is split
there into windows; each window holds exactly the rows due first up to its end (the counts at
that many positions, whole and non-negative since the rule is house-monotone), placed by its own
keyed permutation. So pass ``k`` holds exactly the counts at ``k * L`` less those at
``(k - 1) * L`` of each component: with weights proportional to the components' rows, each row
once per epoch. The other blocks, and every order without passes, are unchanged.

**Cost.** Nothing is stored per row. Blocks are made a span at a time (``MixtureOrder.span``:
whole blocks, about ``_SPAN_POSITIONS`` positions), their permutations together
(``order._permute_windows``), so numpy's cost per call is paid per span, not per block; the
order is the same as made block by block. ``T`` is piecewise linear: with fixed weights or a
``step`` schedule a few pieces, so any position is located in O(1); with a ``linear`` or
``cosine`` schedule one piece per block until the last point, their prefix sums computed
vectorised, ``_CHUNK`` blocks at a time, on first need and kept (O(blocks) once, O(log) after).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from easydata_grain.mix_schedule import WeightSchedule
from easydata_grain.order import _GOLDEN, _MASK64, _mix, _permute_windows

_TAG_MIX = 0x3C6EF372FE94F82B
_TAG_WINDOW = 0x510E527FADE682D1
_CACHED_BLOCKS = 8
_CACHED_SPANS = 2
# A span is whole blocks, this many positions' worth (at least one block, at most _SPAN_BLOCKS).
_SPAN_POSITIONS = 1 << 13
_SPAN_BLOCKS = 64
_CACHED_CHUNKS = 4
_CHUNK = 1 << 12
# Rows due this far on (a weight of 1e-300, say) are never given: positions are int64.
_NEVER = float(1 << 62)


@dataclasses.dataclass(frozen=True)
class _Pieces:
    """Stretches of blocks of equal weights: piece ``i`` starts at block ``first[i]`` with
    weights ``weights[i]`` and cumulative targets ``before[i]`` (rows per component before
    its first position); the last piece ends at block ``stop`` (None: never)."""

    first: np.ndarray
    weights: np.ndarray
    before: np.ndarray
    stop: int | None


class CumulativeTarget:
    """``T_c(s)`` of the module docstring, and its inverse (when row ``j`` is due)."""

    def __init__(self, schedule: WeightSchedule, *, block_size: int, global_batch_size: int):
        self.schedule = schedule
        self.block_size = block_size
        self.global_batch_size = global_batch_size
        # Blocks from `tail` on have the last point's weights: one piece for ever.
        self.tail = self._block_of_step(schedule.last_change)
        step = self.tail * block_size // global_batch_size
        self._tail_weights = schedule.at_steps(np.asarray([step]))
        self._tail_list = self._tail_weights[0].tolist()
        if schedule.kind == "step" or len(schedule.points) == 1:
            starts = sorted({self._block_of_step(s) for s in schedule.steps} - {self.tail})
            self._chunk = max(1, self.tail)  # one chunk holds every piece before the tail
            self._starts = {0: np.asarray(starts, dtype=np.int64)}
        else:
            self._chunk = _CHUNK  # one piece per block
            self._starts = {}
        self._last = -(-self.tail // self._chunk)  # the tail's chunk
        # Cumulative targets at each chunk's first block (filled in order, on first need).
        self._bounds: tuple[np.ndarray, ...] = (np.zeros(schedule.num_components),)
        self._chunks: dict[int, _Pieces] = {}

    def _block_of_step(self, step: int) -> int:
        """The first block whose first position is at ``step`` or later."""
        return -(-step * self.global_batch_size // self.block_size)

    def _pieces(self, chunk: int) -> _Pieces:
        """The pieces of blocks ``[chunk * _chunk, ...)`` before the tail; ``chunk ==
        _last``: the tail."""
        cached = self._chunks.get(chunk)
        if cached is not None:
            return cached
        before = self._bound(chunk)
        if chunk == self._last:
            first = np.asarray([self.tail], dtype=np.int64)
            stop = None
            weights = self._tail_weights
        else:
            low = chunk * self._chunk
            stop = min(self.tail, low + self._chunk)
            first = self._starts.get(chunk)
            if first is None:
                first = np.arange(low, stop, dtype=np.int64)
            weights = self.schedule.at_steps(first * self.block_size // self.global_batch_size)
        befores = np.empty_like(weights)
        befores[0] = before
        if len(first) > 1:
            grown = np.diff(first)[:, None] * self.block_size * weights[:-1]
            befores[1:] = before + np.cumsum(grown, axis=0)
        pieces = _Pieces(first, weights, befores, stop)
        # Copy on write: readers in other threads never see a dict being changed.
        kept = list(self._chunks.items())[1 - _CACHED_CHUNKS :]
        self._chunks = {**dict(kept), chunk: pieces}
        return pieces

    def _bound(self, chunk: int) -> np.ndarray:
        """The cumulative targets at the first block of ``chunk`` (all chunks before it are
        summed once, in order, so every process sums them the same way)."""
        while len(bounds := self._bounds) <= chunk:
            pieces = self._pieces(len(bounds) - 1)
            grown = (pieces.stop - pieces.first[-1]) * self.block_size * pieces.weights[-1]
            # A new tuple: a thread extending it meanwhile never sees a half-made one.
            self._bounds = (*bounds, pieces.before[-1] + grown)
        return bounds[chunk]

    def _chunk_of_block(self, block: int) -> int:
        return self._last if block >= self.tail else block // self._chunk

    def at(self, position: int) -> np.ndarray:
        """``T(position)``: each component's target rows in positions ``[0, position)``."""
        pieces = self._pieces(self._chunk_of_block(position // self.block_size))
        i = int(np.searchsorted(pieces.first, position // self.block_size, side="right")) - 1
        return (
            pieces.before[i]
            + (position - int(pieces.first[i]) * self.block_size) * (pieces.weights[i])
        )

    def due(self, component: int, row: int) -> float:
        """The position where ``T_component`` reaches ``row + 1/2`` (inf: never, or past
        ``2**62``)."""
        if row < 0:
            return -math.inf
        target = row + 0.5
        last = self._last
        while len(self._bounds) <= last and self._bounds[-1][component] < target:
            self._bound(len(self._bounds))
        bounds = self._bounds
        if len(bounds) > last and bounds[last][component] < target:  # in the tail
            weight = self._tail_list[component]
            if weight == 0:
                return math.inf
            low, high, before = self.tail * self.block_size, math.inf, bounds[last][component]
        else:  # in the last chunk whose first block's target is below ``target``
            chunk = bisect.bisect_left(bounds, target, key=lambda b: b[component]) - 1
            pieces = self._pieces(chunk)
            i = int(np.searchsorted(pieces.before[:, component], target, side="left")) - 1
            weight = pieces.weights[i, component]
            before = pieces.before[i, component]
            low = int(pieces.first[i]) * self.block_size
            end = pieces.first[i + 1] if i + 1 < len(pieces.first) else pieces.stop
            high = float(end * self.block_size)
        due = min(high, max(low, low + (target - before) / weight))
        return math.inf if due >= _NEVER else due


class MixingBlock(NamedTuple):
    """One block, or a span of consecutive blocks, of the mixture order (arrays over its
    positions or components)."""

    components: np.ndarray
    """The component at each position."""
    rows: np.ndarray
    """The row of its component at each position."""
    before: np.ndarray
    """Rows each component got before the first position."""
    sizes: np.ndarray
    """Rows each component gets in these positions."""
    places: np.ndarray
    """The positions by component, then row: component ``c``'s rows ``before[c] ..`` take
    positions ``places[firsts[c]:firsts[c] + sizes[c]]`` (``firsts``: ``sizes``' running
    sum before ``c``)."""


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
        self.num_components = schedule.num_components
        self.target = CumulativeTarget(
            schedule, block_size=block_size, global_batch_size=global_batch_size
        )
        self.span_blocks = max(1, min(_SPAN_BLOCKS, _SPAN_POSITIONS // block_size))
        """Blocks per span (``span``)."""
        self.pass_length: int | None = None
        """Positions per pass (``with_passes``); None: no pass ends."""
        self._passes: dict[int, MixtureOrder] = {}
        self._counts: dict[int, np.ndarray] = {}
        self._blocks: dict[int, MixingBlock] = {}
        self._spans: dict[int, MixingBlock] = {}
        # The part of every block's key that does not depend on the block.
        self._key_base = np.uint64((seed * _GOLDEN ^ _TAG_MIX) & _MASK64)

    def with_passes(self, length: int) -> MixtureOrder:
        """This order with a pass ending every ``length`` positions (module docstring:
        **Passes**): made once per length and kept, sharing this order's targets."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"A pass's length must be an int >= 1, got {length!r}")
        if length == self.pass_length:
            return self
        found = self._passes.get(length)
        if found is None:
            found = copy.copy(self)
            found.pass_length = length
            found._passes, found._blocks, found._spans = {}, {}, {}
            # Copy on write: readers in other threads never see a dict being changed.
            self._passes = {**self._passes, length: found}
        return found

    def counts_before(self, position: int) -> np.ndarray:
        """Rows each component got in positions ``[0, position)`` (the realized mixture)."""
        block, offset = divmod(position, self.block_size)
        counts = self.counts_before_block(block)
        if offset:
            span, index = divmod(block, self.span_blocks)
            start = index * self.block_size
            components = self.span(span).components[start : start + offset]
            counts = counts + np.bincount(components, minlength=self.num_components)
        return counts

    def counts_before_block(self, block: int) -> np.ndarray:
        """Rows each component got in positions ``[0, block * block_size)``."""
        return self.counts_at(block * self.block_size)

    def counts_at(self, seats: int) -> np.ndarray:
        """The ``seats`` rows due first by component (see the module docstring), found from
        the rounded targets in a few steps: what positions ``[0, seats)`` hold at a block's
        start or at a pass end."""
        cached = self._counts.get(seats)
        if cached is not None:
            return cached
        due = self.target.due
        k = range(self.num_components)
        counts = [math.floor(t + 0.5) for t in self.target.at(seats).tolist()]
        nexts = [due(c, counts[c]) for c in k]
        lasts = [due(c, counts[c] - 1) for c in k]
        total = sum(counts)
        while True:
            low = min(k, key=lambda c: (nexts[c], c))  # the next row due
            high = max(k, key=lambda c: (lasts[c], c))  # the last row taken
            if total == seats and (lasts[high], high) <= (nexts[low], low):
                break
            if total <= seats:  # take the next row due (when equal: in place of `high`)
                counts[low] += 1
                lasts[low], nexts[low] = nexts[low], due(low, counts[low])
            if total >= seats:
                counts[high] -= 1
                nexts[high], lasts[high] = lasts[high], due(high, counts[high] - 1)
            total = sum(counts)
        counts = np.asarray(counts, dtype=np.int64)
        counts.flags.writeable = False
        kept = list(self._counts.items())[1 - 2 * _CACHED_BLOCKS :]
        self._counts = {**dict(kept), seats: counts}
        return counts

    def span(self, span: int) -> MixingBlock:
        """Blocks ``span * span_blocks ..`` (``span_blocks`` of them) as one ``MixingBlock``
        over their positions: what ``block`` gives block by block, with all the blocks'
        permutations made at once."""
        cached = self._spans.get(span)
        if cached is not None:
            return cached
        count, size = self.span_blocks, self.block_size
        first = span * count
        bounds = np.stack([self.counts_before_block(b) for b in range(first, first + count + 1)])
        ids = np.arange(first + 1, first + count + 1, dtype=np.uint64)
        keys = _mix(self._key_base ^ _mix(ids))
        places = _permute_windows(size, keys)
        places += np.arange(0, count * size, size)[:, None]
        components = np.empty(count * size, dtype=np.int64)
        # Block b's permutation puts its component c's rows where the sorted labels would be.
        components[places.ravel()] = np.repeat(
            np.tile(np.arange(self.num_components), count), np.diff(bounds, axis=0).ravel()
        )
        for index in self._blocks_with_pass_ends(first, count):
            start = index * size
            components[start : start + size] = self._split_block(first + index, keys[index])
        result = self._arrange(components, bounds[0], bounds[-1] - bounds[0])
        # Copy on write: readers in other threads never see a dict being changed.
        kept = list(self._spans.items())[1 - _CACHED_SPANS :]
        self._spans = {**dict(kept), span: result}
        return result

    def _blocks_with_pass_ends(self, first: int, count: int) -> list[int]:
        """The indices among blocks ``first .. first + count - 1`` of those with a pass end
        strictly inside them."""
        if self.pass_length is None:
            return []
        starts = np.arange(first, first + count, dtype=np.int64) * self.block_size
        ends = (starts // self.pass_length + 1) * self.pass_length  # the first after each start
        return np.flatnonzero(ends < starts + self.block_size).tolist()

    def _split_block(self, block: int, key: np.uint64) -> np.ndarray:
        """The components of a block with pass ends inside it (block key ``key``): a window
        per pass end, each holding the rows due first up to its end, each permuted by its
        own key (module docstring: **Passes**)."""
        size, length = self.block_size, self.pass_length
        assert length is not None
        start = block * size
        edges = np.asarray([0, *range(length - start % length, size, length), size], dtype=np.int64)
        counts = np.stack([self.counts_at(start + int(e)) for e in edges])
        windows = np.diff(edges)
        ids = np.arange(1, len(windows) + 1, dtype=np.uint64)
        keys = _mix(key ^ _mix(ids ^ np.uint64(_TAG_WINDOW)))
        places = np.empty(size, dtype=np.int64)
        for width in np.unique(windows).tolist():  # windows of one width permuted together
            same = np.flatnonzero(windows == width)
            places_of = _permute_windows(width, keys[same]) + edges[same][:, None]
            places[(edges[same][:, None] + np.arange(width)).ravel()] = places_of.ravel()
        components = np.empty(size, dtype=np.int64)
        components[places] = np.repeat(
            np.tile(np.arange(self.num_components), len(windows)),
            np.diff(counts, axis=0).ravel(),
        )
        return components

    def block(self, block: int) -> MixingBlock:
        """Block ``block``: which component and row each of its positions takes."""
        cached = self._blocks.get(block)
        if cached is not None:
            return cached
        span, index = divmod(block, self.span_blocks)
        size = self.block_size
        components = self.span(span).components[index * size : (index + 1) * size]
        before = self.counts_before_block(block)
        result = self._arrange(components, before, self.counts_before_block(block + 1) - before)
        kept = list(self._blocks.items())[1 - _CACHED_BLOCKS :]
        self._blocks = {**dict(kept), block: result}
        return result

    def _arrange(
        self, components: np.ndarray, before: np.ndarray, sizes: np.ndarray
    ) -> MixingBlock:
        """The ``MixingBlock`` of consecutive positions with these ``components``, component
        ``c`` having had ``before[c]`` rows before them and ``sizes[c]`` among them."""
        # A stable sort of small integers (a radix sort): each component's places in order.
        places = np.argsort(
            components.astype(np.int16 if self.num_components < 1 << 15 else np.int64),
            kind="stable",
        )
        # Each component's places in position order get its rows before[c], before[c] + 1, ...
        rows = np.empty(len(components), dtype=np.int64)
        firsts = np.cumsum(sizes) - sizes
        rows[places] = np.arange(len(components)) + np.repeat(before - firsts, sizes)
        for array in (components, rows, before, sizes, places):
            array.flags.writeable = False
        return MixingBlock(components, rows, before, sizes, places)

    def locate(self, position: int) -> tuple[int, int]:
        """The component and its row at ``position``."""
        span, offset = divmod(position, self.span_blocks * self.block_size)
        found = self.span(span)
        return int(found.components[offset]), int(found.rows[offset])

    def locate_many(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``locate`` of many positions (a batch)."""
        positions = np.asarray(positions, dtype=np.int64)
        span_size = self.span_blocks * self.block_size
        spans = positions // span_size
        offsets = positions - spans * span_size
        low, high = int(spans.min(initial=0)), int(spans.max(initial=0))
        if low == high:  # a batch inside one span
            found = self.span(low)
            return found.components[offsets], found.rows[offsets]
        components = np.empty(len(positions), dtype=np.int64)
        rows = np.empty(len(positions), dtype=np.int64)
        for span in np.unique(spans).tolist():
            where = np.flatnonzero(spans == span)
            found = self.span(span)
            components[where] = found.components[offsets[where]]
            rows[where] = found.rows[offsets[where]]
        return components, rows

    def position_of(self, component: int, row: int) -> int | None:
        """The position where ``component`` gets its row ``row`` (None: it never does)."""
        due = self.target.due(component, row)
        if math.isinf(due):
            return None

        def taken(block: int) -> bool:  # whether the row was given before ``block``
            return int(self.counts_before_block(block)[component]) > row

        # The row is given within a few rows of where it is due: search around there.
        guess = int(due) // self.block_size
        low, high = max(0, guess - 1), guess + 2
        while low and taken(low):
            low = max(0, 2 * low - guess - 1)
        while not taken(high):
            high = 2 * high - guess
        low = bisect.bisect_left(range(low, high), True, key=taken) + low - 1
        found = self.block(low)
        offset = int(np.flatnonzero((found.components == component) & (found.rows == row))[0])
        return low * self.block_size + offset
