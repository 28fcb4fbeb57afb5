"""Several hosts: who this host is, one shared file listing, and global arrays from host batches.

Every host of a slice runs the same program. Hosts split the **global order** of samples, not
the file list: global batch ``g`` covers positions ``[g*B, (g+1)*B)`` and host ``h`` of ``H``
serves its contiguous ``B/H`` of them, so every host runs the same number of steps and a
checkpoint names a global position that any host count can resume from.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from easydata_grain.io.errors import HostMismatchError
from easydata_grain.sources.metadata_sharing import set_default_sharing


@dataclasses.dataclass(frozen=True)
class Hosts:
    """This host's index and the number of hosts; from JAX unless given."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Hosts.{name} must be an int, got {value!r}")
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"host index {self.index} is not in [0, {self.count})")

    @classmethod
    def detect(cls, index: int | None = None, count: int | None = None) -> Hosts:
        """``jax.process_index()`` / ``jax.process_count()`` under ``jax.distributed``, else one host.

        The arguments override (for use without JAX).

        The environment variables ``EASYDATA_HOST_INDEX`` / ``EASYDATA_HOST_COUNT`` override too.
        """
        env_index, env_count = (
            os.environ.get("EASYDATA_HOST_INDEX"),
            os.environ.get("EASYDATA_HOST_COUNT"),
        )
        if index is None and env_index is not None:
            index = int(env_index)
        if count is None and env_count is not None:
            count = int(env_count)
        if (index is None or count is None) and jax_multihost():
            import jax

            index = jax.process_index() if index is None else index
            count = jax.process_count() if count is None else count
        return cls(0 if index is None else index, 1 if count is None else count)

    def split(self, global_batch_size: int) -> int:
        """This host's share of a global batch; the global batch must divide evenly."""
        if global_batch_size % self.count:
            raise HostMismatchError(
                f"The global batch size {global_batch_size} is not divisible by the {self.count} "
                "hosts, so hosts would run unequal batches.",
                hint=f"Use a multiple of {self.count} (e.g. {-(-global_batch_size // self.count) * self.count}).",
            )
        return global_batch_size // self.count


def jax_multihost() -> bool:
    """Whether ``jax.distributed`` is initialized with several processes.

    Checked without touching JAX's backends, so a source may be built before
    ``jax.distributed.initialize()`` is called.
    """
    try:
        from jax._src import distributed as jax_distributed
    except ImportError:
        return False
    state = jax_distributed.global_state
    return state.client is not None and (state.num_processes or 1) > 1


def broadcast_json(value: Any, *, is_source: bool) -> Any:
    """Send a JSON-serializable value from process 0 to every process (JAX multihost utils)."""
    from jax.experimental import multihost_utils

    payload = (
        np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
        if is_source
        else np.zeros(0, np.uint8)
    )
    size = int(
        multihost_utils.broadcast_one_to_all(np.array(len(payload), np.int64), is_source=is_source)
    )
    buffer = np.zeros(size, np.uint8)
    if is_source:
        buffer[:] = payload
    received = multihost_utils.broadcast_one_to_all(buffer, is_source=is_source)
    return json.loads(np.asarray(received, dtype=np.uint8).tobytes().decode())


def agree(value: str, what: str) -> None:
    """Check that every host has the same ``value`` (e.g. a digest); raise on every host if not."""
    from jax.experimental import multihost_utils

    code = np.frombuffer(bytes.fromhex(value[:16].ljust(16, "0")), dtype=np.int64)
    codes = np.asarray(multihost_utils.process_allgather(code)).reshape(-1)
    if len(set(codes.tolist())) > 1:
        disagreeing = [i for i, c in enumerate(codes.tolist()) if c != codes[0]]
        raise HostMismatchError(
            f"Hosts disagree on {what}: hosts {disagreeing} differ from host 0.",
            hint="Every host must build the same pipeline over the same data.",
        )


def any_host(value: bool) -> bool:
    """Whether ``value`` is True on any host (one small all-gather; the value itself on one
    host)."""
    if not jax_multihost():
        return value
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(value)], dtype=np.int32))
    return bool(np.asarray(flags).any())


def shared(compute: Callable[[], Any], *, what: str, key: str) -> Any:
    """``compute()`` on process 0 only, its JSON result sent to all; an error is raised everywhere.

    ``key`` describes the request (e.g. a digest of the paths and options): hosts whose keys
    differ are building different things, and every host raises ``HostMismatchError``.
    """
    if not jax_multihost():
        return compute()
    import jax

    agree(key, what)
    is_source = jax.process_index() == 0
    message: dict[str, Any]
    if is_source:
        try:
            message = {"ok": True, "value": compute()}
        except Exception as exc:  # sent to every host, then raised on every host
            message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        message = {}
    message = broadcast_json(message, is_source=is_source)
    if not message["ok"]:
        raise HostMismatchError(f"Host 0 failed while computing {what}: {message['error']}")
    return message["value"]


class SliceMetadata:
    """A ``MetadataSharing`` for a slice: under ``jax.distributed`` with several processes host 0
    lists and reads the metadata and sends it to every host (a failure is raised on every host);
    otherwise this process computes it."""

    def share(self, compute: Callable[[], Any], *, what: str, key: str) -> Any:
        """``compute()`` on host 0 of the slice, its result on every host."""
        return shared(compute, what=what, key=key)

    def __repr__(self) -> str:
        return "SliceMetadata()"


set_default_sharing(SliceMetadata())


def make_global_batch(
    batch: dict[str, Any], mesh: Any, axis: str | tuple[str, ...] = "data"
) -> dict[str, Any]:
    """This host's batch -> global ``jax.Array``s sharded over ``axis`` of ``mesh``.

    Uses ``jax.make_array_from_process_local_data``: each host passes its own rows, and the
    global array's first dimension is the global batch. Text fields (lists of str) stay local.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    def to_global(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: to_global(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            spec = PartitionSpec(axis, *([None] * (value.ndim - 1)))
            return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), value)
        return value

    return to_global(batch)
