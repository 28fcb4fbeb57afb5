"""The epoch order: position ``k`` of epoch ``e`` -> address ``(shard, row)``, a pure function.

Nothing is materialized per row. Each epoch permutes the (small) shard list, then walks the
shards in that order; inside a shard the rows are cut into windows of ``window_size``
consecutive rows, visited in order (reads stay local), and the rows of each window are
permuted by a keyed bijection: a Feistel network over the next power of two, cycle-walked
back into the window. Every key is an explicit 64-bit hash of ``(seed, epoch, shard,
window)``, so the order is the same in every process, on every host, in every version that
keeps these constants: it never has to be saved.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, NamedTuple

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
# Domain tags, so that the seed, shard-order and window keys never coincide by construction.
_TAG_SEED = 0x243F6A8885A308D3
_TAG_SHARDS = 0x13198A2E03707344
_TAG_WINDOWS = 0xA4093822299F31D0
_FEISTEL_ROUNDS = 6
_ROUND_CONSTANTS = tuple(((i + 1) * _GOLDEN) & _MASK64 for i in range(_FEISTEL_ROUNDS))
_CACHED_EPOCHS = 4
# Windows up to this many Feistel bits are permuted through a table of the whole domain.
_TABLE_BITS = 20


def _mix(x: Any) -> Any:
    """The splitmix64 finalizer: a bijection on 64-bit words (Python int or uint64 array)."""
    x = x ^ (x >> 30)
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x = x ^ (x >> 27)
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _feistel(x: Any, bits: Any, key: Any) -> Any:
    """A keyed bijection on ``[0, 2**bits)``: an (un)balanced Feistel network.

    Works elementwise on Python ints or uint64 arrays (``bits`` and ``key`` broadcast). The
    halves are ``bits // 2`` (high) and ``bits - bits // 2`` (low) bits wide; each round maps
    ``(hi, lo)`` to ``(lo, hi ^ F(lo))``, which swaps the widths, so an even number of rounds
    ends with the original split.
    """
    hi_bits = bits >> 1
    lo_bits = bits - hi_bits
    hi_mask = (1 << hi_bits) - 1
    lo_mask = (1 << lo_bits) - 1
    hi, lo = x >> lo_bits, x & lo_mask
    for constant in _ROUND_CONSTANTS:
        hi, lo = lo, hi ^ (_mix(lo ^ key ^ constant) & hi_mask)
        hi_mask, lo_mask = lo_mask, hi_mask
    return (hi << lo_bits) | lo


def _feistel_table(bits: int, key: int) -> np.ndarray:
    """``_feistel(x, bits, key)`` for every ``x`` in ``[0, 2**bits)`` (intp, by ``x``)."""
    return _feistel_tables(bits, np.array([key], dtype=np.uint64))[0]


def _feistel_tables(bits: int, keys: np.ndarray) -> np.ndarray:
    """``_feistel(x, bits, key)`` for every ``x`` in ``[0, 2**bits)`` and every key of
    ``keys`` (uint64): intp, shaped ``(len(keys), 2**bits)``.

    A round's function only ever sees a half (at most ``2**lo_bits`` values), so every
    round's function is tabulated first; the rounds then run on the grid of all
    ``(key, hi, lo)`` as table look-ups, without 64-bit arithmetic per element.
    """
    hi_bits = bits >> 1
    lo_bits = bits - hi_bits
    count = len(keys)
    rounds = np.asarray(keys, dtype=np.uint64)[:, None] ^ np.array(
        _ROUND_CONSTANTS, dtype=np.uint64
    )
    # Round by round, each key's function one after the other: (round, key, half).
    functions = _mix(np.arange(1 << lo_bits, dtype=np.uint64) ^ rounds.T[:, :, None])
    # Round r's output is as wide as the half it is xor-ed into: hi, lo, hi, ...
    widths = [lo_bits if r % 2 else hi_bits for r in range(len(_ROUND_CONSTANTS))]
    functions &= np.array([(1 << width) - 1 for width in widths], dtype=np.uint64)[:, None, None]
    functions = functions.astype(np.intp)
    # The rounds write into three buffers instead of two new arrays a round. Round 1 on the
    # grid: hi varies down the rows, lo along them (lo is every value).
    grid = (count, 1 << hi_bits, 1 << lo_bits)
    hi = np.empty(grid, dtype=np.intp)
    hi[:] = np.arange(1 << lo_bits, dtype=np.intp)
    lo = np.bitwise_xor(functions[0][:, None, :], np.arange(1 << hi_bits, dtype=np.intp)[:, None])
    looked_up = np.empty(grid, dtype=np.intp)
    # Key k's function starts at k * 2**lo_bits of a round's flat table.
    starts = (np.arange(count, dtype=np.intp) << lo_bits)[:, None, None]
    at = np.empty(grid, dtype=np.intp) if count > 1 else None
    for function in functions[1:]:
        # Every index is below the table's length, so "wrap" never wraps; it only skips the
        # bounds check that "raise" makes, and the copy it makes with ``out``.
        function.take(lo if at is None else np.add(lo, starts, out=at), out=looked_up, mode="wrap")
        hi ^= looked_up
        hi, lo = lo, hi
    hi <<= lo_bits
    hi |= lo
    return hi.reshape(count, -1)


def _permute_window(length: int, key: int) -> np.ndarray:
    """``_permute_below`` of ``0 .. length - 1`` with one key (as int64): a whole window at
    once, walking the cycles through a table of the Feistel permutation (up to
    ``_TABLE_BITS`` bits)."""
    bits = (length - 1).bit_length()
    if bits > _TABLE_BITS:
        return _permute_below(
            np.arange(length, dtype=np.uint64),
            np.full(length, length, dtype=np.uint64),
            np.full(length, bits, dtype=np.uint64),
            key,
        ).astype(np.int64)
    table = _feistel_table(bits, key)
    # The walk reads the table only at points >= length, so it can write below in place.
    y = table[:length]
    outside = np.flatnonzero(y >= length)
    while outside.size:
        walked = table.take(y.take(outside))
        y[outside] = walked
        outside = outside[walked >= length]
    return y.astype(np.int64, copy=False)


def _permute_windows(length: int, keys: np.ndarray) -> np.ndarray:
    """``_permute_window(length, key)`` for every key of ``keys`` (uint64): int64, shaped
    ``(len(keys), length)``, the tables of all keys made and walked at once."""
    bits = (length - 1).bit_length()
    if bits > _TABLE_BITS:
        return np.stack([_permute_window(length, int(key)) for key in keys])
    tables = _feistel_tables(bits, keys)
    width = tables.shape[1]
    # Each key's table entries as indices into all the tables (entry & mask: the point).
    tables += (np.arange(len(keys), dtype=np.intp) * width)[:, None]
    flat = tables.ravel()
    mask = width - 1
    y = tables[:, :length].ravel()  # a copy: the tables stay whole while walking
    outside = np.flatnonzero(y & mask >= length)
    while outside.size:
        walked = flat.take(y.take(outside))
        y[outside] = walked
        outside = outside[walked & mask >= length]
    y &= mask
    return y.reshape(len(keys), length).astype(np.int64, copy=False)


def _permute_below(x: np.ndarray, length: np.ndarray, bits: np.ndarray, key: Any) -> np.ndarray:
    """Elementwise keyed bijection on ``[0, length)`` (uint64 arrays), by cycle-walking.

    ``bits`` is ``(length - 1).bit_length()``; ``key`` is a uint64 array or one Python int.
    Walking from a point inside the range along the Feistel cycle always comes back inside.
    """
    key = np.broadcast_to(np.asarray(key, dtype=np.uint64), x.shape)
    y = _feistel(x, bits, key)
    outside = np.flatnonzero(y >= length)
    while outside.size:
        walked = _feistel(y[outside], bits[outside], key[outside])
        y[outside] = walked
        outside = outside[walked >= length[outside]]
    return y


def _as_int(value: Any, name: str) -> int:
    """``value`` as a Python int; TypeError for bools and non-integers."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


