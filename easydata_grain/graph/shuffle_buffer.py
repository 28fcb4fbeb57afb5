"""A seeded shuffle buffer whose state holds the buffer, so a resumed stream is identical."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from easydata_grain.graph.stream_source import Address, ShardedSourceIterator, read_rows_at
from easydata_grain.io.errors import NotResumableError


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


class ShuffleBufferIterDataset(grain.IterDataset):
    """The classic shuffle buffer, deterministic from ``seed``, with exact resume.

    It fills a buffer with ``buffer_size`` elements; each step then yields a uniformly random
    slot (PCG64 from ``seed``, an int or a sequence of ints such as ``(seed, epoch, host)``)
    and refills it with the next upstream element; at the end the rest drains in random order.

    The state holds the upstream state, the random generator's state and the buffer:
    - as **addresses** ``(shard, row)`` when the parent is directly a ``SourceIterDataset`` over a
      seekable ``ShardedSource``: restoring re-reads them in a few sequential runs;
    - as **values** (pickled, base64) otherwise: a ``datasets`` stream or another iterable, or a
      parent transformed after the source (``.map``, ``.filter``, ...), whose elements have no
      address. The state's ``buffer["bytes"]`` reports their size.

    ``get_state`` is cheap enough to call after every element (Grain's prefetch does): it
    re-encodes the buffer at most once per ``buffer_size`` elements and otherwise returns that
    snapshot plus the number of elements yielded since, which ``set_state`` replays.
    State: ``{"snapshot": {"buffer_size", "parent", "rng", "exhausted", "buffer"}, "steps": n}``.
    """

    def __init__(self, parent: grain.IterDataset, buffer_size: int, seed: int | Sequence[int]):
        if not isinstance(parent, grain.IterDataset):
            raise TypeError(
                f"parent must be a grain.IterDataset (use .to_iter_dataset()), got "
                f"{type(parent).__name__}"
            )
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
        super().__init__(parent)
        self._buffer_size = buffer_size
        self._seed = seed
        np.random.SeedSequence(seed)  # Checks the seed now rather than at the first iteration.

    def __iter__(self) -> ShuffleBufferIterator:
        return ShuffleBufferIterator(self._parent.__iter__(), self._buffer_size, self._seed)

    def __str__(self) -> str:
        return f"ShuffleBufferIterDataset(buffer_size={self._buffer_size})"


class ShuffleBufferIterator(grain.DatasetIterator):
    """The iterator of ``ShuffleBufferIterDataset``."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.DatasetIterator, buffer_size: int, seed: int | Sequence[int]):
        super().__init__(parent)
        self._size = buffer_size
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._addressed = isinstance(parent, ShardedSourceIterator) and parent.seekable
        self._buffer: list[Any] = []
        self._addresses: list[Address] = []
        self._exhausted = False
        self._snapshot: dict[str, Any] | None = None
        self._steps = 0

    def __next__(self) -> Any:
        element = self._advance()
        self._steps += 1
        return element

    def _advance(self) -> Any:
        """Fill the buffer, then take a random slot out of it (the last element moves there)."""
        parent = self._parent
        while not self._exhausted and len(self._buffer) < self._size:
            try:
                self._buffer.append(next(parent))
            except StopIteration:
                self._exhausted = True
                break
            if self._addressed:
                self._addresses.append(parent.last_address)  # type: ignore[attr-defined]
        if not self._buffer:
            raise StopIteration
        slot = int(self._rng.integers(len(self._buffer)))
        element = self._buffer[slot]
        self._buffer[slot] = self._buffer[-1]
        self._buffer.pop()
        if self._addressed:
            self._addresses[slot] = self._addresses[-1]
            self._addresses.pop()
        return element

    def get_state(self) -> dict[str, Any]:
        if self._snapshot is None or self._steps >= self._size:
            self._snapshot = {
                "buffer_size": self._size,
                "parent": self._parent.get_state(),
                "rng": self._rng.bit_generator.state,
                "exhausted": self._exhausted,
                "buffer": self._encode_buffer(),
            }
            self._steps = 0
        return {"snapshot": self._snapshot, "steps": self._steps}

    def set_state(self, state: dict[str, Any]) -> None:
        snapshot, steps = state["snapshot"], state["steps"]
        if snapshot["buffer_size"] != self._size:
            raise NotResumableError(
                f"The state was saved with buffer_size={snapshot['buffer_size']}, this pipeline "
                f"has {self._size}: the continuation would differ.",
                hint="Restore with the buffer size the state was saved with.",
            )
        self._parent.set_state(snapshot["parent"])
        self._rng.bit_generator.state = snapshot["rng"]
        self._exhausted = snapshot["exhausted"]
        self._decode_buffer(snapshot["buffer"])
        for _ in range(steps):
            self._advance()
        self._snapshot, self._steps = snapshot, steps

    def _encode_buffer(self) -> dict[str, Any]:
        if self._addressed:
            addresses = np.asarray(self._addresses, dtype="<i8").reshape(-1, 2)
            return {
                "kind": "addresses",
                "count": len(self._addresses),
                "addresses": _encode(addresses.tobytes()),
            }
        data = pickle.dumps(self._buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return {
            "kind": "values",
            "count": len(self._buffer),
            "bytes": len(data),
            "values": _encode(data),
        }

    def _decode_buffer(self, buffer: dict[str, Any]) -> None:
        kind = "addresses" if self._addressed else "values"
        if buffer["kind"] != kind:
            raise NotResumableError(
                f"The state holds the buffer as {buffer['kind']}, but this pipeline's upstream "
                f"keeps it as {kind}: it is another pipeline.",
                hint="Restore with the pipeline (source and transforms) the state was saved with.",
            )
        if self._addressed:
            flat = np.frombuffer(_decode(buffer["addresses"]), dtype="<i8").reshape(-1, 2)
            self._addresses = [(shard, row) for shard, row in flat.tolist()]
            source = self._parent.source  # type: ignore[attr-defined]
            self._buffer = read_rows_at(source, self._addresses)
        else:
            self._buffer = pickle.loads(_decode(buffer["values"]))

    def __str__(self) -> str:
        return f"ShuffleBufferIterator(buffer_size={self._size})"
