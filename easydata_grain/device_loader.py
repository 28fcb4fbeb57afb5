"""``DeviceLoader``: a loader's batches as global ``jax.Array``s, built ahead on a thread.

``LoadStageConfig(prefetch_to_device=True)`` gives one. A background thread takes each host
batch from the loader and turns it into global arrays sharded over the mesh's data axis
(``make_global_batch``), ``buffer_size`` steps ahead of the training loop, so the transfer
overlaps the step. Each batch travels with the loader's state taken right after it, so
``get_state()`` is the state after the last batch the caller received, exactly as without the
thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from easydata_grain.distributed import make_global_batch
from easydata_grain.io.errors import NotResumableError

_DONE = object()


def default_mesh() -> Any:
    """A mesh of every device along one ``data`` axis."""
    import jax
    import numpy as np

    return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


class DeviceLoader:
    """``loader``'s batches as global ``jax.Array``s on ``mesh`` (see the module docstring).

    It has the loader's API: iteration, ``get_state``/``set_state`` (so ``LoaderSave`` and
    ``LoaderRestore`` work on it), ``stats()``, ``describe()``, ``len()``, ``close()``.
    """

    def __init__(self, loader: Any, mesh: Any = None, axis: str = "data", buffer_size: int = 2):
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        self.loader = loader
        self.mesh = default_mesh() if mesh is None else mesh
        self.axis = axis
        self.buffer_size = buffer_size
        self._queue: queue.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._state: Any = None
        """The loader's state after the last batch returned (None: none returned yet)."""

    def _produce(self, out: queue.Queue[Any], stop: threading.Event) -> None:
        try:
            for batch in self.loader:
                if stop.is_set():
                    return
                try:
                    state = self.loader.get_state()
                except NotResumableError:
                    state = None
                out.put((make_global_batch(batch, self.mesh, self.axis), state))
            out.put((_DONE, None))
        except BaseException as error:  # handed to the consumer, in order
            out.put((error, None))

    def _start(self) -> queue.Queue[Any]:
        if self._queue is None:
            if self._state is None and self.loader.resumable:
                self._state = self.loader.get_state()
            self._stop = threading.Event()
            self._queue = queue.Queue(self.buffer_size)
            self._thread = threading.Thread(
                target=self._produce, args=(self._queue, self._stop), daemon=True
            )
            self._thread.start()
        return self._queue

    def start_prefetch(self) -> None:
        """Start building batches now (e.g. while the model's checkpoint is restored)."""
        self._start()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The global batches from where the last loop stopped."""
        return self

    def __next__(self) -> dict[str, Any]:
        batch, state = self._start().get()
        if batch is _DONE:
            self._join()
            raise StopIteration
        if isinstance(batch, BaseException):
            self._join()
            raise batch
        self._state = state
        return batch

    def _join(self) -> None:
        """Stop the thread and drop what it built ahead."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                assert self._queue is not None
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread = self._queue = None

    def get_state(self) -> dict[str, Any]:
        """The loader's state after the last batch returned (see ``AsyncDataLoader``)."""
        if self._state is None:
            return self.loader.get_state()
        return self._state

    def set_state(self, state: dict[str, Any] | str | bytes) -> None:
        """Continue from ``state``: batches built ahead are dropped."""
        self._join()
        self.loader.set_state(state)
        self._state = self.loader.get_state()

    def close(self) -> None:
        """Stop the thread and the loader's background work; iterating again continues."""
        state = self._state
        self._join()
        if state is not None:
            self.loader.set_state(state)
        self.loader.close()

    def stats(self) -> dict[str, Any]:
        """The loader's stats (rows and batches counted as the thread takes them)."""
        return self.loader.stats()

    def describe(self) -> str:
        """The loader's plan, and the device stage."""
        return (
            f"{self.loader.describe()}\n  device    global jax.Arrays over axis {self.axis!r} "
            f"of a mesh {dict(self.mesh.shape)}, built {self.buffer_size} step(s) ahead on a "
            "thread"
        )

    def fingerprint(self) -> dict[str, Any]:
        """The loader's fingerprint."""
        return self.loader.fingerprint()

    def __len__(self) -> int:
        """The loader's number of batches per pass."""
        return len(self.loader)

    @property
    def hosts(self) -> Any:
        """The loader's ``Hosts``."""
        return self.loader.hosts

    @property
    def resumable(self) -> bool:
        """Whether the loader's state can be saved."""
        return bool(self.loader.resumable)