class _Layout(NamedTuple):
    """One epoch's shard order, where each shard's rows start, and the epoch's window key."""

    order: np.ndarray  # slot -> shard index (int64, read-only)
    starts: np.ndarray  # slot -> first position (int64, one more than slots, ends at N)
    window_key: int


@dataclasses.dataclass(frozen=True)
class EpochOrder:
    """The order in which an epoch visits the rows of a sharded dataset.

    ``shard_sizes`` are the row counts of the shards, in source order (zeros allowed). With
    ``shuffle=False`` the order is the identity: shards in order, rows in order.
    """

    shard_sizes: tuple[int, ...]
    seed: int = 0
    window_size: int = 4096
    shuffle: bool = True
    _sizes: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _tail_bits: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _window: int = dataclasses.field(init=False, repr=False, compare=False)
    _total: int = dataclasses.field(init=False, repr=False, compare=False)
    _layouts: dict[int, _Layout] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = tuple(_as_int(s, f"shard_sizes[{i}]") for i, s in enumerate(self.shard_sizes))
        for i, size in enumerate(sizes):
            if size < 0:
                raise ValueError(f"shard_sizes[{i}] is {size}; row counts must be >= 0")
        if sum(sizes) >= 1 << 63:
            raise ValueError(f"{sum(sizes)} rows in all are too many (at most 2**63 - 1)")
        seed = _as_int(self.seed, "seed")
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        window_size = _as_int(self.window_size, "window_size")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not isinstance(self.shuffle, bool | np.bool_):
            raise TypeError(f"shuffle must be a bool, got {type(self.shuffle).__name__}")
        # A window longer than every shard orders exactly like one as long as the longest.
        window = min(window_size, max(sizes, default=1) or 1)
        # Each shard's last window (the only one that may be short) and its Feistel width.
        tails = [size - (size - 1) // window * window if size else 0 for size in sizes]
        fields = {
            "shard_sizes": sizes,
            "seed": seed,
            "window_size": window_size,
            "shuffle": bool(self.shuffle),
            "_sizes": np.array(sizes, dtype=np.int64),
            "_tail_bits": np.array([(t - 1).bit_length() for t in tails], dtype=np.uint64),
            "_window": window,
            "_total": sum(sizes),
            "_layouts": {},
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        """Rows per epoch."""
        return self._total

    def shard_order(self, epoch: int) -> np.ndarray:
        """The shard indices in the order epoch ``epoch`` visits them (read-only int64 array)."""
        return self._layout(epoch).order

    @property
    def window_length(self) -> int:
        """The rows of a full window: ``window_size``, or the longest shard's when shorter."""
        return self._window

    def address(self, epoch: int, position: int) -> tuple[int, int]:
        """The ``(shard, row)`` at ``position`` of epoch ``epoch``."""
        shard, first = self.shard_at(epoch, position)
        local = operator.index(position) - first
        if not self.shuffle:
            return shard, local
        window, offset = divmod(local, self._window)
        start = window * self._window
        length = min(self._window, self.shard_sizes[shard] - start)
        bits = (length - 1).bit_length()
        key = self._window_key(epoch, shard, window)
        offset = _feistel(offset, bits, key)
        while offset >= length:
            offset = _feistel(offset, bits, key)
        return shard, start + offset

    def shard_at(self, epoch: int, position: int) -> tuple[int, int]:
        """The shard that ``position`` of epoch ``epoch`` falls in, and the position of that
        shard's first row in the epoch (its rows follow, window by window)."""
        layout = self._layout(epoch)
        position = _as_int(position, "position")
        self._check_range(position, position)
        slot = int(np.searchsorted(layout.starts, position, side="right")) - 1
        return int(layout.order[slot]), int(layout.starts[slot])

    def window_rows(self, epoch: int, shard: int, window: int) -> np.ndarray:
        """The rows of window ``window`` of ``shard`` (its rows from ``window * window_length``
        on) in the order epoch ``epoch`` visits them: ``addresses`` of the window's positions,
        computed for the whole window at once (int64)."""
        shard, window = _as_int(shard, "shard"), _as_int(window, "window")
        if not 0 <= shard < len(self.shard_sizes):
            raise IndexError(f"shard {shard} is out of range for {len(self.shard_sizes)} shards")
        start = window * self._window
        if not 0 <= start < self.shard_sizes[shard]:
            raise IndexError(f"window {window} is out of range for shard {shard}")
        length = min(self._window, self.shard_sizes[shard] - start)
        if not self.shuffle:
            return np.arange(start, start + length, dtype=np.int64)
        rows = _permute_window(length, self._window_key(epoch, shard, window))
        rows += start
        return rows

    def _window_key(self, epoch: int, shard: int, window: int) -> int:
        """The Feistel key of one window (``_shuffle_rows`` computes the same, vectorised)."""
        return _mix(_mix(self._layout(epoch).window_key ^ shard) ^ window)

    def addresses(self, epoch: int, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """The addresses of an array of positions: ``(shards, rows)``, int64, shaped alike."""
        layout = self._layout(epoch)
        positions = np.asarray(positions)
        if positions.size == 0:
            empty = np.zeros(positions.shape, dtype=np.int64)
            return empty, empty.copy()
        if positions.dtype.kind not in "iu":
            raise TypeError(f"positions must be integers, got dtype {positions.dtype}")
        self._check_range(int(positions.min()), int(positions.max()))
        flat = positions.astype(np.int64).ravel()
        slots = np.searchsorted(layout.starts, flat, side="right") - 1
        shards = layout.order[slots]
        rows = flat - layout.starts[slots]
        if self.shuffle:
            rows = self._shuffle_rows(layout.window_key, shards, rows)
        return shards.reshape(positions.shape), rows.reshape(positions.shape)

    def locate(self, global_position: int) -> tuple[int, int]:
        """``(epoch, position)`` of a position counted from the start of epoch 0."""
        global_position = _as_int(global_position, "global_position")
        total = self._total
        if total == 0:
            raise ValueError("the dataset has no rows, so no position can be located")
        if global_position < 0:
            raise IndexError(f"global position {global_position} is negative")
        return divmod(global_position, total)

    def _check_range(self, lowest: int, highest: int) -> None:
        """IndexError unless ``lowest`` and ``highest`` are positions of an epoch."""
        total = self._total
        for position in (lowest, highest):
            if not 0 <= position < total:
                raise IndexError(
                    f"position {position} is out of range for an epoch of {total} rows"
                )

    def _layout(self, epoch: int) -> _Layout:
        """The shard order of ``epoch`` and where each shard starts (cached for a few epochs)."""
        epoch = _as_int(epoch, "epoch")
        if not 0 <= epoch < 1 << 63:
            raise ValueError(f"epoch must be in [0, 2**63), got {epoch}")
        layout = self._layouts.get(epoch)
        if layout is not None:
            return layout
        num_shards = len(self.shard_sizes)
        order = np.arange(num_shards, dtype=np.int64)
        window_key = 0
        if self.shuffle:
            epoch_key = _mix(_mix(self.seed ^ _TAG_SEED) ^ epoch)
            window_key = _mix(epoch_key ^ _TAG_WINDOWS)
            bits = (num_shards - 1).bit_length() if num_shards else 0
            order = _permute_below(
                order.astype(np.uint64),
                np.full(num_shards, num_shards, dtype=np.uint64),
                np.full(num_shards, bits, dtype=np.uint64),
                _mix(epoch_key ^ _TAG_SHARDS),
            ).astype(np.int64)
        starts = np.zeros(num_shards + 1, dtype=np.int64)
        np.cumsum(self._sizes[order], out=starts[1:])
        order.flags.writeable = False
        starts.flags.writeable = False
        layout = _Layout(order, starts, window_key)
        # Copy on write: readers in other threads never see a dict being changed.
        kept = list(self._layouts.items())[1 - _CACHED_EPOCHS :]
        object.__setattr__(self, "_layouts", {**dict(kept), epoch: layout})
        return layout

    def _shuffle_rows(self, window_key: int, shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Permute shard-local ``rows`` inside their windows (vectorized ``address``)."""
        window = self._window
        windows = rows // window
        starts = windows * window
        lengths = np.minimum(window, self._sizes[shards] - starts).astype(np.uint64)
        bits = np.where(lengths == window, (window - 1).bit_length(), self._tail_bits[shards])
        keys = _mix(_mix(window_key ^ shards.astype(np.uint64)) ^ windows.astype(np.uint64))
        offsets = (rows - starts).astype(np.uint64)
        return starts + _permute_below(offsets, lengths, bits.astype(np.uint64), keys).astype(
            np.int64
        )
